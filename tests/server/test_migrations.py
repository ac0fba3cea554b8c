"""Migrations bring an empty SQLite and an empty PostgreSQL database to head."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from dialgraph.server.cli import main as cli_main
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Base

EXPECTED = {
    "calls",
    "call_events",
    "contacts",
    "appointments",
    "messages",
    "consumed_stream_tokens",
    "alembic_version",
}


async def test_upgrade_empty_database_to_head(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.upgrade()
        async with db.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert tables >= EXPECTED
            # The schema the migrations build is the schema the models describe.
            for table in Base.metadata.sorted_tables:
                cols = {c["name"] for c in await conn.run_sync(lambda c, t=table.name: inspect(c).get_columns(t))}
                assert cols == {c.name for c in table.columns}, table.name
            uniques = await conn.run_sync(lambda c: inspect(c).get_unique_constraints("appointments"))
            assert any(u["column_names"] == ["slot_key"] for u in uniques)
        await db.upgrade()  # idempotent
        assert await db.ping()
    finally:
        await db.aclose()


def test_cli_db_upgrade(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DIALGRAPH_DATA_DIR", str(tmp_path / "d"))
    assert cli_main(["db", "upgrade"]) == 0
    assert (tmp_path / "d" / "dialgraph.db").exists()
    assert "database at head" in capsys.readouterr().out


async def test_ping_reports_unreachable_database(tmp_path) -> None:
    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/none")
    try:
        assert await db.ping() is False
    finally:
        await db.aclose()
