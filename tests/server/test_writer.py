"""``BatchedWriter``, the flusher under both process-wide SQL writers: rounds in order, a failed
round's rows first in the next, waiters answered by the round that holds their rows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from dialgraph.server.core.writer import BatchedWriter

Row = tuple[str, str]  # (call sid, text)


class ListWriter(BatchedWriter[list[Row]]):
    """Writes rows into ``stored``; fails while ``failing``; a round waits for ``gate``."""

    def __init__(self, *, interval_s: float = 60, max_batch: int = 100) -> None:
        super().__init__(interval_s=interval_s, task_name="list-flush")
        self.pending: list[Row] = []
        self.stored: list[Row] = []
        self.rounds: list[list[Row]] = []
        self.failing = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.max_batch = max_batch

    def add(self, sid: str, text: str) -> None:
        self.pending.append((sid, text))
        self._pending_added()

    def _pending_rows(self) -> int:
        return len(self.pending)

    def _holds(self, call_sid: str) -> bool:
        return any(sid == call_sid for sid, _ in self.pending)

    def _take(self) -> list[Row]:
        batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
        return batch

    def _calls_in(self, batch: list[Row]) -> frozenset[str]:
        return frozenset(sid for sid, _ in batch)

    def _backlog(self) -> bool:
        return len(self.pending) >= self.max_batch

    async def _write(self, batch: list[Row]) -> bool:
        try:
            await self.gate.wait()
        except BaseException:
            self.pending[:0] = batch
            raise
        self.rounds.append(batch)
        if self.failing:
            self.pending[:0] = batch  # in front of what came since
            return False
        self.stored += batch
        self.batches += 1
        self.rows += len(batch)
        return True


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_failed_round_keeps_its_rows_in_order_for_the_next() -> None:
    async with ListWriter(interval_s=0.01) as writer:
        writer.failing = True
        writer.add("CA1", "one")
        writer.add("CA2", "two")
        await writer.flush_call("CA1")  # the round failed: the caller is not held up
        assert writer.stored == []
        writer.add("CA1", "three")
        writer.failing = False
        await writer.flush_call("CA1")  # the flusher retries on its own, oldest first
        assert writer.stored == [("CA1", "one"), ("CA2", "two"), ("CA1", "three")]
        assert writer.rounds[-1] == writer.stored  # one round took the kept rows and the new one
    assert writer.batches == 1


async def test_the_flusher_retries_a_failed_round_on_its_own() -> None:
    async with ListWriter(interval_s=0.01) as writer:
        writer.failing = True
        writer.add("CA1", "one")
        await writer.flush_call("CA1")
        writer.failing = False  # nothing new is queued, nobody waits: the next round comes anyway
        await until(lambda: writer.stored == [("CA1", "one")])


async def test_flush_call_waits_for_the_round_writing_its_rows() -> None:
    async with ListWriter() as writer:
        writer.gate.clear()
        writer.add("CA1", "one")
        await until(lambda: writer.pending == [])  # the flusher's first round took it: at the gate
        assert writer.stored == []
        waiter = asyncio.create_task(writer.flush_call("CA1"))
        other = asyncio.create_task(writer.flush_call("CA2"))  # nothing of it anywhere: at once
        await asyncio.wait_for(other, 1)
        await asyncio.sleep(0.05)
        assert not waiter.done()
        writer.gate.set()
        await asyncio.wait_for(waiter, 1)
        assert writer.stored == [("CA1", "one")]


async def test_a_cancelled_waiter_does_not_cancel_the_round_for_the_others() -> None:
    async with ListWriter() as writer:
        writer.gate.clear()
        writer.add("CA0", "zero")
        await until(lambda: writer.pending == [])  # in flight, at the gate
        writer.add("CA1", "one")  # for the next round
        waiters = {sid: [asyncio.create_task(writer.flush_call(sid)) for _ in range(2)] for sid in ("CA0", "CA1")}
        await asyncio.sleep(0.01)
        for cancelled, other in waiters.values():
            assert not other.done()
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        writer.gate.set()
        await asyncio.wait_for(asyncio.gather(*(other for _, other in waiters.values())), 1)
        assert writer.stored == [("CA0", "zero"), ("CA1", "one")]


async def test_without_the_flusher_the_caller_writes_every_round_in_order() -> None:
    writer = ListWriter(max_batch=2)  # never started
    for n in range(5):
        writer.add("CA1", str(n))
    await writer.flush_now()
    assert writer.rounds == [[("CA1", "0"), ("CA1", "1")], [("CA1", "2"), ("CA1", "3")], [("CA1", "4")]]


async def test_a_backlog_is_drained_without_the_pause() -> None:
    async with ListWriter(interval_s=60, max_batch=2) as writer:
        for n in range(5):
            writer.add("CA1", str(n))
        await until(lambda: len(writer.stored) == 4)  # within seconds: not two minutes of pauses
        assert writer.rounds == [[("CA1", "0"), ("CA1", "1")], [("CA1", "2"), ("CA1", "3")]]
        assert writer.pending == [("CA1", "4")]  # less than a round: it waits the pause
    assert writer.stored == [("CA1", str(n)) for n in range(5)]


async def test_aclose_writes_what_is_pending_or_says_it_is_lost() -> None:
    writer = ListWriter()
    async with writer:
        await writer.flush_now()
        writer.add("CA1", "one")  # in the pause: only closing writes it
    assert writer.stored == [("CA1", "one")]

    writer = ListWriter()
    writer.failing = True
    with capture_logs() as logs:
        async with writer:
            writer.add("CA1", "one")
    assert writer.pending == [("CA1", "one")]
    assert [(e["event"], e["rows"]) for e in logs if e["log_level"] == "error"] == [
        ("rows lost at shutdown: the database did not take them", 1)
    ]
