"""One base for recognition streams whose events reach the reader through a queue.

Deepgram's socket loop, whisper's decode loop and the in-process fakes all make events on
their own schedule and hand them to whoever iterates the stream. ``QueuedRecognitionStream``
owns that hand-off: the queue, the sentinel that ends every reader (a later one too), a
provider error that comes out of the iterator (unless the stream was closed), ``ready``,
and the rule that audio pushed after ``end_input`` or ``aclose`` is ignored.

A subclass fills in up to three hooks:

- ``_hear(audio)``: audio the session pushed. It runs on the event loop for every 20 ms
  frame of every call, so it never awaits and stays cheap (buffer, or run a VAD).
- ``_flush()``: input has ended. The default ends the events at once; a stream with work
  in flight ends them later itself.
- ``_release()``: ``aclose`` is stopping the stream: cancel and await its tasks.

and reports with ``_emit(event)``, ``_fail(error)`` and ``_finish()``. The base on its own
is a stream that hears nothing and ends at ``end_input``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from dialgraph.telephony.speech.base import ProviderError, RecognitionEvent


class QueuedRecognitionStream:
    """A ``RecognitionStream`` whose events go through a queue (see the module docstring).
    ``ready`` starts set unless the subclass connects first (``ready=False``); it is set
    at the latest by ``aclose``."""

    def __init__(self, *, ready: bool = True) -> None:
        # Unbounded: events are few (a handful per utterance) and ``_emit`` must never wait.
        self._events: asyncio.Queue[RecognitionEvent | ProviderError | None] = asyncio.Queue()
        self._accepting = True  # neither end_input nor aclose yet
        self._input_ended = False
        self._closed = False
        self.ready = asyncio.Event()
        if ready:
            self.ready.set()

    @property
    def closed(self) -> bool:
        """``aclose`` was called."""
        return self._closed

    # --- the interface -------------------------------------------------------------------
    def push(self, audio: bytes) -> None:
        if self._accepting:
            self._hear(audio)

    async def end_input(self) -> None:
        if not self._accepting:
            return
        self._accepting = False
        self._input_ended = True
        self._flush()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._accepting = False
        self._closed = True
        try:
            await self._release()
        finally:
            self.ready.set()
            self._finish()

    def __aiter__(self) -> AsyncIterator[RecognitionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RecognitionEvent]:
        while True:
            item = await self._events.get()
            if item is None or isinstance(item, ProviderError):
                self._events.put_nowait(None)  # a later reader ends too
                if item is None or self._closed:
                    return
                raise item
            yield item

    # --- for subclasses --------------------------------------------------------------------
    def _hear(self, audio: bytes) -> None:
        """Pushed audio, while input is open. Never awaits."""

    def _flush(self) -> None:
        """Input has ended: emit what is pending, and end the events when done."""
        self._finish()

    async def _release(self) -> None:
        """Stop background work (``aclose``); the events end right after."""

    def _emit(self, event: RecognitionEvent) -> None:
        self._events.put_nowait(event)

    def _fail(self, error: ProviderError) -> None:
        """The stream gave up: ``error`` comes out of the iterator (not after ``aclose``)."""
        self._events.put_nowait(error)

    def _finish(self) -> None:
        """No more events: every reader's iteration ends after the ones already queued."""
        self._events.put_nowait(None)
