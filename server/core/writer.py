"""One process-wide batched SQL writer: the flusher task, its rounds, and who waits for them.

Sessions queue rows and never wait; ONE flusher task per writer takes a batch from the
pending rows and writes it in one transaction per round, at most every ``interval_s``, and
at once while a backlog remains or somebody waits (``flush_call``, ``flush_now``, ``aclose``).
A subclass says what a batch is: how to take one (``_take``), how to write it (``_write``,
which puts back in front what it could not store), which calls it holds.

* Rounds: one at a time, in order (a lock), even without the flusher (not started, closed).
* Waiting: ``flush_call`` returns once what a call queued is stored, or a round writing it
  failed (its rows wait for the next); a session's end is never held up by a dead database,
  and a session cancelled while waiting never cancels the round (shielded).
* Closing: ``aclose`` lets the flusher finish its round (it is never cancelled: a
  transaction cut by a cancellation leaves SQLAlchemy logging tracebacks from the pool),
  then writes what is pending while the database takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sized
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

import structlog
from sqlalchemy.exc import SQLAlchemyError

log = structlog.get_logger(__name__)

B = TypeVar("B", bound=Sized)  # one round's batch; its len() is its rows


class BatchedWriter(ABC, Generic[B]):
    """The flusher of one kind of row for every live session of this process.

    ``start()`` (or ``async with``) starts its flusher task; ``aclose()`` stops it after its
    round and writes what is still pending. Subclasses supply ``_pending_rows``, ``_holds``,
    ``_take``, ``_calls_in`` and ``_write``; they call ``_pending_added`` after queueing."""

    lost_at_close: ClassVar[str] = "rows lost at shutdown: the database did not take them"

    def __init__(self, *, interval_s: float, task_name: str) -> None:
        self._interval_s = interval_s
        self._task_name = task_name
        self._in_flight: frozenset[str] = frozenset()  # calls with rows in the round being written
        self._in_flight_rows = 0
        self._in_flight_done: asyncio.Future[bool] | None = None  # True: that round was stored
        self._next_done: asyncio.Future[bool] | None = None  # resolved by the next round
        self._wake = asyncio.Event()  # something is pending
        self._hurry = asyncio.Event()  # cut the pause between rounds short (flush_call, aclose)
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()  # rounds in order, even without the task (closed)
        self._closing = False
        self.batches = 0  # transactions committed
        self.rows = 0  # rows written

    # --- what a subclass supplies -------------------------------------------------------------
    @abstractmethod
    def _pending_rows(self) -> int:
        """How many rows wait (not counting the round in flight)."""

    @abstractmethod
    def _holds(self, call_sid: str) -> bool:
        """Whether a row of ``call_sid`` waits."""

    @abstractmethod
    def _take(self) -> B:
        """Remove the next round's batch from the pending rows (called only when some wait)."""

    @abstractmethod
    def _calls_in(self, batch: B) -> frozenset[str]:
        """The calls with rows in ``batch``."""

    @abstractmethod
    async def _write(self, batch: B) -> bool:
        """Store ``batch``. False (or an exception): not all of it was stored, and what was
        not is pending again, in front of anything queued since."""

    def _backlog(self) -> bool:
        """A full round still waits after a stored one: the flusher goes on without its pause."""
        return False

    # --- the sessions' side -------------------------------------------------------------------
    def _pending_added(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    async def flush_call(self, call_sid: str) -> None:
        """Return once the rows queued for ``call_sid`` so far are stored, or a round writing
        them failed and they wait for the next."""
        while True:
            if self._holds(call_sid):
                if not self._flusher_running():  # not started, or closed: write from here
                    stored = await self._flush()
                else:  # shielded: a session cancelled while waiting must not cancel the round
                    stored = await asyncio.shield(self._round_after_pending())
                if not stored:
                    return
            else:
                await self._round_writing(call_sid)
                return

    async def flush_now(self) -> None:
        """Return once everything queued so far is stored, or a round failed."""
        while self._pending_rows() or self._in_flight_done is not None:
            if not self._flusher_running():
                stored = await self._flush()
            elif self._pending_rows():
                stored = await asyncio.shield(self._round_after_pending())
            else:
                assert self._in_flight_done is not None
                stored = await asyncio.shield(self._in_flight_done)
            if not stored:
                return

    async def _round_writing(self, call_sid: str) -> None:
        """Wait for the round in flight if it holds rows of ``call_sid``."""
        if call_sid in self._in_flight and self._in_flight_done is not None:
            await asyncio.shield(self._in_flight_done)

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the flusher task (once)."""
        if self._flush_task is None:
            self._flush_task = asyncio.get_running_loop().create_task(self._run(), name=self._task_name)

    async def aclose(self) -> None:
        """Stop the flusher after its round, then write what is still pending."""
        self._closing = True
        self._wake.set()
        self._hurry.set()
        if self._flush_task is not None:
            await self._flush_task
            self._flush_task = None
        while self._pending_rows() and await self._flush():
            pass
        self._resolve(self._next_done, not self._pending_rows())
        self._next_done = None
        if self._pending_rows():
            log.error(self.lost_at_close, rows=self._pending_rows())

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- the flusher --------------------------------------------------------------------------
    def _flusher_running(self) -> bool:
        return self._flush_task is not None and not self._flush_task.done()

    def _round_after_pending(self) -> asyncio.Future[bool]:
        if self._next_done is None:
            self._next_done = asyncio.get_running_loop().create_future()
        self._hurry.set()
        return self._next_done

    async def _run(self) -> None:
        # Never cancelled (``aclose`` asks it to stop): a transaction cut by a cancellation
        # leaves SQLAlchemy logging tracebacks from the pool.
        try:
            while not self._closing:
                await self._wake.wait()
                if not self._closing:  # aclose's hurry must survive: it may come before this
                    self._hurry.clear()
                stored = await self._flush()
                if stored and self._backlog():
                    continue  # a backlog: drain it without pausing
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval_s):
                        await self._hurry.wait()
        finally:
            if not self._closing:  # died: nobody waits on a round that will not come
                self._resolve(self._next_done, False)
                self._next_done = None

    async def _flush(self) -> bool:
        """One round. False: it failed (its rows wait in front for the next round)."""
        async with self._flush_lock:
            self._wake.clear()
            done = self._next_done or asyncio.get_running_loop().create_future()
            self._next_done = None
            if not self._pending_rows():
                self._resolve(done, True)
                return True
            batch = self._take()
            if self._pending_rows():
                self._wake.set()
            self._in_flight = self._calls_in(batch)
            self._in_flight_rows = len(batch)
            self._in_flight_done = done
            stored = False
            try:
                stored = await self._write(batch)
            finally:  # also when cancelled (a write from ``flush_call`` without the flusher)
                self._in_flight, self._in_flight_rows, self._in_flight_done = frozenset(), 0, None
                if not stored and not self._closing:
                    self._wake.set()  # what failed is pending again
                self._resolve(done, stored)
            return stored

    @staticmethod
    def _resolve(done: asyncio.Future[bool] | None, stored: bool) -> None:
        if done is not None and not done.done():
            done.set_result(stored)


def log_write_failure(logger: Any, event: str, exc: Exception, **fields: Any) -> None:
    """Log a failed round (from its ``except``): a database or network error as a warning;
    anything else with its traceback (last resort: the writer serves every call of the process)."""
    if isinstance(exc, SQLAlchemyError | OSError):
        logger.warning(event, error=str(exc), **fields)
    else:
        logger.exception(event, **fields)
