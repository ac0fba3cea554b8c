"""Real ``dialgraph serve`` processes on 127.0.0.1, for tests and benches that need instances
to crash or to share only a database.

``ServerProcess`` runs ``python -m dialgraph.server.cli serve --port P`` with a given
environment, its output in a log file; ``kill()`` is SIGKILL (a crash), ``aclose()`` a clean
stop. ``server_env`` is an inherited environment stripped of any dialgraph configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

_CONFIG_PREFIXES = ("DIALGRAPH_", "DATABASE_URL", "TWILIO_")
_PROVIDER_KEYS = ("DEEPGRAM_API_KEY", "DEEPGRAM_URL", "ELEVENLABS_API_KEY", "ELEVENLABS_URL", "OPENAI_API_KEY")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(base: Mapping[str, str], **values: str) -> dict[str, str]:
    """``base`` without any dialgraph configuration or provider key, plus ``values``."""
    env = {k: v for k, v in base.items() if not k.startswith(_CONFIG_PREFIXES) and k not in _PROVIDER_KEYS}
    env.update(values)
    return env


class ServerProcess:
    """One ``dialgraph serve`` process on 127.0.0.1; it runs in ``log_dir``."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env)
        self.log_dir = log_dir
        self.log_path = log_dir / f"server-{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *, ready_timeout_s: float = 120.0) -> None:
        """Start the process and wait until ``/readyz`` answers 200."""
        log = self.log_path.open("wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dialgraph.server.cli", "serve", "--port", str(self.port),
                cwd=str(self.log_dir), env=self.env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()
        async with httpx.AsyncClient(base_url=self.url, trust_env=False) as http, asyncio.timeout(ready_timeout_s):
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"server {self.name} exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def kill(self) -> None:
        """SIGKILL: the process dies mid-whatever, nothing cleaned up."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def aclose(self) -> None:
        """SIGTERM and wait (SIGKILL after 15 s)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await self.proc.wait()
        except TimeoutError:
            await self.kill()
