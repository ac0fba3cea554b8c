"""The one writer of a call's media socket: control first, then audio paced at real time.

``OutboundPacer.run()`` is the only coroutine that writes to the socket. Control messages
(``clear``, closing the socket) overtake queued audio. Audio goes out as 20 ms ``media``
frames, each sent once the audio already sent is at most ``lead_s`` ahead of playback
(Twilio buffers it), so a barge-in has at most ``lead_s`` of audio to clear and a loop
hiccup shorter than ``lead_s`` is never heard. After each frame ``on_frame`` may name a
mark to send (the session's ``PlaybackTracker`` decides).

Queued audio is dropped by generation: a block whose generation is no longer
``current()`` is skipped, so nothing of an interrupted reply follows its ``clear``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from telephony import media_codec as codec
from telephony.speech import FRAME_BYTES, SAMPLE_RATE


class StreamClosedByServer(Exception):
    """Raised by ``run`` after it closed the socket on request."""


@dataclass(frozen=True, slots=True)
class _Audio:
    """A block of whole 20 ms frames (the last may be shorter at a phrase end). Queued per
    block, not per frame: queued objects live for seconds, and thousands of long-lived
    small objects a second would make the cyclic GC run full collections."""

    generation: int
    phrase: int
    audio: bytes
    phrase_end: bool


@dataclass(frozen=True, slots=True)
class _ReplyEnd:
    generation: int


@dataclass(frozen=True, slots=True)
class _Close:
    code: int


def _release(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class OutboundPacer:
    def __init__(
        self,
        *,
        stream_sid: str,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
        current: Callable[[], int],
        on_frame: Callable[[int, int, int, bool], str | None],
        on_reply_end: Callable[[int], None],
        lead_s: float = 0.12,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``current()`` is the live generation; ``on_frame(generation, phrase, nbytes,
        phrase_end)`` runs after each frame of the live generation and returns a mark name
        or None; ``on_reply_end(generation)`` runs when a reply's last audio has been sent."""
        self.stream_sid = stream_sid
        self._send = send
        self._close = close
        self._current = current
        self._on_frame = on_frame
        self._on_reply_end = on_reply_end
        self.lead_s = min(lead_s, 0.2)
        self._clock = clock
        self._audio: collections.deque[_Audio | _ReplyEnd] = collections.deque()
        self._control: collections.deque[str | _Close] = collections.deque()
        self._offset = 0  # bytes of the head block already sent
        self._waiter: asyncio.Future[None] | None = None

    # --- called by the session (never block, never await) -------------------------------------
    def audio(self, generation: int, phrase: int, audio: bytes, *, phrase_end: bool) -> None:
        self._audio.append(_Audio(generation, phrase, audio, phrase_end))
        self._wake()

    def reply_end(self, generation: int) -> None:
        self._audio.append(_ReplyEnd(generation))
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
        """Sleep ``delay`` seconds (forever if None) or until ``_wake``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        handle = loop.call_later(delay, _release, fut) if delay is not None else None
        try:
            await fut
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    # --- the writer task ----------------------------------------------------------------------
    async def run(self) -> None:
        send, audio, control, clock = self._send, self._audio, self._control, self._clock
        current, on_frame, lead, sid = self._current, self._on_frame, self.lead_s, self.stream_sid
        media, mark = codec.media, codec.mark
        play_end = 0.0  # when everything sent so far will have played
        while True:
            if control:
                item = control.popleft()
                if isinstance(item, _Close):
                    await self._close(item.code)
                    raise StreamClosedByServer
                await send(item)
                play_end = clock()  # clear empties Twilio's buffer
                continue
            if not audio:
                await self._sleep(None)
                continue
            block = audio[0]
            if block.generation != current():
                audio.popleft()
                self._offset = 0
                continue
            if type(block) is _ReplyEnd:
                audio.popleft()
                self._on_reply_end(block.generation)
                continue
            assert type(block) is _Audio
            now = clock()
            if play_end < now:
                play_end = now
            offset = self._offset
            frame = block.audio[offset : offset + FRAME_BYTES]
            duration = len(frame) / SAMPLE_RATE
            wait = play_end + duration - lead - now
            if wait > 0:
                await self._sleep(wait)
                continue
            offset += FRAME_BYTES
            last_of_block = offset >= len(block.audio)
            if last_of_block:
                audio.popleft()
                offset = 0
            self._offset = offset
            await send(media(sid, frame))
            play_end += duration
            if block.generation != current():
                continue  # a barge-in happened during the send: no mark for a dead reply
            name = on_frame(block.generation, block.phrase, len(frame), block.phrase_end and last_of_block)
            if name is not None:
                await send(mark(sid, name))
