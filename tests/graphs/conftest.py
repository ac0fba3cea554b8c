from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from dialgraph.graphs.runner import GraphRunner
from dialgraph.graphs.runtime import build_runners
from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from tests.fakes.graph_calls import fixed_clock, graph_settings


@pytest.fixture
def flow_settings(tmp_path: Path, database_url: str) -> Settings:
    return graph_settings(tmp_path, database_url)


@pytest.fixture
async def runners(flow_settings: Settings, db: Database) -> AsyncIterator[dict[str, GraphRunner]]:
    async with AsyncExitStack() as stack:
        yield await build_runners(flow_settings, db, stack, clock=fixed_clock)
