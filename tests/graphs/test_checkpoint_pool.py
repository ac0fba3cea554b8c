"""``checkpoint_pool_size``: the PostgreSQL checkpointer's pool, per process, from settings."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from dialgraph.graphs.checkpoint import WRITE_TRIPS, PooledPostgresSaver
from dialgraph.graphs.runtime import build_runners
from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from tests.fakes.graph_calls import fixed_clock


@pytest.mark.postgres
async def test_the_checkpointer_pool_is_as_large_as_settings_say(pg_dsn: str, tmp_path: Path) -> None:
    url = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    settings = Settings(data_dir=tmp_path, database_url=url, checkpoint_pool_size=7, _env_file=None)  # type: ignore[call-arg]
    db = Database(url)
    try:
        await db.upgrade()
        async with AsyncExitStack() as stack:
            runners = await build_runners(settings, db, stack, clock=fixed_clock)
            saver = runners["scheduling"].graph.checkpointer
            assert isinstance(saver, PooledPostgresSaver)
            assert saver.conn.max_size == 7  # type: ignore[union-attr]
            # the group-committed writes have connections of their own: never queued behind reads
            assert saver.trips is not None and saver.trips.pool is not saver.conn
            assert saver.trips.pool.max_size == WRITE_TRIPS
    finally:
        await db.aclose()


def test_the_pool_size_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint_pool_size"):
        Settings(data_dir=tmp_path, checkpoint_pool_size=0, _env_file=None)  # type: ignore[call-arg]
