"""``server.maintenance.prune`` deletes only threads past the retention period."""

from __future__ import annotations

import datetime as dt
from contextlib import AsyncExitStack
from pathlib import Path

from langgraph.checkpoint.base import empty_checkpoint

from dialgraph.graphs.checkpoint import checkpoint_time, checkpointer
from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from dialgraph.server.maintenance import prune

EPOCH = dt.datetime(1582, 10, 15, tzinfo=dt.UTC)


def checkpoint_id_at(at: dt.datetime, seq: int = 0) -> str:
    """A LangGraph-style UUIDv6 checkpoint id for the instant ``at``."""
    ticks = (at - EPOCH) // dt.timedelta(microseconds=1) * 10
    high, mid, low = ticks >> 28, (ticks >> 12) & 0xFFFF, ticks & 0xFFF
    return f"{high:08x}-{mid:04x}-6{low:03x}-8000-{seq:012x}"


async def put_thread(url: str, thread_id: str, at: dt.datetime) -> None:
    async with AsyncExitStack() as stack:
        saver = await checkpointer(url, stack=stack, pool_size=2)
        checkpoint = empty_checkpoint()
        checkpoint["id"] = checkpoint_id_at(at)
        config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        await saver.aput(config, checkpoint, {"source": "input", "step": -1}, {})


async def threads(url: str) -> set[str]:
    async with AsyncExitStack() as stack:
        saver = await checkpointer(url, stack=stack, pool_size=2)
        return {t.config["configurable"]["thread_id"] async for t in saver.alist(None)}


async def test_prune_deletes_threads_past_retention(tmp_path: Path, database_url: str, db: Database) -> None:
    now = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
    settings = Settings(data_dir=tmp_path, database_url=database_url, checkpoint_retention_days=30, _env_file=None)  # type: ignore[call-arg]
    assert checkpoint_time(checkpoint_id_at(now)) == now
    await put_thread(database_url, "CA-old", now - dt.timedelta(days=31))
    await put_thread(database_url, "CA-recent", now - dt.timedelta(days=29))

    assert await prune(settings, now=now) == 1
    assert await threads(database_url) == {"CA-recent"}
    assert await prune(settings, now=now) == 0
    assert await prune(settings, now=now + dt.timedelta(days=2)) == 1
    assert await threads(database_url) == set()
