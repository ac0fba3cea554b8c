"""The queue-backed recognition stream base, and stopping owned tasks without hiding a
cancellation."""

from __future__ import annotations

import asyncio

import pytest

from dialgraph.telephony.speech.base import Final, ProviderError, RecognitionEvent
from dialgraph.telephony.speech.stream import QueuedRecognitionStream
from dialgraph.telephony.speech.tasks import cancel_and_wait


class EchoStream(QueuedRecognitionStream):
    """One Final per push, holding the pushed bytes' length; one more at the end of input."""

    def __init__(self) -> None:
        super().__init__()
        self.heard = 0

    def _hear(self, audio: bytes) -> None:
        self.heard += len(audio)
        self._emit(Final(str(len(audio)), 0.0, 0.0))

    def _flush(self) -> None:
        self._emit(Final("end", 0.0, 0.0))
        super()._flush()


async def read(stream: QueuedRecognitionStream) -> list[RecognitionEvent]:
    async with asyncio.timeout(5):
        return [event async for event in stream]


async def test_events_in_order_and_no_audio_after_end_input() -> None:
    stream = EchoStream()
    stream.push(b"\xff" * 160)
    stream.push(b"\xff" * 320)
    await stream.end_input()
    stream.push(b"\xff" * 160)  # after the end: ignored
    await stream.end_input()  # once only
    assert [e.text for e in await read(stream)] == ["160", "320", "end"]  # type: ignore[union-attr]
    assert await read(stream) == []  # a later reader ends too
    assert stream.heard == 480 and stream.ready.is_set() and not stream.closed


async def test_aclose_ends_readers_and_drops_later_audio() -> None:
    stream = EchoStream()
    reader_task = asyncio.create_task(read(stream))
    await asyncio.sleep(0)
    await stream.aclose()
    await stream.aclose()
    stream.push(b"\xff" * 160)
    assert await reader_task == [] and stream.closed and stream.heard == 0


async def test_a_failure_comes_out_of_the_iterator_unless_closed() -> None:
    failing = QueuedRecognitionStream()
    failing._fail(ProviderError("gone", provider="test"))
    with pytest.raises(ProviderError, match="gone"):
        await read(failing)
    assert await read(failing) == []

    closed = QueuedRecognitionStream(ready=False)
    closed._fail(ProviderError("gone", provider="test"))
    await closed.aclose()
    assert await read(closed) == [] and closed.ready.is_set()


# --- cancel_and_wait -------------------------------------------------------------------------
async def test_cancel_and_wait_stops_the_task_and_drops_its_error() -> None:
    child_task = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await cancel_and_wait(child_task)
    assert child_task.cancelled()

    async def fails() -> None:
        raise ValueError("boom")

    failed_task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(failed_task)  # already failed: dropped, and retrieved
    assert isinstance(failed_task.exception(), ValueError)


async def test_a_cancellation_of_the_caller_while_it_waits_is_not_swallowed() -> None:
    stopping = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            stopping.set()
            await asyncio.sleep(0.2)  # cleanup that takes a while

    child_task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    after: list[str] = []

    async def owner() -> None:
        await cancel_and_wait(child_task)
        after.append("went on")  # must not run: the owner itself was cancelled

    owner_task = asyncio.create_task(owner())
    await stopping.wait()
    owner_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner_task
    assert after == []
    await cancel_and_wait(child_task)


async def test_cleanup_during_the_callers_own_cancellation_goes_on() -> None:
    child_task = asyncio.create_task(asyncio.sleep(3600))
    cleaned: list[str] = []

    async def owner() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await cancel_and_wait(child_task)
            cleaned.append("after the child")

    owner_task = asyncio.create_task(owner())
    await asyncio.sleep(0)
    owner_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner_task
    assert cleaned == ["after the child"] and child_task.cancelled()
