"""`dialgraph demo`: the embedded default holding a real spoken call on this machine.

Starts the real server (a separate process, embedded defaults: SQLite, offline speech,
offline model) on a free local port, runs the shipped scheduling scenario through the
phone simulator over Twilio's protocol, prints what the simulator prints, and stops the
server. Exit status is the simulator's: 1 when an expectation of the scenario failed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dialgraph.server.core.settings import Settings

SCENARIO = Path(__file__).resolve().parents[1] / "telephony" / "simulator" / "scenarios" / "scheduling_demo.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s")


def run_demo(settings: Settings, *, out_dir: Path, scenario: Path = SCENARIO) -> int:
    """Run the demo call; returns the process exit status."""
    data_dir = out_dir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DIALGRAPH_ENV": "dev",
        "DIALGRAPH_DATA_DIR": str(data_dir),
        "DIALGRAPH_PUBLIC_URL": url,
        "DIALGRAPH_MODEL": "offline",
        "DIALGRAPH_ASR": "offline",
        "DIALGRAPH_TTS": "offline",
    }
    env.pop("DATABASE_URL", None)
    env.pop("DIALGRAPH_CONFIG", None)
    log_path = out_dir / "server.log"
    print(f"dialgraph demo: starting the server on {url} (log: {log_path})", flush=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dialgraph.server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(url, proc, timeout_s=180)
            from dialgraph.telephony.simulator.cli import simulate_main

            return simulate_main(
                [
                    str(scenario),
                    "--url",
                    url,
                    "--auth-token",
                    "dev-auth-token",
                    "--admin-token",
                    "dev-admin-token",
                    "--database-url",
                    f"sqlite+aiosqlite:///{(data_dir / 'dialgraph.db').resolve()}",
                    "--out",
                    str(out_dir),
                ]
            )
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
