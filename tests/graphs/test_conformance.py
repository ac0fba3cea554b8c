"""The official checkpointer conformance suite against the savers exactly as
``graphs.checkpoint.checkpointer`` configures them (SQLite file, one trip per call;
pooled, lock-free Postgres)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from dialgraph.graphs.checkpoint import OneTripSqliteSaver, PooledPostgresSaver, checkpointer

BASE = {c.value for c in BASE_CAPABILITIES}


async def _run_suite(name: str, url_for: object, expected: type) -> None:
    counter = itertools.count()

    @checkpointer_test(name=name)
    async def factory() -> AsyncIterator[BaseCheckpointSaver[object]]:
        async with AsyncExitStack() as stack:
            saver = await checkpointer(url_for(next(counter)), stack=stack)  # type: ignore[operator]
            assert type(saver) is expected
            if isinstance(saver, AsyncPostgresSaver):  # one database for the run: start each suite empty
                async with saver._cursor() as cur:
                    await cur.execute("TRUNCATE checkpoints, checkpoint_blobs, checkpoint_writes")
            yield saver

    report = await validate(factory)
    report.print_report()
    assert report.passed_all_base(), report
    assert report.passed_all(), report  # extended capabilities it implements (prune...) too
    base = sum(r.tests_passed for cap, r in report.results.items() if cap in BASE)
    assert base >= 58 and all(r.tests_failed == 0 for r in report.results.values())


async def test_sqlite_saver_conformance(tmp_path: Path) -> None:
    await _run_suite("sqlite", lambda i: f"sqlite+aiosqlite:///{tmp_path / f'cp{i}.db'}", OneTripSqliteSaver)


@pytest.mark.postgres
async def test_pooled_postgres_saver_conformance(pg_dsn: str) -> None:
    url = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    await _run_suite("pooled-postgres", lambda i: url, PooledPostgresSaver)
