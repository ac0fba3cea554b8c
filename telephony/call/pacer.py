"""The one writer of a call's media socket: control first, then audio paced at real time.

``AudioPacer.run()`` is the only coroutine that writes to the socket. Control messages
(``clear``, closing the socket) overtake queued audio. Audio goes out as ``media``
messages of ``message_bytes`` (100 ms with the default 200 ms lead; Twilio plays any size in order), each
sent once the audio already sent, this message included, is at most ``lead_s`` ahead of
playback (Twilio buffers it). So a barge-in has at most ``lead_s`` of audio to clear, and
a loop hiccup shorter than ``lead_s`` minus one message is never heard. Each block of audio
carries the reply it belongs to (an ``AudioOwner``): after each message the pacer reports
it to that reply (``frame_sent``), which may name a mark to send, and once a reply's last
block is out it says so (``audio_sent``). The pacer knows nothing else of replies or calls.

Why larger messages: every message costs a wake-up, a JSON build, a WebSocket frame and a
``send`` syscall; 100 ms messages with a mark each are 20 messages a second instead of 60,
the same heard-text resolution (marks every 100 ms), and with a 200 ms lead the same
100 ms of slack as 20 ms frames with a 120 ms lead (``message_ms_for``).

``clear()`` drops every queued block (only the reply in progress has audio queued), so
nothing of an interrupted reply follows its ``clear``; a reply cut while its message was
being sent names no mark for it (``frame_sent`` returns None).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from dialgraph.telephony.speech.base import FRAME_BYTES, SAMPLE_RATE
from dialgraph.telephony.twilio import codec

MIN_SLACK_MS = 100  # audio still buffered at Twilio when the next message is due
MAX_MESSAGE_MS = 100  # marks come every 100 ms at most, one per message at this size


def message_ms_for(lead_ms: int) -> int:
    """The largest whole-frame message (20..100 ms) that still leaves ``MIN_SLACK_MS`` of
    audio buffered when the next one is due: 20 ms for a 120 ms lead, 100 ms for the
    default 200 ms lead."""
    return max(20, min(MAX_MESSAGE_MS, (lead_ms - MIN_SLACK_MS) // 20 * 20))


def mark_every_bytes_for(message_bytes: int) -> int:
    """Mark spacing for a message size: a whole number of messages, at most 100 ms."""
    limit = SAMPLE_RATE * MAX_MESSAGE_MS // 1000
    return message_bytes * max(1, limit // message_bytes)


class StreamClosedByServer(Exception):
    """Raised by ``run`` after it closed the socket on request."""


class AudioTap(Protocol):
    """Told what the caller will hear (a call recording): each message sent with the
    instant it starts to play, and each ``clear`` with the instant it went out."""

    def agent(self, audio: bytes, play_at: float) -> None: ...

    def cleared(self, at: float) -> None: ...


class AudioOwner(Protocol):
    """What queued audio belongs to (a reply), told what became of it."""

    def frame_sent(self, phrase: int, nbytes: int, phrase_end: bool) -> str | None:
        """A message of ``nbytes`` of ``phrase`` went out; returns a mark name to send, or None."""

    def audio_sent(self) -> None:
        """The last block queued before ``reply_end`` has gone out."""


@dataclass(frozen=True, slots=True)
class _Audio:
    """A block of whole 20 ms frames (the last may be shorter at a phrase end). Queued per
    block, not per frame: queued objects live for seconds, and thousands of long-lived
    small objects a second would make the cyclic GC run full collections."""

    owner: AudioOwner
    phrase: int
    audio: bytes
    phrase_end: bool


@dataclass(frozen=True, slots=True)
class _ReplyEnd:
    owner: AudioOwner


@dataclass(frozen=True, slots=True)
class _Close:
    code: int


def _release(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class AudioPacer:
    """The writer of one call's media socket (see the module docstring)."""

    def __init__(
        self,
        *,
        stream_sid: str,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
        lead_s: float = 0.12,
        message_bytes: int = FRAME_BYTES,
        clock: Callable[[], float] = time.monotonic,
        tap: AudioTap | None = None,
    ) -> None:
        """A message never spans two phrases (a phrase's end gets its own mark), nor two
        owners. ``tap`` (a recording) hears every message and ``clear`` sent."""
        if message_bytes <= 0:
            raise ValueError("message_bytes must be positive")
        self.stream_sid = stream_sid
        self._send = send
        self._close = close
        self.lead_s = min(lead_s, 0.2)
        self.message_bytes = message_bytes
        self._clock = clock
        self._tap = tap
        self._audio: collections.deque[_Audio | _ReplyEnd] = collections.deque()
        self._control: collections.deque[str | _Close] = collections.deque()
        self._offset = 0  # bytes of the head block already sent
        self._waiter: asyncio.Future[None] | None = None
        self._idle = False  # waiting for audio, not for the pacing deadline

    # --- called by replies and the session (never block, never await) ------------------------
    def audio(self, owner: AudioOwner, phrase: int, audio: bytes, *, phrase_end: bool) -> None:
        self._audio.append(_Audio(owner, phrase, audio, phrase_end))
        if self._idle:  # more audio never brings a pacing deadline closer
            self._wake()

    def reply_end(self, owner: AudioOwner) -> None:
        """``owner`` queues no more audio: ``owner.audio_sent()`` once its last block is out."""
        self._audio.append(_ReplyEnd(owner))
        if self._idle:
            self._wake()

    def clear(self) -> None:
        """Drop queued audio and send ``clear`` before anything else."""
        self._audio.clear()
        self._offset = 0
        self._control.append(codec.clear(self.stream_sid))
        self._wake()

    def close(self, code: int = 1000, *, urgent: bool = False) -> None:
        """Close the socket once pending control messages are out (``urgent``: at once)."""
        if urgent:
            self._control.appendleft(_Close(code))
        else:
            self._control.append(_Close(code))
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _sleep(self, delay: float | None) -> None:
        """Sleep ``delay`` seconds (until new audio if None), or until ``_wake``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        self._idle = delay is None
        handle = loop.call_later(delay, _release, fut) if delay is not None else None
        try:
            await fut
        finally:
            self._waiter = None
            self._idle = False
            if handle is not None:
                handle.cancel()

    def _message_size(self, head: _Audio) -> int:
        """Bytes of the next message: up to ``message_bytes`` from the head block and the
        blocks after it, as long as they continue the same phrase of the same reply."""
        limit = self.message_bytes
        size = len(head.audio) - self._offset
        if size >= limit or head.phrase_end:
            return min(size, limit)
        for block in itertools.islice(self._audio, 1, None):
            if type(block) is not _Audio or block.owner is not head.owner or block.phrase != head.phrase:
                break
            size += len(block.audio)
            if size >= limit or block.phrase_end:
                break
        return min(size, limit)

    def _take(self, size: int) -> tuple[bytes, bool]:
        """Remove ``size`` bytes from the head of the queue (see ``_message_size``); returns
        them and whether they end a phrase."""
        audio, offset = self._audio, self._offset
        parts: list[bytes] = []
        phrase_end = False
        while size > 0:
            block = audio[0]
            assert type(block) is _Audio
            piece = block.audio[offset : offset + size]
            parts.append(piece)
            size -= len(piece)
            offset += len(piece)
            phrase_end = False
            if offset >= len(block.audio):
                audio.popleft()
                offset = 0
                phrase_end = block.phrase_end
        self._offset = offset
        return (parts[0] if len(parts) == 1 else b"".join(parts)), phrase_end

    # --- the writer task ----------------------------------------------------------------------
    async def run(self) -> None:
        send, audio, control, clock, tap = self._send, self._audio, self._control, self._clock, self._tap
        lead, sid = self.lead_s, self.stream_sid
        media, mark = codec.media_encoder(sid), codec.mark
        play_end = 0.0  # when everything sent so far will have played
        while True:
            if control:
                item = control.popleft()
                if isinstance(item, _Close):
                    await self._close(item.code)
                    raise StreamClosedByServer
                await send(item)
                play_end = clock()  # clear empties Twilio's buffer
                if tap is not None:
                    tap.cleared(play_end)
                continue
            if not audio:
                await self._sleep(None)
                continue
            block = audio[0]
            if type(block) is _ReplyEnd:
                audio.popleft()
                block.owner.audio_sent()
                continue
            assert type(block) is _Audio
            now = clock()
            if play_end < now:
                play_end = now
            size = self._message_size(block)
            if size == 0:  # an empty block: nothing to send, but a phrase end still gets its mark
                audio.popleft()
                self._offset = 0
                name = block.owner.frame_sent(block.phrase, 0, True) if block.phrase_end else None
                if name is not None:
                    await send(mark(sid, name))
                continue
            duration = size / SAMPLE_RATE
            wait = play_end + duration - lead - now
            if wait > 0:
                await self._sleep(wait)
                continue
            chunk, phrase_end = self._take(size)
            await send(media(chunk))
            if tap is not None:
                tap.agent(chunk, play_end)
            play_end += duration
            # None if a barge-in cut the reply during the send: no mark for a dead reply.
            name = block.owner.frame_sent(block.phrase, size, phrase_end)
            if name is not None:
                await send(mark(sid, name))
