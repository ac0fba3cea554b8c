"""One Media Streams connection's state, Sans-I/O: text frames in, typed events out.

``MediaStreamProtocol`` knows what a socket from Twilio may say and in which order; it
reads nothing, sends nothing, awaits nothing and logs nothing (the media route and the
session move the text, and decide what to log). ``codec.parse`` reads each message; the
protocol adds what spans messages:

* the handshake -- ``connected`` (optional) then ``start``, within
  ``MAX_FRAMES_BEFORE_START`` frames; anything else first is a ``HandshakeFailed``;
* the stream id -- ``media`` of another stream is refused;
* gaps -- ``media`` after lost frames comes as a ``Gap`` that says how many 20 ms frames of
  silence stand for them (at most ``MAX_GAP_FRAMES``);
* duplicates -- ``media`` at or before the last chunk is dropped;
* errors -- frames ``parse`` refuses are counted and reported as ``Rejected``.

Events out of ``receive_text`` (None: nothing to act on):

* handshake: ``codec.Start`` (the stream began) or ``HandshakeFailed``;
* stream: ``codec.Media``, ``Gap``, ``codec.Mark``, ``codec.Dtmf``, ``codec.Stop``,
  ``Rejected``.

Per media frame it allocates nothing beyond the codec's ``Media`` (the common case returns it
as it is): 50 frames a second for every call of the process come through here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dialgraph.telephony.audio import FRAME_MS
from dialgraph.telephony.twilio import codec

MAX_FRAMES_BEFORE_START = 3  # ``connected`` may come more than once; ``start`` must follow soon
MAX_GAP_FRAMES = 250  # never fill more than 5 s of silence for one gap


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"  # ``stop`` came: nothing more is read
    FAILED = "failed"  # the handshake failed: the socket is to be closed


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """The socket did not open with ``connected``/``start``: close it (1008)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Gap:
    """``frames`` frames of audio were lost before ``media``: ``frames`` frames of silence
    stand for them, then ``media`` plays."""

    frames: int
    media: codec.Media


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame that is not a valid message for this stream, dropped; ``count`` is the
    connection's total so far (a flood of them must not flood the log)."""

    error: codec.ProtocolError
    count: int


StreamEvent = codec.Start | codec.Media | Gap | codec.Mark | codec.Dtmf | codec.Stop | Rejected | HandshakeFailed

_WRONG_STREAM = codec.FieldError("media for another stream")
_parse, _Media, _STREAMING = codec.parse, codec.Media, StreamState.STREAMING  # looked up per frame


class MediaStreamProtocol:
    """The Media Streams protocol of one socket, from the first frame to ``stop``.

    Counters (for the call's end-of-call log): ``frames_in`` media frames taken,
    ``duplicates`` dropped, ``silence_frames`` filled in for gaps, ``protocol_errors``."""

    def __init__(self, *, max_frames_before_start: int = MAX_FRAMES_BEFORE_START) -> None:
        self.state = StreamState.AWAITING_START
        self.start: codec.Start | None = None
        self.stream_sid = ""
        self.frames_in = 0
        self.duplicates = 0
        self.silence_frames = 0
        self.protocol_errors = 0
        self._frames_left = max_frames_before_start
        self._last_chunk = -1
        self._last_ts = -1

    def receive_text(self, frame: str | bytes) -> StreamEvent | None:
        """One WebSocket frame from Twilio -> the event it means (None: nothing to act on)."""
        if self.state is not _STREAMING:
            return self._handshake(frame) if self.state is StreamState.AWAITING_START else None
        try:
            event = _parse(frame)
        except codec.ProtocolError as exc:
            return self._reject(exc)
        if type(event) is not _Media:
            return self._other(event)
        if event.stream_sid != self.stream_sid:
            return self._reject(_WRONG_STREAM)
        # Media, inline: 50 a second for every call of the process.
        chunk, last = event.chunk, self._last_chunk
        if chunk <= last:
            self.duplicates += 1
            return None
        ts, last_ts = event.timestamp, self._last_ts
        self._last_chunk, self._last_ts = chunk, ts
        self.frames_in += 1
        if last < 0:
            return event
        # sequenceNumber counts marks and DTMF too; chunk and timestamp count audio only.
        missing = chunk - last - 1
        by_time = (ts - last_ts) // FRAME_MS - 1
        if by_time > missing:
            missing = by_time
        if missing <= 0:
            return event
        missing = min(missing, MAX_GAP_FRAMES)
        self.silence_frames += missing
        return Gap(missing, event)

    def _other(self, event: codec.TwilioEvent) -> StreamEvent | None:
        if type(event) is codec.Stop:
            self.state = StreamState.STOPPED
            return event
        if type(event) is codec.Mark or type(event) is codec.Dtmf:
            return event
        return None  # a repeated connected/start changes nothing

    def _handshake(self, frame: str | bytes) -> codec.Start | HandshakeFailed | None:
        self._frames_left -= 1
        try:
            event = codec.parse(frame)
        except codec.ProtocolError as exc:
            self.protocol_errors += 1
            return self._fail(f"malformed frame before start: {exc}")
        if type(event) is codec.Start:
            self.state = StreamState.STREAMING
            self.start = event
            self.stream_sid = event.stream_sid
            return event
        if type(event) is not codec.Connected:
            return self._fail(f"{type(event).__name__.lower()} before start")
        if self._frames_left <= 0:
            return self._fail("no start")
        return None

    def _fail(self, reason: str) -> HandshakeFailed:
        self.state = StreamState.FAILED
        return HandshakeFailed(reason)

    def _reject(self, error: codec.ProtocolError) -> Rejected:
        self.protocol_errors += 1
        return Rejected(error, self.protocol_errors)
