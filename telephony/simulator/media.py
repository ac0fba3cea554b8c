"""The simulator's media leg: Twilio's side of one ``<Connect><Stream>`` WebSocket, on asyncio.

``MediaLeg`` is the thin asyncio layer over ``TwilioProtocol``: a signed handshake,
``connected`` and ``start``, then one writer task sending 20 ms ``media`` frames on an
absolute schedule (and mark echoes, ``dtmf``, ``stop``) while the reader plays the server's
messages. What the caller says and hears goes through a ``CallerLine``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Literal, Protocol

import websockets
from websockets.asyncio.client import ClientConnection, connect

from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.simulator.protocol import (
    FRAME_S,
    SILENCE_PAYLOAD,
    AgentAudio,
    AgentClear,
    AgentMark,
    LegStats,
    PlaybackBuffer,
    TwilioProtocol,
    Violation,
    payload,
)

MAX_REPLY_GAP_S = 2.0  # longer agent silences without a caller action are a new reply


class CallerLine(Protocol):
    """What a media leg needs from the simulated phone (see ``caller.Phone``)."""

    def now(self) -> float: ...
    def next_frame(self, at: float) -> bytes | None: ...
    def take_dtmf(self) -> str | None: ...
    def hangup_requested(self) -> bool: ...
    def on_caller_frame(self, at: float, frame: bytes) -> None: ...
    def on_agent_audio(self, received: float, starts: float, audio: bytes) -> None: ...
    def on_clear(self, at: float, cut_end: float) -> None: ...
    def on_leg(self, event: Literal["open", "closed"], at: float) -> None: ...
    def last_caller_action(self) -> float: ...


LegEnd = Literal["server-closed", "caller-hangup", "rejected", "dropped"]


class MediaLeg:
    """Twilio's end of one media WebSocket, driven by a ``CallerLine``."""

    def __init__(
        self,
        *,
        url: str,
        signature: str,
        phone: CallerLine,
        call_sid: str,
        account_sid: str,
        stream_sid: str,
        parameters: dict[str, str],
        on_violation: Callable[[Violation], None],
    ) -> None:
        self.url = url
        self.signature = signature
        self.phone = phone
        self.parameters = parameters
        self.on_violation = on_violation
        self.protocol = TwilioProtocol(stream_sid=stream_sid, call_sid=call_sid, account_sid=account_sid)
        self.error: str | None = None
        self._wake: asyncio.Future[None] | None = None
        self._last_media_at: float | None = None
        self._ws: ClientConnection | None = None
        self._end: LegEnd = "server-closed"

    @property
    def stream_sid(self) -> str:
        return self.protocol.stream_sid

    @property
    def stats(self) -> LegStats:
        return self.protocol.stats

    @property
    def playback(self) -> PlaybackBuffer:
        return self.protocol.playback

    def abort(self) -> None:
        """The network fails: the TCP connection goes away without a ``stop`` or close frame."""
        if self._ws is not None:
            self._end = "dropped"
            self._ws.transport.abort()

    async def run(self) -> LegEnd:
        """Hold the stream until the server closes it, the caller hangs up or the line drops."""
        try:
            ws = await connect(
                self.url,
                additional_headers={"X-Twilio-Signature": self.signature},
                proxy=None,
                compression=None,
                open_timeout=10,
                max_size=2**22,
            )
        except (OSError, websockets.WebSocketException, TimeoutError, ValueError) as exc:
            self.error = f"handshake failed: {exc}"
            return "rejected"
        self._ws = ws
        async with ws:
            await ws.send(self.protocol.connected())
            await ws.send(self.protocol.start(self.parameters))
            self.phone.on_leg("open", self.phone.now())
            writer_task = asyncio.create_task(self._write(ws))
            try:
                await self._read(ws)
            finally:
                self.phone.on_leg("closed", self.phone.now())
                writer_task.cancel()
                # The server may close while the writer sends: that is the leg ending.
                with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                    await writer_task
        return self._end

    async def _read(self, ws: Any) -> None:
        try:
            async for raw in ws:
                self._apply(raw)
        except websockets.ConnectionClosed:
            pass

    def _apply(self, raw: str | bytes) -> None:
        now = self.phone.now()
        event = self.protocol.receive(raw, now)
        if isinstance(event, AgentAudio):
            last = self._last_media_at
            # Within one reply (no caller action since the last frame): pacing gaps, and
            # the buffer running dry before more of the reply came (an audible underrun).
            if last is not None and self.phone.last_caller_action() < last and now - last < MAX_REPLY_GAP_S:
                self.stats.arrival_gaps_ms.append((now - last) * 1000)
                if event.dry_s > 0:
                    self.stats.underruns_ms.append(event.dry_s * 1000)
            self._last_media_at = now
            self.phone.on_agent_audio(now, event.starts, event.audio)
        elif isinstance(event, AgentMark):
            if event.due_now:
                self._wake_writer()
        elif isinstance(event, AgentClear):
            self._last_media_at = None
            self.phone.on_clear(now, event.cut_end)
            self._wake_writer()
        else:
            self.on_violation(event)

    def _wake_writer(self) -> None:
        if self._wake is not None:
            _wake(self._wake)

    async def _write(self, ws: Any) -> None:
        """The only task that sends: media on a 20 ms schedule, mark echoes, dtmf, stop."""
        loop = asyncio.get_running_loop()
        protocol = self.protocol
        t0 = loop.time()
        leg_start = self.phone.now()
        chunk = 0
        while True:
            for echo in protocol.echoes(self.phone.now()):
                await ws.send(echo)
            if self.phone.hangup_requested():
                self._end = "caller-hangup"
                await ws.send(protocol.stop())
                await ws.close()
                return
            digit = self.phone.take_dtmf()
            if digit is not None:
                await ws.send(protocol.dtmf(digit))
            if loop.time() >= t0 + chunk * FRAME_S:
                at = leg_start + chunk * FRAME_S
                frame = self.phone.next_frame(at)
                chunk += 1
                await ws.send(protocol.media(SILENCE_PAYLOAD if frame is None else payload(frame)))
                self.phone.on_caller_frame(at, frame or SILENCE_FRAME)
            delay = t0 + chunk * FRAME_S - loop.time()
            if delay > 0 and not protocol.echo_waiting:
                # A bare future woken by a timer or by the reader (cheaper than wait_for).
                self._wake = loop.create_future()
                timer = loop.call_later(delay, _wake, self._wake)
                await self._wake
                timer.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
