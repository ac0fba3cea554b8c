"""Group commit for the SQLite checkpointer: many calls' statements, one trip to its thread.

The calls of a process share the checkpointer's one aiosqlite connection, and aiosqlite
runs everything on that connection's thread. A statement used to be a trip of its own, under
the saver's lock: two thread switches, each waiting for the GIL, up to the interpreter's
5 ms switch interval when the event loop is busy. At 150 whole calls on one core that made
the connection the bottleneck: a checkpoint write took 0.6 s on average (the
``dialgraph_checkpoint_write_seconds`` histogram) and a reply's graph turn waited seconds
before its first token (issue 16's note, ``bench/load_whole.py``).

``Trips.insert(head, row, rows)`` queues an insert, ``Trips.read(fn)`` a function that only
reads and ``Trips.run(fn)`` any function of the raw ``sqlite3.Connection``, each run on the
connection's thread; what is queued while a trip is out all goes in the next trip, so trips
per second stop growing with calls. Inside a trip each statement still waits for the GIL as
the thread enters and leaves SQLite, so statements, not rows, are what a busy loop makes
expensive: between two ``run`` functions the inserts into one table (the checkpoints, or the
tasks' writes, of every call) become one multi-row statement, in queue order, and the reads
come after all of the trip's writes (a read sees at least what was queued before it).
Everything is in autocommit: a function or a merged insert is its own transaction, and an
insert whose merged statement fails is retried alone, so a failure stays with its caller.
Each trip holds the saver's lock, so the saver's other users (setup, list, delete,
retention: several statements under the lock) never interleave with one. A caller
cancelled before its trip leaves takes its job out; once the trip has left, the job runs
(as a cancelled ``execute`` always did). ``trip_s`` and ``work_s`` add up the trips' time.

aiosqlite has no public way to run a function on its thread: ``Connection._execute`` and
``Connection._conn`` are used, with aiosqlite pinned below the next minor release
(pyproject.toml); the conformance suite runs the saver through them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aiosqlite

T = TypeVar("T")

Outcome = tuple[bool, Any]  # (ok, result or exception)
_MAX_PARAMS = 30_000  # SQLite allows 32766 parameters a statement


@dataclass(frozen=True, slots=True)
class Insert:
    """``{head} VALUES {row}, {row}, ...``: rows that are stored whole or not at all."""

    head: str
    row: str
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Read:
    """A function that only reads: it runs after the trip's writes, so it sees at least
    everything queued before it (and perhaps what was queued after it, in the same trip)."""

    fn: Callable[[sqlite3.Connection], Any]


Job = Callable[[sqlite3.Connection], Any] | Insert | Read


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
        self.trip_s = 0.0  # trips' time, from leaving to the results back on the loop
        self.work_s = 0.0  # of which on the connection's thread, running the jobs

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the connection's thread, in the next trip."""
        return cast(T, await self._queued(fn))

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)``, which only reads, at the end of the next trip (see ``Read``):
        the reads of many calls then cost no statement boundary among their writes."""
        return cast(T, await self._queued(Read(fn)))

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
                    left = time.perf_counter()
                    outcomes, statements, work_s = await conn._execute(_run_all, conn, [job for job, _ in batch])
                    self.trip_s += time.perf_counter() - left
                    self.work_s += work_s
                    self.statements += statements
                settle([f for _, f in batch], outcomes)
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


def settle(futures: Sequence[asyncio.Future[Any]], outcomes: Sequence[Outcome]) -> None:
    """Each waiting caller gets its own outcome (a caller cancelled meanwhile is skipped).
    The PostgreSQL trips (``graphs/pg_trips.py``) settle theirs the same way."""
    for future, (ok, value) in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


# --- on the connection's thread ---------------------------------------------------------------
def _run_all(conn: aiosqlite.Connection, jobs: list[Job]) -> tuple[list[Outcome], int, float]:
    """Every job, each outcome kept apart. Between two functions, the inserts are grouped by head and row shape, each group one
    statement in queue order (the checkpoints and the writes of many calls interleave, and
    rows of different tables do not depend on each other's order); a failing statement is
    retried insert by insert, so a failure stays with its own caller. Reads come last.
    Returns the outcomes
    and the inserts' statement count and the time taken."""
    started = time.perf_counter()
    db = conn._conn
    outcomes: list[Outcome | None] = [None] * len(jobs)
    statements = 0
    groups: dict[tuple[str, str], list[int]] = {}

    def flush() -> None:
        nonlocal statements
        for indexes in groups.values():
            for part in _by_size([(k, cast(Insert, jobs[k])) for k in indexes]):
                statements += 1
                head, row = part[0][1].head, part[0][1].row
                try:
                    _insert(db, head, row, [r for _, job in part for r in job.rows])
                    for k, _ in part:
                        outcomes[k] = (True, None)
                except Exception as exc:
                    if len(part) == 1:
                        outcomes[part[0][0]] = (False, exc)
                        continue
                    for k, job in part:  # alone, so that the failure stays with its own caller
                        statements += 1
                        try:
                            _insert(db, job.head, job.row, job.rows)
                            outcomes[k] = (True, None)
                        except Exception as alone:
                            outcomes[k] = (False, alone)
        groups.clear()

    reads: list[int] = []
    for k, job in enumerate(jobs):
        if isinstance(job, Insert):
            groups.setdefault((job.head, job.row), []).append(k)
        elif isinstance(job, Read):
            reads.append(k)
        else:
            flush()
            outcomes[k] = _outcome(job, db)
    flush()
    for k in reads:
        outcomes[k] = _outcome(cast(Read, jobs[k]).fn, db)
    done = [o for o in outcomes if o is not None]
    assert len(done) == len(jobs)
    return done, statements, time.perf_counter() - started


def _by_size(items: list[tuple[int, Insert]]) -> list[list[tuple[int, Insert]]]:
    """Consecutive parts of ``items`` within the statement's parameter limit (an insert is
    never split here; one too big alone is its own part)."""
    parts: list[list[tuple[int, Insert]]] = []
    params = 0
    for item in items:
        size = len(item[1].rows) * len(item[1].rows[0])
        if not parts or params + size > _MAX_PARAMS:
            parts.append([])
            params = 0
        parts[-1].append(item)
        params += size
    return parts


def _outcome(fn: Callable[[sqlite3.Connection], Any], db: sqlite3.Connection) -> Outcome:
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
