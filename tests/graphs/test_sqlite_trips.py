"""Group commit on the checkpointer's connection (graphs/sqlite_trips.py), on real aiosqlite."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from dialgraph.graphs.sqlite_trips import Trips


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    db = await aiosqlite.connect(tmp_path / "t.db", isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, who TEXT)")
    try:
        yield db
    finally:
        await db.close()


def insert(n: int, who: str = "x"):  # type: ignore[no-untyped-def]
    def run(db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO t (n, who) VALUES (?, ?)", (n, who)).close()
        return n

    return run


def count_rows(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM t").fetchone()[0])


async def test_concurrent_callers_share_trips_in_their_order(conn: aiosqlite.Connection) -> None:
    trips = Trips(conn, asyncio.Lock())
    results = await asyncio.gather(*(trips.run(insert(n)) for n in range(200)))
    assert results == list(range(200))
    assert trips.jobs == 200 and trips.trips < 20  # the first goes alone, the rest wait together
    rows = await conn.execute_fetchall("SELECT n FROM t ORDER BY rowid")
    assert [r[0] for r in rows] == list(range(200))  # run in the order queued


async def test_one_failure_stays_with_its_caller(conn: aiosqlite.Connection) -> None:
    trips = Trips(conn, asyncio.Lock())
    outcomes = await asyncio.gather(
        trips.run(insert(1)), trips.run(insert(1, "again")), trips.run(insert(2)), return_exceptions=True
    )
    assert outcomes[0] == 1 and isinstance(outcomes[1], sqlite3.IntegrityError) and outcomes[2] == 2
    rows = await conn.execute_fetchall("SELECT n, who FROM t ORDER BY n")
    assert [tuple(r) for r in rows] == [(1, "x"), (2, "x")]  # autocommit: the others stand


async def test_a_caller_cancelled_while_queued_runs_nothing(conn: aiosqlite.Connection) -> None:
    lock = asyncio.Lock()
    trips = Trips(conn, lock)
    async with lock:  # another user of the saver's lock (setup, delete, retention) holds it
        first = asyncio.ensure_future(trips.run(insert(1)))
        dropped = asyncio.ensure_future(trips.run(insert(2)))
        await asyncio.sleep(0.01)
        assert not first.done()  # the trip waits for the lock: nothing interleaves
        dropped.cancel()
    assert await first == 1
    with pytest.raises(asyncio.CancelledError):
        await dropped
    rows = await conn.execute_fetchall("SELECT n FROM t")
    assert [r[0] for r in rows] == [1]


async def test_a_closed_connection_is_an_error_for_every_waiting_caller(tmp_path: Path) -> None:
    db = await aiosqlite.connect(tmp_path / "c.db", isolation_level=None)
    await db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, who TEXT)")
    trips = Trips(db, asyncio.Lock())
    await db.close()
    outcomes = await asyncio.gather(trips.run(insert(1)), trips.run(insert(2)), return_exceptions=True)
    assert all(isinstance(o, ValueError) for o in outcomes)
    with pytest.raises(ValueError):  # and the next one too: no drainer left behind
        await trips.run(insert(3))


ROW = "(?, ?)"
HEAD = "INSERT INTO t (n, who)"


async def test_adjacent_inserts_share_one_statement_and_a_bad_one_fails_alone(conn: aiosqlite.Connection) -> None:
    trips = Trips(conn, asyncio.Lock())
    blocker = asyncio.ensure_future(trips.run(insert(0)))  # the first trip; the rest queue behind it
    await asyncio.sleep(0)
    outcomes = await asyncio.gather(
        *(trips.insert(HEAD, ROW, [(n, "a"), (n + 1000, "b")]) for n in range(1, 50)),
        trips.insert(HEAD, ROW, [(7, "clash")]),  # the primary key of an earlier insert
        trips.insert("INSERT OR REPLACE INTO t (n, who)", ROW, [(1, "replaced")]),
        return_exceptions=True,
    )
    await blocker
    assert all(o is None for o in outcomes[:49]) and isinstance(outcomes[49], sqlite3.IntegrityError)
    assert outcomes[50] is None
    assert trips.jobs == 52 and trips.trips == 2
    # 1 merged statement that failed, then each of its 50 alone, then the REPLACE
    assert trips.statements == 1 + 50 + 1
    rows = dict(await conn.execute_fetchall("SELECT n, who FROM t"))  # type: ignore[arg-type]
    assert len(rows) == 1 + 49 * 2 and rows[7] == "a" and rows[1] == "replaced"


async def test_inserts_in_order_with_the_functions_between_them(conn: aiosqlite.Connection) -> None:
    trips = Trips(conn, asyncio.Lock())

    blocker = asyncio.ensure_future(trips.run(insert(0)))
    await asyncio.sleep(0)
    got = await asyncio.gather(
        trips.insert(HEAD, ROW, [(1, "a")]),
        trips.insert(HEAD, ROW, [(2, "a")]),
        trips.run(count_rows),  # sees the inserts queued before it, not the one after
        trips.insert(HEAD, ROW, [(3, "a")]),
    )
    await blocker
    assert got[2] == 3 and trips.statements == 2


async def test_an_insert_too_big_for_one_statement_is_one_transaction(conn: aiosqlite.Connection) -> None:
    trips = Trips(conn, asyncio.Lock())
    rows = [(n, "x" if n != 19_999 else None) for n in range(20_000)]  # 40 000 parameters: two statements
    await conn.execute("CREATE TABLE strict_t (n INTEGER PRIMARY KEY, who TEXT NOT NULL)")
    with pytest.raises(sqlite3.IntegrityError):
        await trips.insert("INSERT INTO strict_t (n, who)", ROW, rows)
    assert (await conn.execute_fetchall("SELECT count(*) FROM strict_t"))[0][0] == 0  # whole or nothing
    await trips.insert("INSERT INTO strict_t (n, who)", ROW, [(n, "x") for n in range(20_000)])
    assert (await conn.execute_fetchall("SELECT count(*) FROM strict_t"))[0][0] == 20_000


async def test_interleaved_tables_are_one_statement_each(conn: aiosqlite.Connection) -> None:
    await conn.execute("CREATE TABLE u (n INTEGER PRIMARY KEY, who TEXT)")
    trips = Trips(conn, asyncio.Lock())
    blocker = asyncio.ensure_future(trips.run(insert(0)))
    await asyncio.sleep(0)
    await asyncio.gather(
        *(
            trips.insert(HEAD if n % 2 else "INSERT OR REPLACE INTO u (n, who)", ROW, [(n // 2 + 1, str(n))])
            for n in range(100)
        )
    )
    await blocker
    assert trips.statements == 2  # the checkpoints and the writes of many calls, one statement a table
    assert (await conn.execute_fetchall("SELECT count(*) FROM t"))[0][0] == 51
    assert (await conn.execute_fetchall("SELECT who FROM u WHERE n = 1"))[0][0] == "0"


async def test_reads_come_after_the_trips_writes(conn: aiosqlite.Connection) -> None:
    trips = Trips(conn, asyncio.Lock())

    blocker = asyncio.ensure_future(trips.run(insert(0)))
    await asyncio.sleep(0)
    got = await asyncio.gather(
        trips.insert(HEAD, ROW, [(1, "a")]),
        trips.read(count_rows),  # sees the insert before it, and the two after it in the same trip
        trips.insert(HEAD, ROW, [(2, "a")]),
        trips.read(count_rows),
        trips.insert(HEAD, ROW, [(3, "a")]),
    )
    await blocker
    assert got[1] == got[3] == 4 and trips.statements == 1  # the reads split nothing
