"""Shared fixtures: real databases (SQLite file and PostgreSQL), settings, leak checks.

PostgreSQL tests need the server on 127.0.0.1:5432 (user postgres, trust auth). Without
it they skip, unless REQUIRE_POSTGRES=1 (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings

PG_ADMIN_DSN = os.environ.get("DIALGRAPH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES", "") not in ("", "0", "false")


def _pg_unavailable_reason() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc.__class__.__name__}"
    return None


_PG_REASON: str | None = _pg_unavailable_reason()


def need_postgres() -> None:
    """Skip (or fail under REQUIRE_POSTGRES=1) when PostgreSQL is not reachable."""
    if _PG_REASON is None:
        return
    if REQUIRE_POSTGRES:
        pytest.fail(f"REQUIRE_POSTGRES=1 but {_PG_REASON}")
    pytest.skip(_PG_REASON)


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (plain libpq DSN); dropped afterwards."""
    need_postgres()
    name = f"dialgraph_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'dialgraph.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL (SQLAlchemy async form), once SQLite and once PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'dialgraph.db'}"
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database (SQLite and PostgreSQL), closed afterwards."""
    database = Database(database_url)
    await database.upgrade()
    try:
        yield database
    finally:
        await database.aclose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Dev settings on the parametrized database, with no config file and no keys."""
    return Settings(data_dir=tmp_path, database_url=database_url, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see none of the developer's dialgraph or provider variables (a stray
    OPENAI_BASE_URL or DIALGRAPH_CONFIG must not change what a test does or reach out)."""
    aliases = {
        f.validation_alias.upper() for f in Settings.model_fields.values() if isinstance(f.validation_alias, str)
    }
    keep = {"DIALGRAPH_TEST_PG"}
    for name in list(os.environ):
        if (name.upper() in aliases or name.startswith("DIALGRAPH_")) and name not in keep:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running after it finishes."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    if leaked:  # a closing task still finishing (SQLAlchemy shields aiosqlite's close when a request
        # is cancelled mid-query: the close waits for the query) gets 5 s; one still running has leaked
        await asyncio.wait(leaked, timeout=5.0)
        leaked = [t for t in leaked if not t.done()]
    # SQLAlchemy's shielded graceful close of an aiosqlite connection that was then force-closed
    # (AsyncAdapt_terminate.terminate: the caller was cancelled, so it calls aiosqlite's stop())
    # waits on a close that the stopped worker thread never runs: it is the library's, not a leak
    # of ours, and the connection itself is gone.
    library = [t for t in leaked if getattr(t.get_coro(), "__qualname__", "").endswith("._terminate_graceful_close")]
    for t in library:
        t.cancel()
    leaked = [t for t in leaked if t not in library]
    if leaked:
        for t in leaked:
            t.cancel()
        pytest.fail(f"leaked tasks: {[t.get_coro() for t in leaked]}")
