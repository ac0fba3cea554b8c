"""Group commit for the PostgreSQL checkpointer: many calls' writes and reads, one round trip.

The official ``AsyncPostgresSaver`` makes every checkpoint write a round trip of its own on
a pooled connection, after a trip to a worker thread to serialise it. At 150 whole calls
on one core those waits add up: a task dump showed 130 tasks queued for one of the pool's
20 connections and ~110 writes inside one (issue 16's note). Each round trip waits its turn
on the busy event loop while it holds a connection.

``PgTrips.insert(statement, rows)`` queues rows for one of the saver's upserts (``Upsert``:
the official SQL, split into its column list, row and ``ON CONFLICT`` clause). What is queued
while a trip is out goes in the next one: the rows for each statement become one multi-row
``INSERT``, and all of a trip's statements are sent in one psycopg pipeline, which in
autocommit mode is one transaction and one round trip. So round trips per second stop
growing with calls.

``PgTrips.read(sql, params)`` queues a query: it runs in the next trip, after its writes,
so the reads of many calls share the round trip too and hold no connection of their own.

A caller's inserts are one ``Job`` (a checkpoint and its blobs are stored whole or not at
all). If a trip fails, its jobs are retried one by one, each in its own transaction, so a
failure stays with its own caller. Rows of one ``DO UPDATE`` statement that hit the same key
are merged, the last queued winning, as the official one-statement-a-row writes would
leave them. At most ``max_trips`` trips are out at once (each on its own pooled connection).
A caller cancelled before its trip leaves takes its job out.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from dialgraph.graphs.sqlite_trips import Outcome, settle

_MAX_PARAMS = 60_000  # PostgreSQL allows 65535 parameters a statement
_SQL = re.compile(
    r"^\s*(?P<head>INSERT INTO\s+\w+\s*\((?P<cols>[^)]*)\))\s*VALUES\s*(?P<row>\([^)]*\))\s*"
    r"(?P<tail>ON CONFLICT\s*\((?P<key>[^)]*)\)\s*DO\s+(?P<action>NOTHING|UPDATE.*?))\s*;?\s*$",
    re.DOTALL | re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Upsert:
    """``INSERT INTO t (cols) VALUES (row) ON CONFLICT (key) DO ...``, taken apart so that
    many rows can share one statement."""

    head: str
    row: str
    tail: str
    key: tuple[int, ...]  # positions of the conflict target's columns in a row
    updates: bool  # DO UPDATE (the last row for a key wins), else DO NOTHING (the first)

    @classmethod
    def parse(cls, sql: str) -> Upsert:
        found = _SQL.match(sql)
        if found is None:
            raise ValueError(f"not a single-row INSERT ... ON CONFLICT statement: {sql!r}")
        cols = [c.strip() for c in found["cols"].split(",")]
        key = tuple(cols.index(c.strip()) for c in found["key"].split(","))
        tail = " ".join(found["tail"].split())
        return cls(found["head"], found["row"], tail, key, found["action"].upper().startswith("UPDATE"))

    def statements(self, rows: Sequence[Sequence[Any]]) -> list[tuple[str, list[Any]]]:
        """``rows`` as multi-row statements within the parameter limit."""
        if self.updates:  # one statement may not update a row twice: keep each key's last row
            rows = list({tuple(r[k] for k in self.key): r for r in rows}.values())
        per = max(1, _MAX_PARAMS // len(rows[0]))
        return [
            (
                f"{self.head} VALUES {', '.join([self.row] * len(chunk))} {self.tail}",
                [v for r in chunk for v in r],
            )
            for chunk in (rows[k : k + per] for k in range(0, len(rows), per))
        ]


Job = Sequence[tuple[Upsert, Sequence[Sequence[Any]]]]


@dataclass(frozen=True, slots=True)
class Read:
    """A query whose rows a caller waits for: it runs after the trip's writes, so it sees at
    least everything queued before it."""

    sql: str
    params: Sequence[Any]


class PgTrips:
    """One pool's group-committed trips (see the module docstring)."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, max_trips: int = 2) -> None:
        self.pool = pool
        self._max_trips = max_trips
        self._queue: list[tuple[Job | Read, asyncio.Future[Any]]] = []
        self._out = 0  # drainers running (counted down as each ends, with no await between)
        self._drainers: set[asyncio.Task[None]] = set()
        self.trips = 0  # trips taken (tests and benchmarks read these)
        self.jobs = 0
        self.statements = 0
        self.retries = 0  # jobs retried alone after their trip failed
        self.trip_s = 0.0

    async def insert(self, job: Job) -> None:
        """Store ``job`` (statements and their rows, in order) in the next trip, in one
        transaction with the other jobs of that trip."""
        job = [(upsert, rows) for upsert, rows in job if rows]
        if job:
            await self._queued(job)

    async def read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """The rows of ``sql`` (the pool's row factory), read in the next trip after its
        writes: the reads of many calls cost no connection of their own (at 250 calls they
        queued for the pool's 20 connections, each held across several loop iterations)."""
        rows: list[Any] = await self._queued(Read(sql, params))
        return rows

    async def _queued(self, job: Job | Read) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((job, future))
        if self._out < self._max_trips:
            self._out += 1
            drainer = loop.create_task(self._drain(), name="postgres-trips")
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = [(job, f) for job, f in self._queue if not f.done()]  # done: cancelled while queued
                self._queue.clear()
                if batch:
                    await self._trip(batch)
        finally:
            self._out -= 1

    async def _trip(self, batch: list[tuple[Job | Read, asyncio.Future[Any]]]) -> None:
        self.trips += 1
        self.jobs += len(batch)
        started = time.perf_counter()
        outcomes: list[Outcome]  # (ok, a read's rows / None / the exception)
        try:
            async with self.pool.connection() as conn:
                try:
                    outcomes = [(True, r) for r in await self._send(conn, [job for job, _ in batch])]
                except Exception as exc:
                    if len(batch) == 1:
                        outcomes = [(False, exc)]
                    else:  # alone, so that the failure stays with its own caller
                        outcomes = []
                        for job, _ in batch:
                            self.retries += 1
                            try:
                                outcomes.append((True, (await self._send(conn, [job]))[0]))
                            except Exception as alone:
                                outcomes.append((False, alone))
        except Exception as exc:  # no connection: every caller of the trip hears it
            outcomes = [(False, exc)] * len(batch)
        except asyncio.CancelledError:  # the loop is going away
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError("the checkpointer's pool closed"))
            raise
        finally:
            self.trip_s += time.perf_counter() - started
        settle([f for _, f in batch], outcomes)

    async def _send(self, conn: AsyncConnection[Any], jobs: Sequence[Job | Read]) -> list[Any]:
        """``jobs`` in one pipeline: one transaction, one round trip. The rows of each
        statement (in the order statements first appear) become multi-row statements; the
        reads come after them. Returns each job's outcome: None, or a read's rows."""
        grouped: dict[Upsert, list[Sequence[Any]]] = {}
        reads: list[int] = []
        for k, job in enumerate(jobs):
            if isinstance(job, Read):
                reads.append(k)
                continue
            for upsert, rows in job:
                grouped.setdefault(upsert, []).extend(rows)
        statements = [s for upsert, rows in grouped.items() for s in upsert.statements(rows)]
        self.statements += len(statements)
        results: list[Any] = [None] * len(jobs)
        async with conn.pipeline(), conn.cursor(binary=True) as cur:
            for sql, params in statements:
                await cur.execute(sql, params, prepare=False)
            cursors = []
            for k in reads:
                read = jobs[k]
                assert isinstance(read, Read)
                reader = conn.cursor(binary=True)
                await reader.execute(read.sql, read.params)
                cursors.append((k, reader))
            for k, reader in cursors:  # the first fetch ends the pipeline's round trip
                async with reader:
                    results[k] = await reader.fetchall()
        return results
