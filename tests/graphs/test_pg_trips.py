"""Group commit for the PostgreSQL checkpointer (``graphs/pg_trips.py``), on real PostgreSQL:
many callers' upserts share round trips, each caller's job is whole or nothing, a failure
stays with its caller, and the saver's writes read back as the official saver's do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg_pool import AsyncConnectionPool

from dialgraph.graphs.checkpoint import PooledPostgresSaver, open_postgres_pool
from dialgraph.graphs.pg_trips import PgTrips, Upsert

pytestmark = pytest.mark.postgres

KV = Upsert.parse("INSERT INTO kv (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")
KEEP = Upsert.parse("INSERT INTO kv (k, v) VALUES (%s, %s) ON CONFLICT (k) DO NOTHING")
SIDE = Upsert.parse("INSERT INTO side (k, n) VALUES (%s, %s) ON CONFLICT (k) DO NOTHING")


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    opened = await open_postgres_pool(pg_dsn, max_size=4)
    async with opened.connection() as conn:
        await conn.execute("CREATE TABLE kv (k text PRIMARY KEY, v text NOT NULL)")
        await conn.execute("CREATE TABLE side (k text PRIMARY KEY, n int NOT NULL CHECK (n >= 0))")
    yield opened
    await opened.close()


async def rows(pool: AsyncConnectionPool[Any], table: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        got = await (await conn.execute(f"SELECT * FROM {table} ORDER BY 1")).fetchall()  # noqa: S608 (test tables)
    return {r["k"]: r.get("v", r.get("n")) for r in got}


def test_the_official_statements_are_taken_apart() -> None:
    blobs = Upsert.parse(AsyncPostgresSaver.UPSERT_CHECKPOINT_BLOBS_SQL)
    assert blobs.head == "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)"
    assert blobs.row == "(%s, %s, %s, %s, %s, %s)"
    assert blobs.key == (0, 1, 2, 3) and not blobs.updates
    checkpoints = Upsert.parse(AsyncPostgresSaver.UPSERT_CHECKPOINTS_SQL)
    assert checkpoints.key == (0, 1, 2) and checkpoints.updates
    assert checkpoints.tail.endswith("metadata = EXCLUDED.metadata")  # the trailing ';' dropped
    writes = Upsert.parse(AsyncPostgresSaver.UPSERT_CHECKPOINT_WRITES_SQL)
    assert writes.key == (0, 1, 2, 3, 5) and writes.updates
    assert not Upsert.parse(AsyncPostgresSaver.INSERT_CHECKPOINT_WRITES_SQL).updates
    with pytest.raises(ValueError, match="ON CONFLICT"):
        Upsert.parse("INSERT INTO kv (k, v) VALUES (%s, %s)")


def test_rows_past_the_parameter_limit_are_split_and_an_updated_key_keeps_its_last_row() -> None:
    statements = KV.statements([(str(k % 40_000), str(k)) for k in range(70_000)])
    assert len(statements) == 2  # 40000 keys x 2 parameters: past 60000 in one statement
    params = [p for _, ps in statements for p in ps]
    assert dict(zip(params[::2], params[1::2], strict=True))["5"] == "40005"
    kept = KEEP.statements([("a", "1"), ("a", "2")])  # DO NOTHING keeps both: the first wins in PostgreSQL
    assert kept[0][1] == ["a", "1", "a", "2"]


async def test_concurrent_callers_share_trips_and_the_last_update_wins(pool: AsyncConnectionPool[Any]) -> None:
    trips = PgTrips(pool, max_trips=1)
    await asyncio.gather(*(trips.insert([(KV, [(f"k{i}", f"v{i}")]), (SIDE, [(f"k{i}", i)])]) for i in range(100)))
    assert trips.jobs == 100 and trips.trips < 10  # the first alone, the rest queued behind it
    assert trips.statements <= 2 * trips.trips
    assert await rows(pool, "kv") == {f"k{i}": f"v{i}" for i in range(100)}
    assert len(await rows(pool, "side")) == 100
    await asyncio.gather(*(trips.insert([(KV, [("same", str(i))])]) for i in range(20)))
    assert (await rows(pool, "kv"))["same"] == "19"  # queue order, as one statement a row would leave it
    await asyncio.gather(*(trips.insert([(KEEP, [("kept", str(i))])]) for i in range(20)))
    assert (await rows(pool, "kv"))["kept"] == "0"


async def test_a_failing_job_fails_alone_and_whole(pool: AsyncConnectionPool[Any]) -> None:
    trips = PgTrips(pool, max_trips=1)
    first = asyncio.ensure_future(trips.insert([(KV, [("warm", "x")])]))  # starts the trip; all 12 join it
    results = await asyncio.gather(
        *(trips.insert([(KV, [(f"ok{i}", "x")])]) for i in range(5)),
        trips.insert([(KV, [("torn", "x")]), (SIDE, [("torn", -1)])]),  # the CHECK fails: neither row stays
        *(trips.insert([(SIDE, [(f"ok{i}", i)])]) for i in range(5)),
        return_exceptions=True,
    )
    await first
    assert [type(r) for r in results].count(psycopg.errors.CheckViolation) == 1
    assert isinstance(results[5], psycopg.errors.CheckViolation)
    assert set(await rows(pool, "kv")) == {"warm", *(f"ok{i}" for i in range(5))}
    assert set(await rows(pool, "side")) == {f"ok{i}" for i in range(5)}
    assert trips.trips == 1 and trips.retries == 12  # the trip failed, then each job went alone


async def test_reads_share_trips_and_see_the_writes_queued_before_them(pool: AsyncConnectionPool[Any]) -> None:
    trips = PgTrips(pool, max_trips=1)
    first = asyncio.ensure_future(trips.insert([(KV, [("a", "1")])]))  # starts the trip; the rest join it
    results = await asyncio.gather(
        trips.read("SELECT v FROM kv WHERE k = %s", ("a",)),
        trips.insert([(KV, [("b", "2")])]),
        trips.read("SELECT k FROM kv ORDER BY k", ()),  # queued after "b": sees it
        *(trips.read("SELECT %s::int AS n", (i,)) for i in range(50)),
    )
    await first
    assert results[0] == [{"v": "1"}] and results[2] == [{"k": "a"}, {"k": "b"}]
    assert [r[0]["n"] for r in results[3:]] == list(range(50))
    assert trips.trips == 1 and trips.jobs == 54


async def test_a_failing_read_fails_alone(pool: AsyncConnectionPool[Any]) -> None:
    trips = PgTrips(pool, max_trips=1)
    first = asyncio.ensure_future(trips.insert([(KV, [("kept", "x")])]))
    results = await asyncio.gather(
        trips.read("SELECT * FROM no_such_table", ()),
        trips.read("SELECT v FROM kv WHERE k = %s", ("kept",)),
        return_exceptions=True,
    )
    await first
    assert isinstance(results[0], psycopg.errors.UndefinedTable)
    assert results[1] == [{"v": "x"}]


async def test_a_caller_cancelled_while_queued_writes_nothing(pool: AsyncConnectionPool[Any]) -> None:
    trips = PgTrips(pool, max_trips=1)
    first = asyncio.ensure_future(trips.insert([(KV, [("first", "x")])]))
    await asyncio.sleep(0)  # the trip has left with "first"
    queued = asyncio.ensure_future(trips.insert([(KV, [("cancelled", "x")])]))
    await asyncio.sleep(0)
    queued.cancel()
    await asyncio.gather(first, trips.insert([(KV, [("after", "x")])]))
    assert set(await rows(pool, "kv")) == {"first", "after"}


async def test_a_closed_pool_fails_every_caller_of_the_trip(pool: AsyncConnectionPool[Any]) -> None:
    trips = PgTrips(pool)
    await pool.close()
    results = await asyncio.gather(*(trips.insert([(KV, [(str(i), "x")])]) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)


async def test_the_saver_groups_checkpoints_of_many_threads(pg_dsn: str) -> None:
    pool = await open_postgres_pool(pg_dsn, max_size=4)
    try:
        saver = PooledPostgresSaver(pool)
        await saver.setup()
        assert saver.trips is not None

        async def one(i: int) -> None:
            config: Any = {"configurable": {"thread_id": f"t{i}", "checkpoint_ns": ""}}
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"messages": [f"hello {i}"], "flow": "support"}
            checkpoint["channel_versions"] = {"messages": "1", "flow": "1"}
            stored = await saver.aput(config, checkpoint, {"step": 1}, {"messages": "1", "flow": "1"})
            await saver.aput_writes(stored, [("messages", [f"more {i}"])], task_id="task")

        await asyncio.gather(*(one(i) for i in range(60)))
        assert saver.trips.jobs == 120 and saver.trips.trips < 60
        for i in (0, 59):
            jobs = saver.trips.jobs
            got = await saver.aget_tuple({"configurable": {"thread_id": f"t{i}", "checkpoint_ns": ""}})
            assert saver.trips.jobs == jobs + 1  # the read went in a trip
            assert got is not None
            assert got.checkpoint["channel_values"] == {"messages": [f"hello {i}"], "flow": "support"}
            assert got.pending_writes == [("task", "messages", [f"more {i}"])]
    finally:
        await pool.close()
