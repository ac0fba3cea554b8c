"""Retention on SQLite and PostgreSQL: each kind past its ``[retention]`` period is pruned in
batches, newer data stays; ``dialgraph db prune`` prints what went per kind; the app's
scheduled task prunes; on PostgreSQL one instance of two holds the advisory lock."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from langgraph.checkpoint.base import empty_checkpoint
from sqlalchemy import event, select

from dialgraph.graphs.checkpoint import checkpointer
from dialgraph.server.app import create_app
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Call, CallEvent, Campaign, CampaignContact, Message, OutboundAudit
from dialgraph.server.core.settings import Settings
from dialgraph.server.privacy.retention import (
    RETIRED_ANALYSIS,
    RetentionTask,
    checkpoint_days,
    prune_all,
    prune_if_leader,
    retention_lock,
)
from tests.server.test_app import speechless

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(days=31)
NEW = NOW - dt.timedelta(days=29)
EPOCH = dt.datetime(1582, 10, 15, tzinfo=dt.UTC)
THIRTY = {
    "transcripts_days": 30,
    "checkpoints_days": 30,
    "messages_days": 30,
    "recordings_days": 30,
    "outbound_days": 30,
    "batch": 2,  # several batches per kind
}


def checkpoint_id_at(at: dt.datetime) -> str:
    """A LangGraph-style UUIDv6 checkpoint id for the instant ``at``."""
    ticks = (at - EPOCH) // dt.timedelta(microseconds=1) * 10
    high, mid, low = ticks >> 28, (ticks >> 12) & 0xFFFF, ticks & 0xFFF
    return f"{high:08x}-{mid:04x}-6{low:03x}-8000-{0:012x}"


def settings_for(tmp_path: Path, url: str, **retention: Any) -> Settings:
    return Settings(data_dir=tmp_path, database_url=url, retention=retention or THIRTY, _env_file=None)  # type: ignore[call-arg]


async def seed(settings: Settings, db: Database) -> None:
    """Per kind: 5 old items (31 days) and 1 new one (29 days)."""
    async with db.sessionmaker() as s, s.begin():
        s.add(Campaign(id="camp", name="c", flow="sales", from_number="+15550001000", status="completed"))
        for age, tag in ((OLD, "old"), (NEW, "new")):
            for i in range(5 if tag == "old" else 1):
                sid = f"CA{tag}{i}"
                s.add(
                    Call(
                        sid=sid,
                        from_number=f"+1555010{i:04d}",
                        to_number="+15550001000",
                        thread_id=sid,
                        transfer_summary=f"{tag} summary",
                        reply_heard=f"{tag} heard",
                        context={"name": f"{tag} person"},
                        analysis={"summary": f"{tag} caller booked", "fields": {}},
                        started_at=age,
                    )
                )
                await s.flush()
                s.add(CallEvent(call_sid=sid, role="caller", text=f"{tag} words", at=age))
                s.add(Message(from_number="+15550109999", body=f"{tag} message", created_at=age))
                s.add(OutboundAudit(decision="placed", rule="r", to_number="+15550109999", at=age))
                s.add(
                    CampaignContact(
                        campaign_id="camp",
                        line=i,
                        to_number=f"+1555020{i:04d}" + ("0" if tag == "old" else "1"),
                        context={"name": f"{tag} callee"},
                        state="done",
                        updated_at=age,
                    )
                )
    # a contact still queued keeps its context however old (it is yet to be called)
    async with db.sessionmaker() as s, s.begin():
        s.add(CampaignContact(campaign_id="camp", line=99, to_number="+15550300000", context={"name": "queued"},
                              state="queued", updated_at=OLD))  # fmt: skip
    async with AsyncExitStack() as stack:
        saver = await checkpointer(settings.effective_database_url, stack=stack, pool_size=2)
        for thread, at in (("t-old", OLD), ("t-new", NEW)):
            checkpoint = empty_checkpoint()
            checkpoint["id"] = checkpoint_id_at(at)
            await saver.aput(
                {"configurable": {"thread_id": thread, "checkpoint_ns": ""}},
                checkpoint,
                {"source": "input", "step": -1},
                {},
            )
    rec = settings.data_dir / "recordings" / "2026-10"
    rec.mkdir(parents=True)
    for name, at in (("old1.wav", OLD), ("old2.wav", OLD), ("new.wav", NEW)):
        (rec / name).write_bytes(b"RIFF")
        os.utime(rec / name, (at.timestamp(), at.timestamp()))


async def column(db: Database, col: Any) -> list[Any]:
    async with db.sessionmaker() as s:
        return sorted((await s.scalars(select(col))).all(), key=str)


async def threads(settings: Settings) -> set[str]:
    async with AsyncExitStack() as stack:
        saver = await checkpointer(settings.effective_database_url, stack=stack, pool_size=2)
        return {t.config["configurable"]["thread_id"] async for t in saver.alist(None)}


async def test_each_kind_past_its_period_goes_newer_stays(tmp_path: Path, database_url: str, db: Database) -> None:
    settings = settings_for(tmp_path, database_url)
    await seed(settings, db)
    report = await prune_all(settings, db, now=NOW)
    assert report.as_dict() == {
        "transcript_events": 5,
        "call_texts": 5,
        "checkpoint_threads": 1,
        "messages": 5,
        "recordings": 2,
        "outbound_audit": 5,
        "outbound_context": 10,  # 5 calls + 5 finished contacts
        "stream_tokens": 0,
    }
    assert await column(db, CallEvent.text) == ["new words"]
    assert await column(db, Message.body) == ["new message"]
    assert await column(db, OutboundAudit.at) == [NEW]
    assert len(await column(db, Call.sid)) == 6  # call rows are the business record: all kept
    assert await column(db, Call.transfer_summary) == [None] * 5 + ["new summary"]
    assert await column(db, Call.reply_heard) == [None] * 5 + ["new heard"]
    assert await column(db, Call.context) == [None] * 5 + [{"name": "new person"}]
    analyses = await column(db, Call.analysis)  # the summary goes with the transcript, as a marker
    assert analyses.count(RETIRED_ANALYSIS) == 5 and {"summary": "new caller booked", "fields": {}} in analyses
    contexts = await column(db, CampaignContact.context)
    assert contexts.count(None) == 5 and {"name": "new callee"} in contexts and {"name": "queued"} in contexts
    assert await threads(settings) == {"t-new"}
    assert [p.name for p in (settings.data_dir / "recordings").rglob("*.wav")] == ["new.wav"]
    # nothing left to do: a second run (or a second instance) removes nothing
    assert set((await prune_all(settings, db, now=NOW)).as_dict().values()) == {0}
    # two days on, the new ones are past the period too
    later = await prune_all(settings, db, now=NOW + dt.timedelta(days=2))
    assert later.transcript_events == 1 and later.messages == 1 and later.checkpoint_threads == 1
    assert later.recordings == 1 and later.outbound_audit == 1


async def test_zero_keeps_forever_and_the_old_checkpoint_key_still_works(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    forever = dict.fromkeys(("transcripts_days", "messages_days", "recordings_days", "outbound_days"), 0)
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path, database_url=database_url, retention=forever, checkpoint_retention_days=30, _env_file=None
    )
    assert checkpoint_days(settings) == 30
    await seed(settings, db)
    report = await prune_all(settings, db, now=NOW)
    assert report.checkpoint_threads == 1  # the deprecated key decides
    assert report.transcript_events == report.messages == report.recordings == report.outbound_audit == 0
    assert len(await column(db, CallEvent.id)) == 6 and len(await column(db, Message.id)) == 6
    # [retention] checkpoints_days wins over the old key; 0 keeps forever
    both = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path, retention={"checkpoints_days": 0}, checkpoint_retention_days=1, _env_file=None
    )
    assert checkpoint_days(both) is None


def test_db_prune_prints_per_kind(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'dialgraph.db'}"
    settings = settings_for(tmp_path, url)

    async def prepare() -> None:
        db = Database(url)
        await db.upgrade()
        try:
            await seed(settings, db)
        finally:
            await db.aclose()

    asyncio.run(prepare())
    env = {**os.environ, "DATABASE_URL": url, "DIALGRAPH_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env["DIALGRAPH_RETENTION"] = (
        '{"transcripts_days": 20, "messages_days": 0, "checkpoints_days": 20, "outbound_days": 0}'
    )
    env.pop("DIALGRAPH_CONFIG", None)
    cmd = [sys.executable, "-m", "dialgraph.server.cli", "db", "prune"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # the real clock is past both seeded ages: everything of a kind with a period goes
    assert "transcript_events: 6 (older than 20 days)" in out, out
    assert "messages: 0 (kept forever)" in out
    assert "checkpoint_threads: 2 (older than 20 days)" in out
    assert "recordings: 3 (older than 30 days)" in out
    assert "outbound_audit: 0 (kept forever)" in out


async def test_the_app_prunes_on_a_schedule(tmp_path: Path, database_url: str, db: Database) -> None:
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        database_url=database_url,
        retention={**THIRTY, "prune_interval_h": 0.0004},  # 1.44 s: first run within it
        _env_file=None,
    )
    async with db.sessionmaker() as s, s.begin():
        s.add(Message(from_number="+15550109999", body="ancient", created_at=NOW - dt.timedelta(days=400)))
        s.add(Message(from_number="+15550109999", body="fresh"))
    app = create_app(settings, overrides=speechless(db=db, runners={}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t"),
    ):
        task: RetentionTask = app.state.retention
        for _ in range(100):
            if task.rounds >= 2:
                break
            await asyncio.sleep(0.1)
        assert task.rounds >= 2 and task.failed == 0
        assert await column(db, Message.body) == ["fresh"]
    assert task._task is None  # stopped with the app


async def test_one_instance_of_two_prunes_under_the_advisory_lock(tmp_path: Path, pg_dsn: str) -> None:
    url = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    settings = settings_for(tmp_path, url)
    first, second = Database(url), Database(url)
    try:
        await first.upgrade()
        await seed(settings, first)
        async with retention_lock(first) as a:
            assert a is True
            async with retention_lock(second) as b:
                assert b is False  # never waits: the other instance skips this round
            assert await prune_if_leader(settings, second, now=NOW) is None
            assert len(await column(second, Message.id)) == 6  # it pruned nothing
            # a scheduled task on the second instance skips while the first holds the lock
            busy = Settings(  # type: ignore[call-arg]
                data_dir=tmp_path, database_url=url, retention={**THIRTY, "prune_interval_h": 0.0002}, _env_file=None
            )
            skipper = RetentionTask(busy, second)
            skipper.start()
            try:
                for _ in range(100):
                    if skipper.skipped >= 1:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await skipper.aclose()
            assert skipper.skipped >= 1 and skipper.rounds == 0
        # released: now the second instance is the one that prunes
        report = await prune_if_leader(settings, second, now=NOW)
        assert report is not None and report.messages == 5
        # the two racing: exactly one takes the lock while the other holds it
        results = await asyncio.gather(*(_hold_briefly(d) for d in (first, second)))
        assert sorted(results) == [False, True]
    finally:
        await first.aclose()
        await second.aclose()


async def _hold_briefly(db: Database) -> bool:
    async with retention_lock(db) as got:
        await asyncio.sleep(0.3)  # the other one asks meanwhile
        return got


async def test_batches_stay_short(tmp_path: Path, database_url: str, db: Database) -> None:
    """``batch = 2`` over 5 old events: three DELETE statements (2, 2, 1 rows), each its own
    transaction; the newer event kept."""
    settings = settings_for(tmp_path, database_url)
    await seed(settings, db)
    deletes: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM CALL_EVENTS"):
            deletes.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        report = await prune_all(settings, db, now=NOW)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    assert report.transcript_events == 5 and len(deletes) == 3 and "LIMIT" in deletes[0].upper()
    assert await column(db, CallEvent.text) == ["new words"]
