"""Transcript turns and call events, written off the hot path by ONE writer per process.

``CallEventWriter`` is built in the app lifespan, like ``ReplyProgressWriter``. ``record``
appends a row to one queue for every call of the process and never waits; one flusher
task writes up to ``max_batch`` rows in one transaction (an executemany INSERT) per round,
at most every ``interval_s``, and at once while a backlog remains or a session waits for
its call (``flush_call``). At 250 calls that is about one transaction a second on one
pooled connection, where a flushing task per call fired dozens a second in bursts and
emptied the pool. ``CallLog`` is one session's view of it.

* Order: rows are written in the order they were recorded (ids follow it, and
  ``call_store.transcript`` orders by id); a failed round puts its rows back in front.
* Failures: a round that fails is kept for the next; the calls go on. A row the database
  refuses for what it is (an unknown call, a value too long) would fail every round, so a
  refused batch is halved until that row is alone, and only it is dropped (``dropped``).
* Bound: at most ``max_pending`` rows wait, so a dead database cannot eat the process's
  memory. Past it NEW rows are refused (``refused``; logged once per episode): what is
  stored of a call is then its beginning, in order, not a transcript with its start cut.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType
from typing import Any, NamedTuple

import structlog
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from dialgraph.server.core import call_store
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import CallEvent

log = structlog.get_logger(__name__)


class _Row(NamedTuple):
    call_sid: str
    event: dict[str, Any] | None  # a ``call_events`` row (``call_store.event_row``), or
    stream_sid: str | None  # the call's stream, for ``calls.stream_sid``


class CallEventWriter:
    """The one writer of ``call_events`` (and ``calls.stream_sid``) for every live session
    of this process. ``start()`` (or ``async with``) starts its flusher task; ``aclose()``
    stops it and writes what is pending."""

    def __init__(
        self, db: Database, *, interval_s: float = 1.0, max_batch: int = 500, max_pending: int = 20_000
    ) -> None:
        self._db = db
        self._interval_s = interval_s
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: deque[_Row] = deque()
        self._in_flight: frozenset[str] = frozenset()  # calls with rows in the round being written
        self._in_flight_rows = 0
        self._in_flight_done: asyncio.Future[bool] | None = None  # True: that round was stored
        self._next_done: asyncio.Future[bool] | None = None  # resolved by the next round
        self._wake = asyncio.Event()  # something is pending
        self._hurry = asyncio.Event()  # cut the pause between rounds short (flush_call, aclose)
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()  # rounds in order, even without the task (closed)
        self._closing = False
        self._refusing = False
        self.batches = 0  # transactions committed
        self.rows = 0  # rows written (events and stream updates)
        self.refused = 0  # rows refused: too many pending
        self.dropped = 0  # rows the database refused

    # --- the sessions' side (all cheap, none blocks) -----------------------------------------
    def record(self, event: CallEvent) -> None:
        """Queue ``event`` (its ``at`` is now, however late it is written)."""
        self._add(_Row(event.call_sid, call_store.event_row(event), None))

    def set_stream(self, call_sid: str, stream_sid: str) -> None:
        """Queue ``calls.stream_sid`` of ``call_sid`` (written with the events)."""
        self._add(_Row(call_sid, None, stream_sid))

    async def flush_call(self, call_sid: str) -> None:
        """Return once the rows queued for ``call_sid`` so far are stored, or a round writing
        them failed and they wait for the next: a session's end, before its call row is
        finalised, is not held up by a dead database."""
        while True:
            if any(row.call_sid == call_sid for row in self._pending):
                if not self._flusher_running():  # not started, or closed: write from here
                    stored = await self._flush()
                else:  # shielded: a session cancelled while waiting must not cancel the round
                    stored = await asyncio.shield(self._round_after_pending())
                if not stored:
                    return
            elif call_sid in self._in_flight and self._in_flight_done is not None:
                await asyncio.shield(self._in_flight_done)
                return
            else:
                return

    async def flush_now(self) -> None:
        """Return once everything queued so far is stored, or a round failed."""
        while self._pending or self._in_flight_done is not None:
            if not self._flusher_running():
                stored = await self._flush()
            elif self._pending:
                stored = await asyncio.shield(self._round_after_pending())
            else:
                assert self._in_flight_done is not None
                stored = await asyncio.shield(self._in_flight_done)
            if not stored:
                return

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._flush_task is None:
            self._flush_task = asyncio.get_running_loop().create_task(self._run(), name="call-events-flush")

    async def aclose(self) -> None:
        """Stop the flusher after its round, then write what is still pending."""
        self._closing = True
        self._wake.set()
        self._hurry.set()
        if self._flush_task is not None:
            await self._flush_task
            self._flush_task = None
        while self._pending and await self._flush():
            pass
        self._resolve(self._next_done, not self._pending)
        self._next_done = None
        if self._pending:
            log.error("call events lost at shutdown: the database did not take them", rows=len(self._pending))

    async def __aenter__(self) -> CallEventWriter:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- the flusher --------------------------------------------------------------------------
    def _add(self, row: _Row) -> None:
        if len(self._pending) + self._in_flight_rows >= self._max_pending:
            self.refused += 1
            if not self._refusing:
                self._refusing = True
                log.warning("call events refused: too many wait for the database", max_pending=self._max_pending)
            return
        self._pending.append(row)
        if not self._wake.is_set():
            self._wake.set()

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
                self._hurry.clear()
                stored = await self._flush()
                if stored and len(self._pending) >= self._max_batch:
                    continue  # a backlog: drain it without pausing
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval_s):
                        await self._hurry.wait()
        finally:
            if not self._closing:  # died: nobody waits on a round that will not come
                self._resolve(self._next_done, False)
                self._next_done = None

    async def _flush(self) -> bool:
        """One round: up to ``max_batch`` rows from the front. False: it failed (the rows
        wait in front for the next round)."""
        async with self._flush_lock:
            self._wake.clear()
            done = self._next_done or asyncio.get_running_loop().create_future()
            self._next_done = None
            stored = True
            if self._pending:
                n = min(len(self._pending), self._max_batch)
                batch = [self._pending.popleft() for _ in range(n)]
                if self._pending:
                    self._wake.set()
                self._in_flight = frozenset(row.call_sid for row in batch)
                self._in_flight_rows = n
                self._in_flight_done = done
                try:
                    stored = await self._write(batch)
                finally:
                    self._in_flight, self._in_flight_rows, self._in_flight_done = frozenset(), 0, None
            self._resolve(done, stored)
            if self._refusing and len(self._pending) < self._max_pending // 2:
                self._refusing = False
                log.info("call events accepted again", refused=self.refused)
            return stored

    async def _write(self, batch: list[_Row]) -> bool:
        parts = [batch]  # a stack: the front of the batch on top
        while parts:
            part = parts.pop()
            try:
                await call_store.add_event_rows(
                    self._db,
                    [row.event for row in part if row.event is not None],
                    streams={row.call_sid: row.stream_sid for row in part if row.stream_sid is not None},
                )
            except Exception as exc:
                if _refused(exc):
                    if len(part) > 1:  # the refused row is in one half: find it
                        parts += (part[len(part) // 2 :], part[: len(part) // 2])
                        continue
                    self.dropped += 1
                    log.error("call event refused by the database: dropped", call_sid=part[0].call_sid, error=str(exc))
                    continue
                self._requeue([row for p in (part, *reversed(parts)) for row in p])
                if isinstance(exc, SQLAlchemyError | OSError):
                    log.warning("could not store call events", rows=len(batch), error=str(exc))
                else:  # last resort: this writer serves every call of the process
                    log.exception("could not store call events", rows=len(batch))
                return False
            except BaseException:  # cancelled (a write from ``flush_call`` without the flusher)
                self._requeue([row for p in (part, *reversed(parts)) for row in p])
                raise
            self.batches += 1
            self.rows += len(part)
        return True

    def _requeue(self, rows: list[_Row]) -> None:
        # Older than anything pending: back in front, in order. In flight, they were counted
        # against ``max_pending``, so the bound holds.
        self._pending.extendleft(reversed(rows))
        if not self._closing:
            self._wake.set()

    @staticmethod
    def _resolve(done: asyncio.Future[bool] | None, stored: bool) -> None:
        if done is not None and not done.done():
            done.set_result(stored)


def _refused(exc: Exception) -> bool:
    """The database (or the driver, before it) refused a row for what it is: it would fail
    every round."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)  # e.g. a value it cannot bind


class CallLog:
    """One session's events, on the process's ``CallEventWriter``: ``record`` never waits;
    ``flush`` returns once they are stored (or their write failed and they wait)."""

    def __init__(self, writer: CallEventWriter, *, call_sid: str, stream_sid: str) -> None:
        self._writer = writer
        self._call_sid = call_sid
        self._stream_sid = stream_sid

    def open(self) -> None:
        """The stream begins: the call row learns its stream sid (with the next round)."""
        self._writer.set_stream(self._call_sid, self._stream_sid)

    def record(self, event: CallEvent) -> None:
        self._writer.record(event)

    async def flush(self) -> None:
        await self._writer.flush_call(self._call_sid)
