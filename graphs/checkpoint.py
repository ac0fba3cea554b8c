"""Checkpoint savers by database URL, and thread retention.

- ``sqlite+aiosqlite:///path`` (or ``sqlite:///path``) -> ``OneTripSqliteSaver``: the
  official ``AsyncSqliteSaver`` on one autocommit aiosqlite connection, in WAL mode with a
  busy timeout, making one trip to that connection's thread per call, in a file of its own
  beside the app's (``graphs/sqlite_files.py``: ``dialgraph.db`` -> ``dialgraph-checkpoints.db``;
  checkpoints an earlier version left in the app's file move over when the saver opens).
- ``postgresql+psycopg://...`` (or ``postgresql://``) -> ``PooledPostgresSaver``: the
  official ``AsyncPostgresSaver`` on a psycopg pool (autocommit, prepare_threshold=0,
  dict_row, as the saver requires) without its global lock, its writes group-committed.
- ``memory://`` -> ``InMemorySaver`` (studio, throwaway runs).

Why the subclass: ``AsyncPostgresSaver._cursor`` takes ``self.lock`` around every call,
even when ``conn`` is a pool (langgraph issue #7259), so all calls of a process queue on
one lock and a pool buys nothing. The lock exists for a single shared connection; a
pooled call gets a connection of its own, so ``PooledPostgresSaver`` skips it there. And
a write per round trip, each holding a pooled connection while it waits its turn on a busy
loop, queued 150 calls for the pool: its checkpoints and task writes share round trips
(``graphs/pg_trips.py``). The conformance suite passes with it
(tests/graphs/test_conformance.py); bench/graph_turns.py and bench/load_whole.py measure it.

Every saver gets the serializer of ``graphs/checkpoint_serde.py`` (messages encoded once
and stored redacted; encrypted with the checkpoint key when one is set), and
``PrivatePostgresSaver`` keeps the strings PostgreSQL's saver would inline in JSONB
redacted, or encrypted in blobs. See the README's "Safety and privacy".
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import aiosqlite
import structlog
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    SerializerProtocol,
    get_checkpoint_id,
    get_checkpoint_metadata,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import _ainternal
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.checkpoint.sqlite.utils import load_pending_writes, pending_writes_sql
from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from dialgraph.graphs.checkpoint_serde import Boxed, memo_serializer, serializer
from dialgraph.graphs.pg_trips import PgTrips, Upsert
from dialgraph.graphs.sqlite_files import adopt_app_checkpoints, sqlite_checkpoint_file
from dialgraph.graphs.sqlite_trips import Trips
from dialgraph.server.core.live import CheckpointWrite, hub
from dialgraph.server.core.redaction import default_redactor

log = structlog.get_logger(__name__)


class OneTripSqliteSaver(AsyncSqliteSaver):
    """``AsyncSqliteSaver`` whose per-step calls share trips to the connection's thread.

    aiosqlite runs every call (execute, fetch, cursor close, commit) on its connection's
    thread: the official saver makes 3 trips per checkpoint, 4 per task's writes and 6 per
    read, ~37 a tool round trip turn, each two thread switches, all under the saver's
    lock. Here a read is one function on that thread and a checkpoint or a task's writes one
    insert, and what every call of the process queues while a trip is out shares the next
    trip, adjacent inserts into one table merged into one statement (``graphs/sqlite_trips.py``:
    group commit). Same tables, same rows; the conformance suite runs on it.
    """

    def __init__(self, conn: aiosqlite.Connection, *, serde: SerializerProtocol | None = None) -> None:
        if conn.isolation_level is not None:
            raise ValueError("OneTripSqliteSaver needs an autocommit connection (isolation_level=None)")
        super().__init__(conn, serde=serde)
        self.trips = Trips(conn, self.lock)

    async def setup(self) -> None:
        """The official ``setup`` takes the saver's lock before it looks at ``is_setup``, so
        every read and write of every call queued on the lock for it, behind every trip
        (at 200 calls, 333 tasks at once). Once set up, nothing to wait for."""
        if not self.is_setup:
            await super().setup()

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        await self.setup()
        thread_id = str(config["configurable"]["thread_id"])
        checkpoint_ns = config["configurable"].get("checkpoint_ns", "")
        wanted = get_checkpoint_id(config)
        select = (
            "SELECT checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata FROM checkpoints"
            " WHERE thread_id = ? AND checkpoint_ns = ?"
        )
        writes_sql = pending_writes_sql(self._has_task_path)

        def read(db: sqlite3.Connection) -> tuple[Any, list[Any]] | None:
            if wanted:
                cur = db.execute(f"{select} AND checkpoint_id = ?", (thread_id, checkpoint_ns, wanted))
            else:
                cur = db.execute(f"{select} ORDER BY checkpoint_id DESC LIMIT 1", (thread_id, checkpoint_ns))
            found = cur.fetchone()
            cur.close()
            if found is None:
                return None
            return found, db.execute(writes_sql, (thread_id, checkpoint_ns, found[0])).fetchall()

        got = await self.trips.read(read)
        if got is None:
            return None
        (checkpoint_id, parent_id, type_, blob, metadata), writes = got

        def at(cid: str) -> RunnableConfig:
            return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": cid}}

        return CheckpointTuple(
            config if wanted else at(checkpoint_id),
            self.serde.loads_typed((type_, blob)),
            cast(CheckpointMetadata, json.loads(metadata) if metadata is not None else {}),
            at(parent_id) if parent_id else None,
            load_pending_writes(writes, self.serde),
        )

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        started = time.perf_counter()
        await self.setup()
        thread_id = str(config["configurable"]["thread_id"])
        checkpoint_ns = config["configurable"]["checkpoint_ns"]
        type_, blob = self.serde.dumps_typed(checkpoint)
        meta = json.dumps(get_checkpoint_metadata(config, metadata), ensure_ascii=False).encode("utf-8", "ignore")
        row = (
            thread_id,
            checkpoint_ns,
            checkpoint["id"],
            config["configurable"].get("checkpoint_id"),
            type_,
            blob,
            meta,
        )
        await self.trips.insert(
            "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,"
            " type, checkpoint, metadata)",
            "(?, ?, ?, ?, ?, ?, ?)",
            [row],
        )
        hub.notify(CheckpointWrite("put", time.perf_counter() - started))  # /metrics
        return {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint["id"]}
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if not writes:
            return
        started = time.perf_counter()
        verb = "REPLACE" if all(w[0] in WRITES_IDX_MAP for w in writes) else "IGNORE"
        key = (
            str(config["configurable"]["thread_id"]),
            str(config["configurable"]["checkpoint_ns"]),
            str(config["configurable"]["checkpoint_id"]),
            task_id,
            task_path,
        )
        rows = [
            (*key, WRITES_IDX_MAP.get(channel, idx), channel, *self.serde.dumps_typed(value))
            for idx, (channel, value) in enumerate(writes)
        ]
        await self.setup()
        await self.trips.insert(
            f"INSERT OR {verb} INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,"
            " channel, type, value)",
            "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        hub.notify(CheckpointWrite("put_writes", time.perf_counter() - started))  # /metrics

    async def adelete_thread(self, thread_id: str) -> None:
        async with self.lock:
            await self._in_transaction(
                [
                    ("DELETE FROM checkpoints WHERE thread_id = ?", [str(thread_id)]),
                    ("DELETE FROM writes WHERE thread_id = ?", [str(thread_id)]),
                ]
            )

    async def _in_transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        await self.conn.execute_fetchall("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                await self.conn.execute_fetchall(sql, params)
        except BaseException:
            await self.conn.execute_fetchall("ROLLBACK")
            raise
        await self.conn.execute_fetchall("COMMIT")


class PrivatePostgresSaver(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` that stores no string of the state in the clear.

    The official saver keeps a checkpoint's primitive channel values (strings, numbers)
    inline in its JSONB ``checkpoint`` column, past the serializer: here a string is
    redacted first (the ``keypad`` channel masked), and with encryption on it goes to
    ``checkpoint_blobs`` through the (encrypting) serializer like any other value. The
    blob is written under the channel's current version even when the channel did not
    change in this step (a no-op when it exists): a thread written before encryption was
    on keeps its values. Reads are the official ones (blobs win over inline values).
    """

    def _private(self, checkpoint: Checkpoint, new_versions: ChannelVersions) -> tuple[Checkpoint, ChannelVersions]:
        """The checkpoint and versions to store: strings redacted, or boxed for the blobs."""
        memo = memo_serializer(self.serde)
        encrypted = isinstance(self.serde, EncryptedSerializer)
        values, versions = checkpoint["channel_values"], checkpoint["channel_versions"]
        changed: dict[str, Any] = {}
        boxed: ChannelVersions = {}
        for channel, value in values.items():
            if not isinstance(value, str):
                continue
            if encrypted and channel in versions:
                changed[channel] = Boxed(channel, value)
                boxed[channel] = versions[channel]
            elif memo is not None and (stored := memo.redact_channel(channel, value)) is not value:
                changed[channel] = stored
        if changed:
            checkpoint = {**checkpoint, "channel_values": {**values, **changed}}
            new_versions = {**new_versions, **boxed}
        return checkpoint, new_versions

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        started = time.perf_counter()
        checkpoint, new_versions = self._private(checkpoint, new_versions)
        stored = await super().aput(config, checkpoint, metadata, new_versions)
        hub.notify(CheckpointWrite("put", time.perf_counter() - started))  # /metrics
        return stored

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        started = time.perf_counter()
        await super().aput_writes(config, writes, task_id, task_path)
        hub.notify(CheckpointWrite("put_writes", time.perf_counter() - started))  # /metrics


class PooledPostgresSaver(PrivatePostgresSaver):
    """``PrivatePostgresSaver`` on a pool, its writes group-committed and nothing on threads.

    - No saver-wide lock around pooled calls: each checks out its own connection, so the
      lock only serialized independent calls. With a single connection (or a pipeline)
      the official locking and writes are kept.
    - Checkpoints, task writes and checkpoint reads go through ``PgTrips``
      (``graphs/pg_trips.py``): what every call queues while a trip is out shares one round
      trip, the writes as multi-row upserts in one transaction, the reads after them. Same
      SQL, same rows as the official saver; the trips have connections of their own.
    - Values are serialised and read back on the event loop: the official saver sends each
      write and read to a worker thread first, a GIL wait each way behind a busy loop. The
      serializer is the same one the SQLite saver runs inline.
    """

    def __init__(
        self,
        conn: Any,
        *,
        serde: SerializerProtocol | None = None,
        writes: AsyncConnectionPool[Any] | None = None,
        max_trips: int = 2,
    ) -> None:
        """``writes``: the trips' own pool (``max_trips`` connections), so that group-committed
        writes never wait for a connection behind the reads (at 250 calls, 155 reads queued
        for the 20 and the trips with them); without it they share ``conn``."""
        super().__init__(conn, serde=serde)
        pooled = isinstance(conn, AsyncConnectionPool)
        self.trips = PgTrips(writes or conn, max_trips=max_trips) if pooled else None

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

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The official read (same query), in the next trip: no pooled connection held
        across loop iterations. A checkpoint of the old format (v < 4, with pending sends to
        migrate) is read again the official way."""
        if self.trips is None or self.pipe is not None:
            return await super().aget_tuple(config)
        thread_id = config["configurable"]["thread_id"]
        checkpoint_id = get_checkpoint_id(config)
        checkpoint_ns = config["configurable"].get("checkpoint_ns", "")
        if checkpoint_id:
            args: tuple[Any, ...] = (thread_id, checkpoint_ns, checkpoint_id)
            where = "WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = %s"
        else:
            args = (thread_id, checkpoint_ns)
            where = "WHERE thread_id = %s AND checkpoint_ns = %s ORDER BY checkpoint_id DESC LIMIT 1"
        rows = await self.trips.read(self.SELECT_SQL + where, args)
        if not rows:
            return None
        value = rows[0]
        if value["checkpoint"]["v"] < 4 and value["parent_checkpoint_id"]:
            return await super().aget_tuple(config)
        return await self._load_checkpoint_tuple(value)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self.trips is None or self.pipe is not None:
            return await super().aput(config, checkpoint, metadata, new_versions)
        started = time.perf_counter()
        checkpoint, new_versions = self._private(checkpoint, new_versions)
        thread_id = config["configurable"]["thread_id"]
        checkpoint_ns = config["configurable"]["checkpoint_ns"]
        # as the official aput: primitives inline in the JSONB column, the rest in blobs
        inline = dict(checkpoint["channel_values"])
        blob_values: dict[str, Any] = {}
        for channel, value in checkpoint["channel_values"].items():
            if isinstance(value, _DeltaSnapshot):
                blob_values[channel] = inline.pop(channel)
                inline[channel] = True
            elif value is not None and not isinstance(value, str | int | float | bool):
                blob_values[channel] = inline.pop(channel)
        blob_versions = {k: v for k, v in new_versions.items() if k in blob_values}
        row = (
            thread_id,
            checkpoint_ns,
            checkpoint["id"],
            config["configurable"].get("checkpoint_id"),
            Jsonb({**checkpoint, "channel_values": inline}),
            Jsonb(get_serializable_checkpoint_metadata(config, metadata)),
        )
        await self.trips.insert(
            [
                (_BLOBS, self._dump_blobs(thread_id, checkpoint_ns, blob_values, blob_versions)),
                (_CHECKPOINTS, [row]),
            ]
        )
        hub.notify(CheckpointWrite("put", time.perf_counter() - started))  # /metrics
        return {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint["id"]}
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if self.trips is None or self.pipe is not None:
            await super().aput_writes(config, writes, task_id, task_path)
            return
        started = time.perf_counter()
        upsert = _UPSERT_WRITES if all(w[0] in WRITES_IDX_MAP for w in writes) else _INSERT_WRITES
        configurable = config["configurable"]
        rows = self._dump_writes(
            configurable["thread_id"],
            configurable["checkpoint_ns"],
            configurable["checkpoint_id"],
            task_id,
            task_path,
            writes,
        )
        await self.trips.insert([(upsert, rows)])
        hub.notify(CheckpointWrite("put_writes", time.perf_counter() - started))  # /metrics

    async def _load_checkpoint_tuple(self, value: DictRow) -> CheckpointTuple:
        """The official one, its pending writes read back here rather than on a thread."""

        def at(checkpoint_id: str) -> RunnableConfig:
            return {
                "configurable": {
                    "thread_id": value["thread_id"],
                    "checkpoint_ns": value["checkpoint_ns"],
                    "checkpoint_id": checkpoint_id,
                }
            }

        checkpoint = value["checkpoint"]
        channel_values = {**(checkpoint.get("channel_values") or {}), **self._load_blobs(value["channel_values"])}
        return CheckpointTuple(
            at(value["checkpoint_id"]),
            cast(Checkpoint, {**checkpoint, "channel_values": channel_values}),
            value["metadata"],
            at(value["parent_checkpoint_id"]) if value["parent_checkpoint_id"] else None,
            self._load_writes(value["pending_writes"]),
        )


_BLOBS = Upsert.parse(AsyncPostgresSaver.UPSERT_CHECKPOINT_BLOBS_SQL)
_CHECKPOINTS = Upsert.parse(AsyncPostgresSaver.UPSERT_CHECKPOINTS_SQL)
_UPSERT_WRITES = Upsert.parse(AsyncPostgresSaver.UPSERT_CHECKPOINT_WRITES_SQL)
_INSERT_WRITES = Upsert.parse(AsyncPostgresSaver.INSERT_CHECKPOINT_WRITES_SQL)


WRITE_TRIPS = 2  # PostgreSQL: group-commit round trips out at once, each on a connection of its own


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
    url: str,
    *,
    stack: AsyncExitStack,
    pool_size: int = 20,
    lock_free: bool = True,
    serde: SerializerProtocol | None = None,
) -> BaseCheckpointSaver[Any]:
    """The saver for ``url``, set up (tables created) and closed with ``stack``.

    ``serde``: ``serializer_for(settings)`` (redaction per ``[redaction]``, encryption with
    the checkpoint key); by default every category is redacted and nothing encrypted.
    ``lock_free=False`` gives the official ``AsyncPostgresSaver``'s locking on the same
    pool (for the benchmark's "before" figure).
    """
    serde = serde or serializer(redactor=default_redactor())
    if url.startswith("memory:"):
        return InMemorySaver(serde=serde)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        app_file = make_url(url).database or ":memory:"
        database = sqlite_checkpoint_file(app_file)
        conn = await aiosqlite.connect(database, timeout=30, isolation_level=None)  # autocommit
        stack.push_async_callback(conn.close)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=30000")
        sqlite_saver = OneTripSqliteSaver(conn, serde=serde)
        await sqlite_saver.setup()
        if database != app_file:
            moved = await sqlite_saver.trips.run(lambda db: adopt_app_checkpoints(db, app_file))
            if moved:
                log.info("checkpoints_moved", rows=moved)
        log.info("checkpointer_ready", backend="sqlite", encrypted=isinstance(serde, EncryptedSerializer))
        return sqlite_saver
    if backend == "postgresql":
        pool = await open_postgres_pool(url, max_size=pool_size)
        stack.push_async_callback(pool.close)
        pg_saver: AsyncPostgresSaver
        if lock_free:
            writes = await open_postgres_pool(url, max_size=WRITE_TRIPS, min_size=WRITE_TRIPS)
            stack.push_async_callback(writes.close)
            pg_saver = PooledPostgresSaver(pool, serde=serde, writes=writes, max_trips=WRITE_TRIPS)
        else:
            pg_saver = PrivatePostgresSaver(pool, serde=serde)
        await pg_saver.setup()
        log.info(
            "checkpointer_ready",
            backend="postgresql",
            pool_size=pool_size,
            lock_free=lock_free,
            encrypted=isinstance(serde, EncryptedSerializer),
        )
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
