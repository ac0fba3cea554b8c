"""Checkpoint savers by database URL, and thread retention.

- ``sqlite+aiosqlite:///path`` (or ``sqlite:///path``) -> the official ``AsyncSqliteSaver``
  on one aiosqlite connection, in WAL mode with a busy timeout, sharing the app's file.
- ``postgresql+psycopg://...`` (or ``postgresql://``) -> ``PooledPostgresSaver``: the
  official ``AsyncPostgresSaver`` on a psycopg pool (autocommit, prepare_threshold=0,
  dict_row, as the saver requires) without its global lock.
- ``memory://`` -> ``InMemorySaver`` (studio, throwaway runs).

Why the subclass: ``AsyncPostgresSaver._cursor`` takes ``self.lock`` around every call,
even when ``conn`` is a pool (langgraph issue #7259), so all calls of a process queue on
one lock and a pool buys nothing. The lock exists for a single shared connection; a
pooled call gets a connection of its own, so ``PooledPostgresSaver`` skips it there. The
conformance suite passes with it (tests/graphs/test_conformance.py) and bench/graph_turns.py
measures the difference.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiosqlite
import structlog
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import _ainternal
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

log = structlog.get_logger(__name__)


class PooledPostgresSaver(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` whose pooled calls don't wait on each other.

    With a pool each call checks out its own connection, so the saver-wide lock only
    serializes independent threads. With a single connection (or a pipeline) the
    official locking is kept.
    """

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        if not isinstance(self.conn, AsyncConnectionPool) or self.pipe is not None:
            async with super()._cursor(pipeline=pipeline) as cur:
                yield cur
            return
        async with _ainternal.get_connection(self.conn) as conn:
            if pipeline and self.supports_pipeline:
                async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            elif pipeline:
                async with conn.transaction(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            else:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur


def libpq_dsn(url: str) -> str:
    """SQLAlchemy's ``postgresql+psycopg://`` URL as a plain libpq URI."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


async def open_postgres_pool(url: str, *, max_size: int = 20, min_size: int = 1) -> AsyncConnectionPool[Any]:
    """A psycopg pool configured the way the Postgres saver needs its connections."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        libpq_dsn(url),
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=False,
    )
    await pool.open(wait=True)
    return pool


async def checkpointer(
    url: str, *, stack: AsyncExitStack, pool_size: int = 20, lock_free: bool = True
) -> BaseCheckpointSaver[Any]:
    """The saver for ``url``, set up (tables created) and closed with ``stack``.

    ``lock_free=False`` gives the official ``AsyncPostgresSaver`` on the same pool (for
    the benchmark's "before" figure).
    """
    if url.startswith("memory:"):
        return InMemorySaver()
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        database = make_url(url).database or ":memory:"
        conn = await aiosqlite.connect(database, timeout=30)
        stack.push_async_callback(conn.close)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=30000")
        sqlite_saver = AsyncSqliteSaver(conn)
        await sqlite_saver.setup()
        log.info("checkpointer_ready", backend="sqlite")
        return sqlite_saver
    if backend == "postgresql":
        pool = await open_postgres_pool(url, max_size=pool_size)
        stack.push_async_callback(pool.close)
        saver_cls = PooledPostgresSaver if lock_free else AsyncPostgresSaver
        pg_saver = saver_cls(pool)
        await pg_saver.setup()
        log.info("checkpointer_ready", backend="postgresql", pool_size=pool_size, lock_free=lock_free)
        return pg_saver
    raise ValueError(f"no checkpointer for database backend {backend!r}")


# --- retention -------------------------------------------------------------------------------
def checkpoint_time(checkpoint_id: str) -> dt.datetime:
    """When a checkpoint was written, read from its id (LangGraph uses time-ordered UUIDv6)."""
    hexid = checkpoint_id.replace("-", "")
    # UUIDv6: time_high(32) time_mid(16) version(4) time_low(12), 100 ns since 1582-10-15
    ticks = (int(hexid[0:8], 16) << 28) | (int(hexid[8:12], 16) << 12) | int(hexid[13:16], 16)
    return dt.datetime(1582, 10, 15, tzinfo=dt.UTC) + dt.timedelta(microseconds=ticks // 10)


async def thread_ages(saver: BaseCheckpointSaver[Any]) -> dict[str, dt.datetime]:
    """thread_id -> time of its newest checkpoint (one grouped query on SQL savers)."""
    sql = "SELECT thread_id, MAX(checkpoint_id) AS last FROM checkpoints GROUP BY thread_id"
    rows: list[tuple[str, str]] = []
    if isinstance(saver, AsyncSqliteSaver):
        async with saver.lock, saver.conn.execute(sql) as cur:
            rows = [(r[0], r[1]) for r in await cur.fetchall()]
    elif isinstance(saver, AsyncPostgresSaver):
        async with saver._cursor() as cur:
            await cur.execute(sql)
            rows = [(r["thread_id"], r["last"]) for r in await cur.fetchall()]
    else:
        newest: dict[str, str] = {}
        async for tup in saver.alist(None):
            tid = tup.config["configurable"]["thread_id"]
            cid = tup.config["configurable"]["checkpoint_id"]
            newest[tid] = max(newest.get(tid, cid), cid)
        rows = list(newest.items())
    return {tid: checkpoint_time(last) for tid, last in rows}


async def prune_threads(
    saver: BaseCheckpointSaver[Any], *, older_than: dt.timedelta, now: dt.datetime | None = None
) -> list[str]:
    """Delete every thread whose newest checkpoint is older than ``older_than``
    (``Settings.checkpoint_retention_days``); returns the deleted thread ids."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - older_than
    stale = sorted(tid for tid, at in (await thread_ages(saver)).items() if at < cutoff)
    for tid in stale:
        await saver.adelete_thread(tid)
    log.info("checkpoint_threads_pruned", count=len(stale))
    return stale
