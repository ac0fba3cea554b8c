"""Twilio's end of one Media Streams WebSocket, Sans-I/O: Twilio's messages built, the
server's messages checked and played.

Nothing here reads, writes or awaits. Every client that plays Twilio moves this module's
text over its own socket: ``MediaLeg`` (a scenario's phone), ``TwilioLeg`` (code that
drives its own caller), ``LeanLeg`` (hundreds of calls for the load benches) and the
tests' hand-driven client.

- ``PlaybackBuffer`` models Twilio's real-time playback of the agent's audio: marks come
  back when the audio queued before them has played, at once when nothing is queued;
  ``clear`` empties the buffer and returns every pending mark at once.
- ``check_server_message`` accepts exactly the three messages Twilio accepts and reports
  anything else as a protocol violation (Twilio's warnings 31950/31951).
- ``TwilioProtocol`` numbers and formats Twilio's messages (``connected``, ``start``,
  ``media``, ``dtmf``, ``mark``, ``stop``) in Twilio's own key order and spacing, applies the
  server's messages to its playback buffer and says which mark echoes are due.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from dialgraph.telephony.audio import FRAME_BYTES, SAMPLE_RATE, SILENCE_FRAME

__all__ = [
    "FRAME_BYTES",
    "FRAME_S",
    "SAMPLE_RATE",
    "SILENCE_PAYLOAD",
    "DEFAULT_ACCOUNT_SID",
    "AgentAudio",
    "AgentClear",
    "AgentMark",
    "ClearOut",
    "LegStats",
    "MarkOut",
    "MediaOut",
    "PlaybackBuffer",
    "TwilioProtocol",
    "Violation",
    "check_server_message",
    "payload",
]

FRAME_S = 0.02
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
SILENCE_PAYLOAD = base64.b64encode(SILENCE_FRAME).decode()


def payload(audio: bytes) -> str:
    """Mu-law as a ``media`` payload (base64). Precompute it for audio sent over and over."""
    return SILENCE_PAYLOAD if audio == SILENCE_FRAME else base64.b64encode(audio).decode()


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


ServerMessage = MediaOut | MarkOut | ClearOut

_CLEAR_KEYS = frozenset({"event", "streamSid"})
_BODIES = {"media": ("media", "payload"), "mark": ("mark", "name")}  # event: (its object, that object's one field)


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
    if event == "clear":
        return ClearOut() if msg.keys() == _CLEAR_KEYS else f"clear: fields {sorted(msg)}"
    if type(event) is not str or event not in _BODIES:
        return f"unknown event {event!r}"
    body, name = _BODIES[event]
    if msg.keys() != {"event", "streamSid", body}:
        return f"{event}: fields {sorted(msg)}"
    inner = msg[body]
    if type(inner) is not dict or inner.keys() != {name} or type(inner[name]) is not str:
        return f"{event}: {body!r} must be exactly {{{name}: str}}"
    if event == "mark":
        return MarkOut(inner[name])
    try:
        audio = binascii.a2b_base64(inner[name], strict_mode=True)
    except (binascii.Error, ValueError):
        return "media: payload is not base64"
    return MediaOut(audio) if audio else "media: empty payload"


# --- pure: what Twilio did with it ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AgentAudio:
    """Agent audio queued for playback from ``starts``; ``dry_s`` is how long the buffer had
    run dry before it came (0 when audio was still playing: no underrun)."""

    audio: bytes
    starts: float
    dry_s: float


@dataclass(frozen=True, slots=True)
class AgentMark:
    name: str
    due_now: bool  # nothing was left to play: echoed with the next write


@dataclass(frozen=True, slots=True)
class AgentClear:
    returned: int  # pending marks returned at once
    cut_end: float  # when the dropped audio would have finished playing


@dataclass(frozen=True, slots=True)
class Violation:
    """A server message Twilio would reject (warning 31950/31951)."""

    at: float
    reason: str
    raw: str


Received = AgentAudio | AgentMark | AgentClear | Violation


@dataclass
class LegStats:
    """What crossed one stream; the gap and underrun lists are filled by a leg that knows
    where one reply ends (``MediaLeg``)."""

    media_in: int = 0
    media_bytes: int = 0
    marks_in: int = 0
    marks_echoed: int = 0
    marks_returned_by_clear: int = 0
    clears: int = 0
    frames_out: int = 0
    arrival_gaps_ms: list[float] = field(default_factory=list)
    underruns_ms: list[float] = field(default_factory=list)


class TwilioProtocol:
    """Twilio's side of one stream: ``connected``/``start`` first, then ``media`` frames
    numbered on (sequence number, chunk, timestamp), ``dtmf``, mark echoes and ``stop``;
    ``receive`` checks and plays what the server sent, ``echoes`` hands out the mark echoes
    that are due. Messages come out exactly as Twilio serializes them (compact, its key
    order), so a server sees what it will see in production."""

    def __init__(self, *, stream_sid: str, call_sid: str, account_sid: str = DEFAULT_ACCOUNT_SID) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.playback = PlaybackBuffer()
        self.stats = LegStats()
        self._seq = 0
        self._chunk = 0
        self._urgent: list[str] = []
        self._sid = json.dumps(stream_sid)

    # --- Twilio -> server ----------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def connected(self) -> str:
        return '{"event":"connected","protocol":"Call","version":"1.0.0"}'

    def start(self, parameters: Mapping[str, str]) -> str:
        """``start`` carrying the ``<Stream>``'s ``<Parameter>``s as ``customParameters``."""
        start = {
            "accountSid": self.account_sid,
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": dict(parameters),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1},
        }
        body = {"event": "start", "sequenceNumber": str(self._next_seq()), "start": start, "streamSid": self.stream_sid}
        return json.dumps(body, separators=(",", ":"))

    def media(self, b64: str = SILENCE_PAYLOAD, *, chunk: int | None = None, timestamp: int | None = None) -> str:
        """The next 20 ms of caller audio (``b64`` from ``payload``). ``chunk``/``timestamp``
        override the running count: a lost, late or duplicated frame."""
        if chunk is None:
            self._chunk += 1
            chunk = self._chunk
        if timestamp is None:
            timestamp = (chunk - 1) * 20
        self.stats.frames_out += 1
        # Formatted by hand (what json.dumps would give): 50 of these a second per call.
        return (
            f'{{"event":"media","sequenceNumber":"{self._next_seq()}","media":{{"track":"inbound",'
            f'"chunk":"{chunk}","timestamp":"{timestamp}","payload":"{b64}"}},"streamSid":{self._sid}}}'
        )

    def dtmf(self, digit: str) -> str:
        body = {"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": str(self._next_seq())}
        return json.dumps({**body, "dtmf": {"track": "inbound_track", "digit": digit}}, separators=(",", ":"))

    def mark(self, name: str) -> str:
        """Twilio's echo of a mark whose audio has played."""
        self.stats.marks_echoed += 1
        body = {"event": "mark", "sequenceNumber": str(self._next_seq()), "streamSid": self.stream_sid}
        return json.dumps({**body, "mark": {"name": name}}, separators=(",", ":"))

    def stop(self) -> str:
        body = {"event": "stop", "sequenceNumber": str(self._next_seq()), "streamSid": self.stream_sid}
        stop = {"accountSid": self.account_sid, "callSid": self.call_sid}
        return json.dumps({**body, "stop": stop}, separators=(",", ":"))

    # --- server -> Twilio ----------------------------------------------------------------------
    def receive(self, raw: str | bytes, now: float) -> Received:
        """Check one server frame and play it at ``now`` (seconds on the leg's clock)."""
        msg = check_server_message(raw, self.stream_sid)
        stats = self.stats
        if isinstance(msg, str):
            text = raw if isinstance(raw, str) else f"<{len(raw)} bytes>"
            return Violation(at=now, reason=msg, raw=text[:200])
        if isinstance(msg, MediaOut):
            stats.media_in += 1
            stats.media_bytes += len(msg.audio)
            dry_s = max(0.0, now - self.playback.end)
            return AgentAudio(msg.audio, self.playback.enqueue_audio(len(msg.audio), now), dry_s)
        if isinstance(msg, MarkOut):
            stats.marks_in += 1
            due_now = self.playback.enqueue_mark(msg.name, now)
            if due_now:
                self._urgent.append(msg.name)
            return AgentMark(msg.name, due_now)
        stats.clears += 1
        marks, cut_end = self.playback.clear(now)
        stats.marks_returned_by_clear += len(marks)
        self._urgent.extend(marks)
        return AgentClear(len(marks), cut_end)

    @property
    def echo_waiting(self) -> bool:
        """A mark echo is due regardless of playback (nothing was queued, or a ``clear``)."""
        return bool(self._urgent)

    def echoes(self, now: float) -> list[str]:
        """The mark echoes due by ``now``, in order, as messages to send."""
        pending = self.playback.pending_marks
        if not self._urgent and (not pending or pending[0][0] > now):
            return []  # the common case, 50 times a second per call
        names = self._urgent + self.playback.due(now)
        self._urgent = []
        return [self.mark(name) for name in names]
