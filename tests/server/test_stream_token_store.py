"""Spent stream tokens in SQL: one INSERT decides, across engines (instances) racing on
SQLite and PostgreSQL; ``dialgraph db prune`` deletes the records of expired tokens only."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlalchemy import select

from dialgraph.server.core.call_store import consume_stream_token
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import ConsumedStreamToken
from dialgraph.server.core.settings import Settings
from dialgraph.server.maintenance import TOKEN_CLOCK_MARGIN, prune

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
SID = "CA" + "0123456789abcdef" * 2


async def test_one_of_many_racing_instances_spends_a_token(database_url: str, db: Database) -> None:
    # One engine per "instance": the INSERTs really run on separate connections at once.
    instances = [Database(database_url, pool_size=1) for _ in range(6)]
    try:
        won = await asyncio.gather(
            *(consume_stream_token(i, jti="same-id", call_sid=SID, expires_at=NOW) for i in instances)
        )
    finally:
        await asyncio.gather(*(i.aclose() for i in instances))
    assert sorted(won) == [False] * 5 + [True]
    assert await consume_stream_token(db, jti="same-id", call_sid=SID, expires_at=NOW) is False
    assert await consume_stream_token(db, jti="other-id", call_sid=SID, expires_at=NOW) is True


async def jtis(db: Database) -> set[str]:
    async with db.sessionmaker() as s:
        return set(await s.scalars(select(ConsumedStreamToken.jti)))


async def test_prune_deletes_records_of_expired_tokens(tmp_path: Path, database_url: str, db: Database) -> None:
    settings = Settings(data_dir=tmp_path, database_url=database_url, _env_file=None)  # type: ignore[call-arg]
    expiries = {
        "long-expired": NOW - TOKEN_CLOCK_MARGIN - dt.timedelta(seconds=1),
        "just-expired": NOW - dt.timedelta(seconds=1),  # inside the clock margin: kept
        "live": NOW + dt.timedelta(seconds=60),
    }
    for jti, expires_at in expiries.items():
        assert await consume_stream_token(db, jti=jti, call_sid=SID, expires_at=expires_at)

    await prune(settings, now=NOW)
    assert await jtis(db) == {"just-expired", "live"}
    # A live token's record is still there: it cannot be spent a second time.
    assert await consume_stream_token(db, jti="live", call_sid=SID, expires_at=expiries["live"]) is False

    await prune(settings, now=NOW + TOKEN_CLOCK_MARGIN + dt.timedelta(seconds=61))
    assert await jtis(db) == set()
