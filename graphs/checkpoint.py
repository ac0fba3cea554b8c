"""Checkpoint savers by database URL, and thread retention.

- ``sqlite+aiosqlite:///path`` (or ``sqlite:///path``) -> ``OneTripSqliteSaver``: the
  official ``AsyncSqliteSaver`` on one autocommit aiosqlite connection, in WAL mode with a
  busy timeout, sharing the app's file, making one trip to that connection's thread per call.
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

Every saver gets ``MessageMemoSerializer``: LangGraph's serializer, same bytes, that
encodes a message object once instead of at every step (see its docstring).
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import aiosqlite
import ormsgpack
import structlog
from langchain_core.messages import BaseMessage
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
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import _ainternal
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde import jsonplus
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.checkpoint.sqlite.utils import load_pending_writes, pending_writes_sql
from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

log = structlog.get_logger(__name__)

_ROWS_PER_INSERT = 100  # 9 parameters a row, well under SQLite's 32766 per statement


class MessageMemoSerializer(jsonplus.JsonPlusSerializer):
    """``JsonPlusSerializer`` that encodes each message object once, to the same bytes.

    The ``messages`` channel changes at every step, so LangGraph serializes the whole
    history at every checkpoint (the SQLite saver even stores it in every checkpoint row):
    a tool round trip re-encodes it four or five times per turn, 11-14% of a turn's CPU
    at 20 turns of history (bench/graph_turns.py). Here a message's encoding is kept with
    the object (weakly: it lives as long as the message). Those read from the checkpoint
    at the start of a run are reused as read; one made later, by the next step's checkpoint.

    The output is byte for byte ``JsonPlusSerializer``'s, so stored checkpoints don't
    change and either serializer reads them. A kept encoding is used only while every
    field of the message is still the very object it was encoded from (LangGraph does set
    the id of a message written without one); messages in state are values, as LangGraph
    treats them, and are not changed in place below the top level.
    """

    def __init__(self) -> None:
        super().__init__()
        self._memo: dict[int, tuple[weakref.ref[BaseMessage], tuple[Any, ...], ormsgpack.Ext]] = {}

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if obj is None or isinstance(obj, (bytes, bytearray)):
            return super().dumps_typed(obj)
        try:
            return "msgpack", ormsgpack.packb(obj, default=self._default, option=jsonplus._option)
        except ormsgpack.MsgpackEncodeError:
            return super().dumps_typed(obj)  # its pickle fallback, or its error

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        type_, payload = data
        if type_ != "msgpack":
            return super().loads_typed(data)
        inner = self._unpack_ext_hook

        def ext_hook(code: int, ext_data: bytes) -> Any:
            obj = inner(code, ext_data)
            if code == jsonplus.EXT_PYDANTIC_V2 and isinstance(obj, BaseMessage):
                self._keep(obj, ormsgpack.Ext(code, ext_data))
            return obj

        return ormsgpack.unpackb(payload, ext_hook=ext_hook, option=ormsgpack.OPT_NON_STR_KEYS)

    def _default(self, obj: Any) -> Any:
        if isinstance(obj, BaseMessage):
            kept = self._memo.get(id(obj))
            if (
                kept is not None
                and kept[0]() is obj
                and not obj.__pydantic_extra__
                and all(map(operator.is_, kept[1], obj.__dict__.values()))
            ):
                return kept[2]
            ext = jsonplus._msgpack_default(obj)
            if isinstance(ext, ormsgpack.Ext):
                self._keep(obj, ext)
            return ext
        return jsonplus._msgpack_default(obj)

    def _keep(self, message: BaseMessage, ext: ormsgpack.Ext) -> None:
        """Keep ``ext`` as ``message``'s encoding while it lives (not for a message carrying
        extra attributes: only its declared fields are watched)."""
        if message.__pydantic_extra__:
            return
        key, memo = id(message), self._memo

        def forget(ref: weakref.ref[BaseMessage]) -> None:
            kept = memo.get(key)
            if kept is not None and kept[0] is ref:
                del memo[key]

        memo[key] = (weakref.ref(message, forget), tuple(message.__dict__.values()), ext)


class OneTripSqliteSaver(AsyncSqliteSaver):
    """``AsyncSqliteSaver`` whose per-step calls each take one trip to the connection's thread.

    aiosqlite runs every call (execute, fetch, cursor close, commit) on its connection's
    thread: the official saver makes 3 trips per checkpoint, 4 per task's writes and 6 per
    read, ~37 a tool round trip turn, each two thread switches, all under the saver's
    lock. Here each is one statement (a multi-row insert for writes) on a connection in
    autocommit mode, so a statement is its own transaction: 11 trips a turn, half the
    context switches. Same tables, same SQL, same rows; the conformance suite runs on it.
    """

    def __init__(self, conn: aiosqlite.Connection, *, serde: SerializerProtocol | None = None) -> None:
        if conn.isolation_level is not None:
            raise ValueError("OneTripSqliteSaver needs an autocommit connection (isolation_level=None)")
        super().__init__(conn, serde=serde)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        await self.setup()
        thread_id = str(config["configurable"]["thread_id"])
        checkpoint_ns = config["configurable"].get("checkpoint_ns", "")
        select = (
            "SELECT checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata FROM checkpoints"
            " WHERE thread_id = ? AND checkpoint_ns = ?"
        )
        async with self.lock:
            if checkpoint_id := get_checkpoint_id(config):
                rows = await self.conn.execute_fetchall(
                    f"{select} AND checkpoint_id = ?", (thread_id, checkpoint_ns, checkpoint_id)
                )
            else:
                rows = await self.conn.execute_fetchall(
                    f"{select} ORDER BY checkpoint_id DESC LIMIT 1", (thread_id, checkpoint_ns)
                )
            found = next(iter(rows), None)
            if found is None:
                return None
            checkpoint_id, parent_id, type_, blob, metadata = found
            writes = await self.conn.execute_fetchall(
                pending_writes_sql(self._has_task_path), (thread_id, checkpoint_ns, checkpoint_id)
            )

        def at(cid: str) -> RunnableConfig:
            return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": cid}}

        return CheckpointTuple(
            config if get_checkpoint_id(config) else at(checkpoint_id),
            self.serde.loads_typed((type_, blob)),
            cast(CheckpointMetadata, json.loads(metadata) if metadata is not None else {}),
            at(parent_id) if parent_id else None,
            load_pending_writes(list(writes), self.serde),
        )

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        await self.setup()
        thread_id = str(config["configurable"]["thread_id"])
        checkpoint_ns = config["configurable"]["checkpoint_ns"]
        type_, blob = self.serde.dumps_typed(checkpoint)
        meta = json.dumps(get_checkpoint_metadata(config, metadata), ensure_ascii=False).encode("utf-8", "ignore")
        parent_id = config["configurable"].get("checkpoint_id")
        async with self.lock:
            await self.conn.execute_fetchall(
                "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,"
                " type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (thread_id, checkpoint_ns, checkpoint["id"], parent_id, type_, blob, meta),
            )
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
        statements = [
            (
                f"INSERT OR {verb} INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,"
                " channel, type, value) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk)),
                [v for row in chunk for v in row],
            )
            for chunk in (rows[i : i + _ROWS_PER_INSERT] for i in range(0, len(rows), _ROWS_PER_INSERT))
        ]
        await self.setup()
        async with self.lock:
            if len(statements) == 1:
                await self.conn.execute_fetchall(*statements[0])
            else:  # a task's writes are stored whole or not at all
                await self._in_transaction(statements)

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
        return InMemorySaver(serde=MessageMemoSerializer())
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        database = make_url(url).database or ":memory:"
        conn = await aiosqlite.connect(database, timeout=30, isolation_level=None)  # autocommit
        stack.push_async_callback(conn.close)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=30000")
        sqlite_saver = OneTripSqliteSaver(conn, serde=MessageMemoSerializer())
        await sqlite_saver.setup()
        log.info("checkpointer_ready", backend="sqlite")
        return sqlite_saver
    if backend == "postgresql":
        pool = await open_postgres_pool(url, max_size=pool_size)
        stack.push_async_callback(pool.close)
        saver_cls = PooledPostgresSaver if lock_free else AsyncPostgresSaver
        pg_saver = saver_cls(pool, serde=MessageMemoSerializer())
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
