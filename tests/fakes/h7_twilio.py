"""Play Twilio against real ``dialgraph serve`` processes (tests/resume and bench/resume.py).

- ``ServerProcess``: ``python -m server.cli serve --port P`` with a given environment, its
  output in a log file; ``kill()`` is SIGKILL (a crash), ``aclose()`` a clean stop.
- ``TwilioLeg``: one ``<Connect><Stream>`` the way Twilio runs it: the handshake signed over
  the public ``wss://`` URL, ``connected`` + ``start`` with the TwiML's parameters, caller
  audio every 20 ms (silence unless the caller speaks), the agent's audio "played" in real
  time with each ``mark`` echoed once the audio before it has played, ``clear`` honoured.
- ``stream_parameters``: the ``<Stream>`` parameters of a TwiML answer.

Caller speech is the Deepgram fake's word code (``tests.fakes.deepgram_server.word_audio``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import signal
import socket
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FRAME = 160
SILENCE = b"\xff" * FRAME
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stream_parameters(twiml: str) -> dict[str, str]:
    """``<Parameter name value>`` of the ``<Connect><Stream>`` in ``twiml`` ({} if none)."""
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    if stream is None:
        return {}
    return {p.attrib["name"]: p.attrib.get("value", "") for p in stream.findall("Parameter")}


def server_env(base: Mapping[str, str], **values: str) -> dict[str, str]:
    """The inherited environment without any dialgraph configuration, plus ``values``."""
    env = {k: v for k, v in base.items() if not k.startswith(("DIALGRAPH_", "DATABASE_URL", "TWILIO_"))}
    for key in ("DEEPGRAM_API_KEY", "DEEPGRAM_URL", "ELEVENLABS_API_KEY", "ELEVENLABS_URL", "OPENAI_API_KEY"):
        env.pop(key, None)
    env.update(values)
    env["PYTHONPATH"] = str(ROOT)
    return env


class ServerProcess:
    """One ``dialgraph serve`` process on 127.0.0.1."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env)
        self.log_path = log_dir / f"server-{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *, ready_timeout_s: float = 120.0) -> None:
        log = self.log_path.open("wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dialgraph.server.cli", "serve", "--port", str(self.port),
                cwd=str(ROOT), env=self.env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()
        async with httpx.AsyncClient(base_url=self.url) as http, asyncio.timeout(ready_timeout_s):
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
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await self.proc.wait()
        except TimeoutError:
            await self.kill()


class TwilioLeg:
    """One media stream of a call, Twilio's side. ``async with TwilioLeg(...) as leg``."""

    def __init__(
        self,
        server_url: str,
        *,
        public_url: str,
        auth_token: str,
        call_sid: str,
        parameters: Mapping[str, str],
        account_sid: str = "AC" + "1" * 32,
    ) -> None:
        self.ws_url = server_url.replace("http://", "ws://", 1) + "/twilio/media"
        public_ws = public_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        self.signature = RequestValidator(auth_token).compute_signature(public_ws + "/twilio/media", {})
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.parameters = dict(parameters)
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.ws: ClientConnection | None = None
        self.audio = bytearray()  # every agent audio byte received, in order
        self.first_audio_at: float | None = None  # time.perf_counter() of the first media frame
        self.last_audio_at = 0.0
        self.marks_echoed = 0
        self.clears = 0
        self.closed = asyncio.Event()
        self._caller = bytearray()
        self._play_end = 0.0
        self._marks: collections.deque[tuple[float, str]] = collections.deque()
        self._mark_added = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._seq = 0
        self._chunk = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> TwilioLeg:
        self.ws = await connect(self.ws_url, additional_headers={"X-Twilio-Signature": self.signature})
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "start": {
                    "streamSid": self.stream_sid,
                    "accountSid": self.account_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
        self._tasks = [
            asyncio.create_task(self._receive(), name="twilio-leg-receive"),
            asyncio.create_task(self._send_audio(), name="twilio-leg-audio"),
            asyncio.create_task(self._echo_marks(), name="twilio-leg-marks"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()
        self.closed.set()

    async def drop(self) -> None:
        """The network fails: the TCP connection goes away without a close frame."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ws is not None:
            self.ws.transport.abort()
        self.closed.set()

    # --- the caller --------------------------------------------------------------------------
    def say(self, audio: bytes) -> None:
        """Queue caller audio (sent in 20 ms frames after what is already queued)."""
        self._caller += audio

    async def press(self, digit: str) -> None:
        """The caller presses a key (Twilio sends a ``dtmf`` message)."""
        await self._send(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next_seq(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def turn(self, audio: bytes = b"", *, digit: str = "") -> bytes:
        """The caller speaks (or presses ``digit``); returns the agent's whole answer once played."""
        before = len(self.audio)
        if digit:
            await self.press(digit)
        self.say(audio)
        await self.until_audio(before + 1)
        await self.until_quiet()
        return bytes(self.audio[before:])

    async def until_quiet(self, quiet_s: float = 0.6, timeout_s: float = 60.0) -> None:
        """Wait until the caller has finished speaking, the agent's audio has played, every
        mark came back, and no agent audio arrived for ``quiet_s``."""
        async with asyncio.timeout(timeout_s):
            while True:
                now = time.perf_counter()
                idle = (
                    not self._caller
                    and not self._marks
                    and now >= self._play_end
                    and now - self.last_audio_at >= quiet_s
                )
                if idle or self.closed.is_set():
                    return
                await asyncio.sleep(0.05)

    async def until_audio(self, nbytes: int = 1, timeout_s: float = 60.0) -> None:
        """Wait until at least ``nbytes`` of agent audio have arrived on this leg."""
        async with asyncio.timeout(timeout_s):
            while len(self.audio) < nbytes:
                if self.closed.is_set():
                    raise ConnectionError("the stream closed before the agent's audio arrived")
                await asyncio.sleep(0.01)

    # --- wire --------------------------------------------------------------------------------
    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        async with self._send_lock:
            await self.ws.send(json.dumps(message))

    async def _send_audio(self) -> None:
        start = time.perf_counter()
        while True:
            frame = bytes(self._caller[:FRAME]) if self._caller else SILENCE
            del self._caller[:FRAME]
            frame = frame.ljust(FRAME, b"\xff")
            self._chunk += 1
            media = {"track": "inbound", "chunk": str(self._chunk), "timestamp": str((self._chunk - 1) * 20)}
            media["payload"] = base64.b64encode(frame).decode()
            await self._send(
                {"event": "media", "sequenceNumber": self._next_seq(), "streamSid": self.stream_sid, "media": media}
            )
            await asyncio.sleep(max(0.0, start + self._chunk * 0.02 - time.perf_counter()))

    async def _receive(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg.get("streamSid") != self.stream_sid:
                    raise AssertionError(f"message for another stream: {msg}")
                now = time.perf_counter()
                event = msg["event"]
                if event == "media":
                    audio = base64.b64decode(msg["media"]["payload"])
                    if self.first_audio_at is None:
                        self.first_audio_at = now
                    self.audio += audio
                    self.last_audio_at = now
                    self._play_end = max(self._play_end, now) + len(audio) / 8000
                elif event == "mark":
                    self._marks.append((max(self._play_end, now), msg["mark"]["name"]))
                    self._mark_added.set()
                elif event == "clear":
                    self.clears += 1
                    self._play_end = now
                    pending = [name for _, name in self._marks]
                    self._marks.clear()
                    for name in pending:  # a clear returns every pending mark at once
                        await self._echo(name)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def _echo_marks(self) -> None:
        while True:
            if not self._marks:
                self._mark_added.clear()
                await self._mark_added.wait()
                continue
            due, name = self._marks[0]
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(min(delay, 0.02))
                continue
            self._marks.popleft()
            await self._echo(name)

    async def _echo(self, name: str) -> None:
        self.marks_echoed += 1
        with contextlib.suppress(ConnectionClosed):
            await self._send(
                {
                    "event": "mark",
                    "sequenceNumber": self._next_seq(),
                    "streamSid": self.stream_sid,
                    "mark": {"name": name},
                }
            )
