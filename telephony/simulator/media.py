"""The simulator's media leg: Twilio's side of one ``<Connect><Stream>`` WebSocket.

Pure parts first (no I/O, testable without a loop): ``PlaybackBuffer`` models Twilio's
real-time playback of the agent's audio (marks come back when the audio queued before
them has played, at once when nothing is queued; ``clear`` empties the buffer and returns
every pending mark at once); ``check_server_message`` accepts exactly the three messages
Twilio accepts and reports anything else as a protocol violation.

``MediaLeg`` is the thin asyncio layer: a signed handshake, ``connected`` and ``start``,
then one writer task sending 20 ms ``media`` frames on an absolute schedule (and mark
echoes, ``dtmf``, ``stop``) while the reader applies the server's messages.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import websockets
from websockets.asyncio.client import connect

SAMPLE_RATE = 8000
FRAME_BYTES = 160
FRAME_S = 0.02
SILENCE = b"\xff" * FRAME_BYTES
_SILENCE_B64 = base64.b64encode(SILENCE).decode()
MAX_REPLY_GAP_S = 2.0  # longer agent silences without a caller action are a new reply


# --- pure: playback model -------------------------------------------------------------------
@dataclass
class PlaybackBuffer:
    """Twilio's outbound buffer on a timeline of seconds (any clock)."""

    end: float = 0.0  # when the audio queued so far finishes playing
    pending_marks: deque[tuple[float, str]] = field(default_factory=deque)

    def enqueue_audio(self, nbytes: int, now: float) -> float:
        """Queue ``nbytes`` of mu-law; returns when it starts playing."""
        start = max(now, self.end)
        self.end = start + nbytes / SAMPLE_RATE
        return start

    def enqueue_mark(self, name: str, now: float) -> bool:
        """Queue a mark; True when it is due at once (nothing left to play)."""
        if self.end <= now and not self.pending_marks:
            return True
        self.pending_marks.append((max(self.end, now), name))
        return False

    def due(self, now: float) -> list[str]:
        """Marks whose audio has played by ``now``, in order."""
        out: list[str] = []
        while self.pending_marks and self.pending_marks[0][0] <= now:
            out.append(self.pending_marks.popleft()[1])
        return out

    def clear(self, now: float) -> tuple[list[str], float]:
        """Drop unplayed audio; returns every pending mark and when the dropped audio would have ended."""
        marks = [name for _, name in self.pending_marks]
        self.pending_marks.clear()
        cut_end = self.end
        self.end = min(self.end, now)
        return marks, cut_end

    def idle(self, now: float) -> bool:
        return self.end <= now and not self.pending_marks


# --- pure: what the server may send --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MediaOut:
    audio: bytes


@dataclass(frozen=True, slots=True)
class MarkOut:
    name: str


@dataclass(frozen=True, slots=True)
class ClearOut:
    pass


@dataclass(frozen=True, slots=True)
class Violation:
    """A server message Twilio would reject (warning 31950/31951)."""

    at: float
    reason: str
    raw: str


ServerMessage = MediaOut | MarkOut | ClearOut


def check_server_message(raw: str | bytes, stream_sid: str | None) -> ServerMessage | str:
    """Parse one server frame; a ``str`` result is the reason it is a protocol violation."""
    if isinstance(raw, bytes):
        return "binary frame"
    try:
        msg = json.loads(raw)
    except ValueError:
        return "not JSON"
    if not isinstance(msg, dict):
        return "not a JSON object"
    event = msg.get("event")
    if stream_sid is None:
        return f"{event!r} before start"
    if msg.get("streamSid") != stream_sid:
        return "wrong or missing streamSid"
    if event == "media":
        if set(msg) != {"event", "streamSid", "media"}:
            return f"media: fields {sorted(msg)}"
        media = msg["media"]
        if not isinstance(media, dict) or set(media) != {"payload"} or not isinstance(media["payload"], str):
            return "media: 'media' must be exactly {payload: str}"
        try:
            audio = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, ValueError):
            return "media: payload is not base64"
        if not audio:
            return "media: empty payload"
        return MediaOut(audio)
    if event == "mark":
        if set(msg) != {"event", "streamSid", "mark"}:
            return f"mark: fields {sorted(msg)}"
        mark = msg["mark"]
        if not isinstance(mark, dict) or set(mark) != {"name"} or not isinstance(mark["name"], str):
            return "mark: 'mark' must be exactly {name: str}"
        return MarkOut(mark["name"])
    if event == "clear":
        if set(msg) != {"event", "streamSid"}:
            return f"clear: fields {sorted(msg)}"
        return ClearOut()
    return f"unknown event {event!r}"


# --- asyncio: one stream ---------------------------------------------------------------------
class CallerLine(Protocol):
    """What a media leg needs from the simulated phone (see ``simulator_caller.Phone``)."""

    def now(self) -> float: ...
    def next_frame(self, at: float) -> bytes | None: ...
    def take_dtmf(self) -> str | None: ...
    def hangup_requested(self) -> bool: ...
    def on_caller_frame(self, at: float, frame: bytes) -> None: ...
    def on_agent_audio(self, received: float, starts: float, audio: bytes) -> None: ...
    def on_clear(self, at: float, cut_end: float) -> None: ...
    def on_leg(self, event: Literal["open", "closed"], at: float) -> None: ...
    def last_caller_action(self) -> float: ...


LegEnd = Literal["server-closed", "caller-hangup", "rejected"]


@dataclass
class LegStats:
    media_in: int = 0
    media_bytes: int = 0
    marks_in: int = 0
    marks_echoed: int = 0
    marks_returned_by_clear: int = 0
    clears: int = 0
    frames_out: int = 0
    arrival_gaps_ms: list[float] = field(default_factory=list)
    underruns_ms: list[float] = field(default_factory=list)


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
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = stream_sid
        self.parameters = parameters
        self.on_violation = on_violation
        self.playback = PlaybackBuffer()
        self.stats = LegStats()
        self._seq = 0
        self._urgent: list[str] = []
        self._wake: asyncio.Future[None] | None = None
        self._last_media_at: float | None = None
        self.error: str | None = None
        self._hung_up = False

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    def _event(self, event: str, **body: Any) -> str:
        return json.dumps({"event": event, "sequenceNumber": self._next_seq(), "streamSid": self.stream_sid, **body})

    async def run(self) -> LegEnd:
        """Hold the stream until the server closes it or the caller hangs up."""
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
        async with ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start = {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": self.parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1},
            }
            await ws.send(self._event("start", start=start))
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
        return "caller-hangup" if self._hung_up else "server-closed"

    async def _read(self, ws: Any) -> None:
        try:
            async for raw in ws:
                self._apply(raw)
        except websockets.ConnectionClosed:
            pass

    def _apply(self, raw: str | bytes) -> None:
        now = self.phone.now()
        msg = check_server_message(raw, self.stream_sid)
        if isinstance(msg, str):
            text = raw if isinstance(raw, str) else f"<{len(raw)} bytes>"
            self.on_violation(Violation(at=now, reason=msg, raw=text[:200]))
            return
        if isinstance(msg, MediaOut):
            stats = self.stats
            stats.media_in += 1
            stats.media_bytes += len(msg.audio)
            last = self._last_media_at
            # Within one reply (no caller action since the last frame): pacing gaps, and
            # the buffer running dry before more of the reply came (an audible underrun).
            if last is not None and self.phone.last_caller_action() < last and now - last < MAX_REPLY_GAP_S:
                stats.arrival_gaps_ms.append((now - last) * 1000)
                if self.playback.end < now:
                    stats.underruns_ms.append((now - self.playback.end) * 1000)
            self._last_media_at = now
            starts = self.playback.enqueue_audio(len(msg.audio), now)
            self.phone.on_agent_audio(now, starts, msg.audio)
        elif isinstance(msg, MarkOut):
            self.stats.marks_in += 1
            if self.playback.enqueue_mark(msg.name, now):
                self._urgent.append(msg.name)
                if self._wake is not None:
                    _wake(self._wake)
        else:
            self.stats.clears += 1
            marks, cut_end = self.playback.clear(now)
            self.stats.marks_returned_by_clear += len(marks)
            self._urgent.extend(marks)
            self._last_media_at = None
            self.phone.on_clear(now, cut_end)
            if self._wake is not None:
                _wake(self._wake)

    async def _write(self, ws: Any) -> None:
        """The only task that sends: media on a 20 ms schedule, mark echoes, dtmf, stop."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        leg_start = self.phone.now()
        chunk = 0
        while True:
            now = self.phone.now()
            marks = self._urgent + self.playback.due(now)
            self._urgent = []
            for name in marks:
                self.stats.marks_echoed += 1
                await ws.send(self._event("mark", mark={"name": name}))
            if self.phone.hangup_requested():
                self._hung_up = True
                await ws.send(self._event("stop", stop={"accountSid": self.account_sid, "callSid": self.call_sid}))
                await ws.close()
                return
            digit = self.phone.take_dtmf()
            if digit is not None:
                await ws.send(self._event("dtmf", dtmf={"track": "inbound_track", "digit": digit}))
            if loop.time() >= t0 + chunk * FRAME_S:
                at = leg_start + chunk * FRAME_S
                frame = self.phone.next_frame(at)
                chunk += 1
                payload = _SILENCE_B64 if frame is None else base64.b64encode(frame).decode()
                # Formatted by hand (same JSON as json.dumps): this runs 50 times a second per call.
                await ws.send(
                    f'{{"event": "media", "sequenceNumber": "{self._next_seq()}", "streamSid": "{self.stream_sid}", '
                    f'"media": {{"track": "inbound", "chunk": "{chunk}", "timestamp": "{(chunk - 1) * 20}", '
                    f'"payload": "{payload}"}}}}'
                )
                self.stats.frames_out += 1
                self.phone.on_caller_frame(at, frame or SILENCE)
            delay = t0 + chunk * FRAME_S - loop.time()
            if delay > 0 and not self._urgent:
                # A bare future woken by a timer or by the reader (cheaper than wait_for).
                self._wake = loop.create_future()
                timer = loop.call_later(delay, _wake, self._wake)
                await self._wake
                timer.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
