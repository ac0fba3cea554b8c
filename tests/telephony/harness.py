"""Test harness: the real app under uvicorn on 127.0.0.1, and a client that speaks to its
media WebSocket exactly as Twilio does (signed handshake, connected/start/media/mark/dtmf/stop)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dialgraph.server.app import create_app
from dialgraph.server.cli import uvicorn_options
from dialgraph.server.core.call_store import record_call
from dialgraph.server.core.enums import StreamSignal
from dialgraph.server.core.security import issue_stream_token
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.audio import SILENCE_FRAME, pcm16_to_ulaw
from dialgraph.telephony.call.pacer import mark_every_bytes_for, message_ms_for
from dialgraph.telephony.call.session import CallSession
from dialgraph.telephony.simulator.protocol import TwilioProtocol, check_server_message, payload
from dialgraph.telephony.simulator.webhooks import stream_signature

LOUD_FRAME = pcm16_to_ulaw((np.sin(np.arange(160) * 2 * np.pi * 300 / 8000) * 12000).astype("<i2").tobytes())
WAIT_S = 20.0  # a safety net against hangs, not a timing assertion


@dataclass
class Served:
    app: FastAPI
    url: str  # ws://127.0.0.1:PORT/twilio/media
    finished: list[CallSession] = field(default_factory=list)
    _events: dict[str, asyncio.Event] = field(default_factory=dict)

    def on_finished(self, session: CallSession) -> None:
        self.finished.append(session)
        self._events.setdefault(session.ctx.call_sid, asyncio.Event()).set()

    async def session_done(self, call_sid: str) -> CallSession:
        async with asyncio.timeout(WAIT_S):
            await self._events.setdefault(call_sid, asyncio.Event()).wait()
        return next(s for s in self.finished if s.ctx.call_sid == call_sid)


@asynccontextmanager
async def serve(settings: Settings, overrides: Overrides) -> AsyncIterator[Served]:
    """``create_app(settings, overrides=...)`` served by uvicorn on a free loopback port."""
    app = create_app(settings, overrides=overrides)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # the product's uvicorn options (the media socket on picows), as ``dialgraph serve`` runs
    options = uvicorn_options(settings, host="127.0.0.1", port=port) | {"log_level": "warning", "access_log": False}
    server = uvicorn.Server(uvicorn.Config(app, **options, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    served = Served(app=app, url=f"ws://127.0.0.1:{port}/twilio/media")
    app.state.call_observer = served.on_finished
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield served
    finally:
        server.should_exit = True
        await task
        sock.close()


def new_sids() -> tuple[str, str]:
    return "CA" + uuid.uuid4().hex, "MZ" + uuid.uuid4().hex


async def new_call(
    settings: Settings,
    app: FastAPI,
    *,
    call_sid: str,
    flow: str = "scheduling",
    signal: str = "",
    from_number: str = "+14155550100",
    to_number: str = "+15550009999",
) -> str:
    """Record the call row as ``/twilio/voice`` would and return a valid stream token."""
    await record_call(
        app.state.services.db,
        sid=call_sid,
        direction="inbound",
        from_number=from_number,
        to_number=to_number,
        flow=flow,
        thread_id=call_sid,
        status="in-progress",
    )
    return issue_stream_token(
        settings.stream_token_secret.get_secret_value(),
        call_sid=call_sid,
        thread_id=call_sid,
        flow=flow,
        ttl_s=settings.stream_token_ttl_s,
        signal=StreamSignal.parse(signal),
    )


def handshake_signature(settings: Settings) -> str:
    """What Twilio sends in ``X-Twilio-Signature`` for this server's media URL."""
    return stream_signature(settings.twilio_auth_token.get_secret_value(), settings.public_url)


class TwilioMediaClient:
    """Twilio's side of one media stream, driven by hand: ``TwilioProtocol`` (the
    simulator's) builds every message; every message the server sent is kept, and each
    must be one Twilio accepts."""

    def __init__(self, ws: ClientConnection, *, call_sid: str, stream_sid: str) -> None:
        self.ws = ws
        self.protocol = TwilioProtocol(stream_sid=stream_sid, call_sid=call_sid)
        self.received: list[dict[str, Any]] = []
        self._cursor = 0

    @property
    def call_sid(self) -> str:
        return self.protocol.call_sid

    @property
    def stream_sid(self) -> str:
        return self.protocol.stream_sid

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, url: str, settings: Settings, *, call_sid: str, stream_sid: str, signature: str | None = ""
    ) -> AsyncIterator[TwilioMediaClient]:
        headers = {}
        if signature is not None:
            headers["X-Twilio-Signature"] = signature or handshake_signature(settings)
        async with connect(url, additional_headers=headers, max_size=None) as ws:
            yield cls(ws, call_sid=call_sid, stream_sid=stream_sid)

    async def send(self, msg: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(msg if isinstance(msg, str | bytes) else json.dumps(msg))

    async def start(self, token: str | None, **params: str) -> None:
        await self.send(self.protocol.connected())
        await self.send(self.protocol.start({**params, **({"token": token} if token is not None else {})}))

    def media_message(self, audio: bytes = SILENCE_FRAME, *, chunk: int | None = None, ts: int | None = None) -> str:
        return self.protocol.media(payload(audio), chunk=chunk, timestamp=ts)

    async def media(self, audio: bytes = SILENCE_FRAME, frames: int = 1) -> None:
        b64 = payload(audio)
        for _ in range(frames):
            await self.ws.send(self.protocol.media(b64))

    async def dtmf(self, digit: str) -> None:
        await self.send(self.protocol.dtmf(digit))

    async def echo_mark(self, name: str) -> None:
        await self.send(self.protocol.mark(name))

    async def stop(self) -> None:
        await self.send(self.protocol.stop())

    async def _recv(self) -> dict[str, Any]:
        raw = await self.ws.recv()
        checked = check_server_message(raw, self.stream_sid)
        assert not isinstance(checked, str), f"Twilio would reject this message ({checked}): {raw!r:.200}"
        msg: dict[str, Any] = json.loads(raw)
        self.received.append(msg)
        return msg

    async def until(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Read until a message (new since the last call) satisfies ``pred``."""
        async with asyncio.timeout(WAIT_S):
            while True:
                while self._cursor < len(self.received):
                    msg = self.received[self._cursor]
                    self._cursor += 1
                    if pred(msg):
                        return msg
                await self._recv()

    async def until_mark(self, name: str) -> None:
        await self.until(lambda m: m["event"] == "mark" and m["mark"]["name"] == name)

    async def drain_until_closed(self) -> int | None:
        """Read everything until the server closes; returns the close code."""
        async with asyncio.timeout(WAIT_S):
            try:
                while True:
                    await self._recv()
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd is not None else None

    def marks(self, since: int = 0) -> list[str]:
        return [m["mark"]["name"] for m in self.received[since:] if m["event"] == "mark"]

    def audio(self, since: int = 0, until: int | None = None) -> list[bytes]:
        return [base64.b64decode(m["media"]["payload"]) for m in self.received[since:until] if m["event"] == "media"]


class LiveCall(NamedTuple):
    """A call whose media stream is open: the served app and Twilio's side of the stream
    (``client.call_sid`` / ``client.stream_sid`` name the call)."""

    served: Served
    client: TwilioMediaClient


@asynccontextmanager
async def connected_call(
    settings: Settings,
    overrides: Overrides,
    *,
    signal: str = "",
    prepare: Callable[[Served], Awaitable[None]] | None = None,
    start: bool = True,
) -> AsyncIterator[LiveCall]:
    """Serve the app, record a new call as ``/twilio/voice`` would (its stream token
    carrying ``signal``), run ``prepare`` (e.g. to break the database), open the call's
    media stream with a signed handshake and, with ``start``, send ``connected`` and
    ``start`` with the call's token."""
    call_sid, stream_sid = new_sids()
    async with serve(settings, overrides) as served:
        token = await new_call(settings, served.app, call_sid=call_sid, signal=signal)
        if prepare is not None:
            await prepare(served)
        async with TwilioMediaClient.connect(served.url, settings, call_sid=call_sid, stream_sid=stream_sid) as client:
            if start:
                await client.start(token)
            yield LiveCall(served, client)


# What the server sends by default: messages of this many bytes (``playback_lead_ms``).
DEFAULT_MESSAGE_BYTES = message_ms_for(Settings.model_fields["playback_lead_ms"].default) * 8


def expected_messages(
    stream_sid: str, phrases_audio: list[bytes], generation: int, *, message_bytes: int = DEFAULT_MESSAGE_BYTES
) -> list[dict[str, Any]]:
    """What the session must send for one reply: media messages of ``message_bytes`` (the
    last of a phrase shorter), a mark every <= 100 ms of audio and at each phrase end,
    named ``g<generation>.<n>``."""
    mark_every = mark_every_bytes_for(message_bytes)
    out: list[dict[str, Any]] = []
    n = 0
    for audio in phrases_audio:
        since = 0
        for offset in range(0, len(audio), message_bytes):
            chunk = audio[offset : offset + message_bytes]
            out.append(
                {"event": "media", "streamSid": stream_sid, "media": {"payload": base64.b64encode(chunk).decode()}}
            )
            since += len(chunk)
            if since >= mark_every or offset + message_bytes >= len(audio):
                out.append({"event": "mark", "streamSid": stream_sid, "mark": {"name": f"g{generation}.{n}"}})
                n += 1
                since = 0
    return out
