"""Group commit for the SQLite checkpointer: many calls' statements, one trip to its thread.

The calls of a process share the checkpointer's one aiosqlite connection, and aiosqlite
runs everything on that connection's thread. A statement used to be a trip of its own, under
the saver's lock: two thread switches, each waiting for the GIL, up to the interpreter's
5 ms switch interval when the event loop is busy. At 150 whole calls on one core that made
the connection the bottleneck: a checkpoint write took 0.6 s on average (the
``dialgraph_checkpoint_write_seconds`` histogram) and a reply's graph turn waited seconds
before its first token (issue 16's note, ``bench/load_whole.py``).

``Trips.run(fn)`` queues ``fn`` (a function of the raw ``sqlite3.Connection``, run on the
connection's thread) and ``Trips.insert(head, row, rows)`` an insert; what is queued while
a trip is out all goes in the next trip, in the order it was queued, so trips per second
stop growing with calls. Adjacent inserts into one table (the checkpoints and the tasks'
writes of every call) become one multi-row statement: inside a trip each statement still
waits for the GIL as the thread enters and leaves SQLite, so statements, not rows, are
what a busy loop makes expensive. Everything is in autocommit: a function or a merged
insert is its own transaction, and an insert whose merged statement fails is retried
alone, so a failure stays with its caller. Each trip holds
the saver's lock, so the saver's other users (setup, list, delete, retention: several
statements under the lock) never interleave with one. A caller cancelled before its trip
leaves takes its function out; once the trip has left, the function runs (as a cancelled
``execute`` always did).

aiosqlite has no public way to run a function on its thread: ``Connection._execute`` and
``Connection._conn`` are used, with aiosqlite pinned below the next minor release
(pyproject.toml); the conformance suite runs the saver through them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aiosqlite

T = TypeVar("T")

_Outcome = tuple[bool, Any]  # (ok, result or exception)
_MAX_PARAMS = 30_000  # SQLite allows 32766 parameters a statement


@dataclass(frozen=True, slots=True)
class Insert:
    """``{head} VALUES {row}, {row}, ...``: rows that are stored whole or not at all."""

    head: str
    row: str
    rows: Sequence[Sequence[Any]]


Job = Callable[[sqlite3.Connection], Any] | Insert


class Trips:
    """One connection's group-committed trips (see the module docstring)."""

    def __init__(self, conn: aiosqlite.Connection, lock: asyncio.Lock) -> None:
        if not callable(getattr(conn, "_execute", None)):
            raise RuntimeError("this aiosqlite has no Connection._execute: pin aiosqlite as pyproject.toml does")
        self._conn = conn
        self._lock = lock
        self._queue: list[tuple[Job, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.trips = 0  # trips taken (tests and benchmarks read these)
        self.jobs = 0  # functions and inserts run
        self.statements = 0  # inserts' statements (adjacent inserts of one head share one)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the connection's thread, in the next trip."""
        return cast(T, await self._queued(fn))

    async def insert(self, head: str, row: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` in the next trip; they share one statement with the inserts of the
        same ``head`` queued just before or after them."""
        if rows:
            await self._queued(Insert(head, row, rows))

    async def _queued(self, job: Job) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((job, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain(), name="sqlite-trips")
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[Job, asyncio.Future[Any]]] = []
        try:
            while self._queue:
                async with self._lock:
                    batch = [(job, f) for job, f in self._queue if not f.done()]  # done: cancelled while queued
                    self._queue.clear()
                    if not batch:
                        continue
                    self.trips += 1
                    self.jobs += len(batch)
                    conn = self._conn
                    outcomes, statements = await conn._execute(_run_all, conn, [job for job, _ in batch])
                    self.statements += statements
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                batch = []
        except Exception as exc:  # the connection is closed: every waiting caller hears it
            self._fail([*batch, *self._queue], exc)
        except asyncio.CancelledError:  # the loop is going away
            self._fail([*batch, *self._queue], RuntimeError("the checkpointer's connection closed"))
            raise
        finally:
            self._drainer = None

    def _fail(self, waiting: list[tuple[Any, asyncio.Future[Any]]], exc: Exception) -> None:
        for _, future in waiting:
            if not future.done():
                future.set_exception(exc)
        self._queue.clear()


# --- on the connection's thread ---------------------------------------------------------------
def _run_all(conn: aiosqlite.Connection, jobs: list[Job]) -> tuple[list[_Outcome], int]:
    """Every job in turn, each outcome kept apart; runs of inserts with one head and row
    shape become one statement (a failing one is retried insert by insert, so the failure
    stays with its own caller). Returns the outcomes and the inserts' statement count."""
    db = conn._conn
    outcomes: list[_Outcome] = []
    statements = 0
    i = 0
    while i < len(jobs):
        job = jobs[i]
        if not isinstance(job, Insert):
            outcomes.append(_outcome(job, db))
            i += 1
            continue
        group = [job]
        params = len(job.rows) * len(job.rows[0])
        while i + len(group) < len(jobs):
            nxt = jobs[i + len(group)]
            if not isinstance(nxt, Insert) or (nxt.head, nxt.row) != (job.head, job.row):
                break
            size = len(nxt.rows) * len(nxt.rows[0])
            if params + size > _MAX_PARAMS:
                break
            group.append(nxt)
            params += size
        i += len(group)
        statements += 1
        try:
            _insert(db, job.head, job.row, [r for g in group for r in g.rows])
            outcomes.extend((True, None) for _ in group)
        except Exception as exc:
            if len(group) == 1:
                outcomes.append((False, exc))
                continue
            for g in group:  # alone, so that the failure stays with its own caller
                statements += 1
                try:
                    _insert(db, g.head, g.row, g.rows)
                    outcomes.append((True, None))
                except Exception as alone:
                    outcomes.append((False, alone))
    return outcomes, statements


def _outcome(fn: Callable[[sqlite3.Connection], Any], db: sqlite3.Connection) -> _Outcome:
    try:
        return True, fn(db)
    except Exception as exc:
        return False, exc


def _insert(db: sqlite3.Connection, head: str, row: str, rows: Sequence[Sequence[Any]]) -> None:
    """All ``rows``: one statement when they fit (autocommit makes it whole or nothing), else
    a transaction of several."""
    per = max(1, _MAX_PARAMS // len(rows[0]))
    chunks = [rows[k : k + per] for k in range(0, len(rows), per)]

    def one(chunk: Sequence[Sequence[Any]]) -> None:
        db.execute(f"{head} VALUES " + ", ".join([row] * len(chunk)), [v for r in chunk for v in r]).close()

    if len(chunks) == 1:
        one(chunks[0])
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for chunk in chunks:
            one(chunk)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
