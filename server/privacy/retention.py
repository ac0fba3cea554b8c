"""Retention: delete (or blank) each kind of personal data past its period.

The periods are ``[retention]`` (``server/core/retention.py``). ``prune_all`` runs every kind
once; ``dialgraph db prune`` calls it (``server/maintenance.py``), and so does
``RetentionTask``, which every instance runs every ``prune_interval_h`` hours: on
PostgreSQL the instance that takes the advisory lock ``RETENTION_LOCK`` prunes, the others
skip that round (``pg_try_advisory_lock`` never waits); on SQLite (one instance) it just runs.

Deletes go in batches of ``[retention] batch`` rows, each its own short transaction
(``DELETE ... WHERE key IN (SELECT key ... LIMIT n)``), so no table is locked for long and
live calls keep writing. Running twice, or on two instances at once, is harmless: every
step only removes what is already past its period.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Text, cast, delete, null, or_, select, text, update
from sqlalchemy.orm import InstrumentedAttribute

from dialgraph.graphs.checkpoint import checkpointer, prune_threads
from dialgraph.server.core.call_store import prune_consumed_stream_tokens
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Call, CallEvent, CampaignContact, Message, OutboundAudit, utcnow
from dialgraph.server.core.settings import Settings

log = structlog.get_logger(__name__)

# pg_try_advisory_lock key of the scheduled prune ("dialgrap" as a big-endian int64).
RETENTION_LOCK = int.from_bytes(b"dialgrap", "big")
# A token record outlives its token by this much, so an instance whose clock runs behind
# the pruning host's still finds the record of a token it considers unexpired.
TOKEN_CLOCK_MARGIN = dt.timedelta(minutes=10)
# A post-call analysis past the transcript period becomes this marker (not NULL, or the
# analysis sweeper would write a new one); compared as stored JSON text, so a pruned row
# is not blanked again.
RETIRED_ANALYSIS = {"failed": True, "reason": "retention"}
RETIRED_ANALYSIS_TEXT = json.dumps(RETIRED_ANALYSIS)
RECORDINGS_DIR = "recordings"
FIRST_RUN_MAX_S = 600.0


@dataclass(slots=True)
class PruneReport:
    """What one prune removed, per kind (rows, threads or files)."""

    transcript_events: int = 0  # call_events rows deleted
    call_texts: int = 0  # call rows whose stored words (summary, reason, heard text) were blanked
    checkpoint_threads: int = 0  # LangGraph threads deleted
    messages: int = 0  # messages deleted
    recordings: int = 0  # files deleted under data_dir/recordings
    outbound_audit: int = 0  # outbound_audit rows deleted
    outbound_context: int = 0  # calls.context + campaign_contacts.context blanked
    stream_tokens: int = 0  # records of expired media stream tokens deleted

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def lines(self, settings: Settings) -> list[str]:
        """One human line per kind, with its period (for ``dialgraph db prune``)."""
        r = settings.retention
        periods = {
            "transcript_events": r.transcripts_days,
            "call_texts": r.transcripts_days,
            "checkpoint_threads": checkpoint_days(settings),
            "messages": r.messages_days,
            "recordings": r.recordings_days,
            "outbound_audit": r.outbound_days,
            "outbound_context": r.outbound_days,
        }
        out = []
        for kind, count in self.as_dict().items():
            if kind == "stream_tokens":
                out.append(f"{kind}: {count} (expired)")
                continue
            days = periods[kind]
            out.append(f"{kind}: {count}" + (f" (older than {days:g} days)" if days else " (kept forever)"))
        return out


def checkpoint_days(settings: Settings) -> float | None:
    """``[retention] checkpoints_days`` when given, else the deprecated top-level
    ``checkpoint_retention_days`` when given, else the default (30)."""
    if "checkpoints_days" in settings.retention.model_fields_set:
        return settings.retention.checkpoints_days
    if "checkpoint_retention_days" in settings.model_fields_set:
        return settings.checkpoint_retention_days
    return settings.retention.checkpoints_days


def _cutoff(now: dt.datetime, days: float | None) -> dt.datetime | None:
    return None if not days else now - dt.timedelta(days=days)


async def _batched(db: Database, make: Callable[[int], Any], batch: int) -> int:
    """Run ``make(batch)`` (a DELETE/UPDATE over at most ``batch`` rows) until it touches
    fewer than ``batch`` rows, one short transaction each; the rows touched."""
    total = 0
    while True:
        async with db.engine.begin() as conn:
            result = await conn.execute(make(batch))
        n = int(getattr(result, "rowcount", 0) or 0)
        total += n
        if n < batch:
            return total
        await asyncio.sleep(0)  # let live calls' writers in between batches


def _delete_where(model: Any, key: InstrumentedAttribute[Any], where: ColumnElement[bool]) -> Callable[[int], Any]:
    return lambda n: delete(model).where(key.in_(select(key).where(where).limit(n)))


def _blank_where(
    model: Any, key: InstrumentedAttribute[Any], where: ColumnElement[bool], values: dict[str, Any]
) -> Callable[[int], Any]:
    return lambda n: update(model).where(key.in_(select(key).where(where).limit(n))).values(**values)


async def prune_transcripts(db: Database, cutoff: dt.datetime, batch: int) -> tuple[int, int]:
    """Delete call events (transcript turns included) from before ``cutoff``; blank the words
    kept on call rows started before it. The call rows stay. Returns (events, calls)."""
    events = await _batched(db, _delete_where(CallEvent, CallEvent.id, CallEvent.at < cutoff), batch)
    worded = or_(
        Call.transfer_summary.is_not(None),
        Call.transfer_reason.is_not(None),
        Call.reply_heard.is_not(None),
        Call.analysis.is_not(None) & (cast(Call.analysis, Text) != RETIRED_ANALYSIS_TEXT),
    )
    calls = await _batched(
        db,
        _blank_where(
            Call,
            Call.sid,
            (Call.started_at < cutoff) & worded,
            # the post-call summary goes with the transcript; a marker keeps the sweeper off it
            {"transfer_summary": None, "transfer_reason": None, "reply_heard": None, "analysis": RETIRED_ANALYSIS},
        ),
        batch,
    )
    return events, calls


async def prune_messages(db: Database, cutoff: dt.datetime, batch: int) -> int:
    return await _batched(db, _delete_where(Message, Message.id, Message.created_at < cutoff), batch)


async def prune_outbound(db: Database, cutoff: dt.datetime, batch: int) -> tuple[int, int]:
    """Delete outbound audit rows from before ``cutoff``; blank what the agent was told about
    callees (calls started, finished campaign contacts last touched, before it)."""
    audit = await _batched(db, _delete_where(OutboundAudit, OutboundAudit.id, OutboundAudit.at < cutoff), batch)
    # SQL NULL (not JSON null), so a blanked row no longer matches IS NOT NULL
    calls = await _batched(
        db,
        _blank_where(Call, Call.sid, (Call.started_at < cutoff) & Call.context.is_not(None), {"context": null()}),
        batch,
    )
    contacts = await _batched(
        db,
        _blank_where(
            CampaignContact,
            CampaignContact.id,
            (CampaignContact.state == "done")
            & (CampaignContact.updated_at < cutoff)
            & CampaignContact.context.is_not(None),
            {"context": null()},
        ),
        batch,
    )
    return audit, calls + contacts


def prune_recordings(folder: Path, cutoff: dt.datetime) -> int:
    """Delete the files under ``folder`` last modified before ``cutoff`` (blocking: run it in
    a thread); empty sub-folders left behind go too. The files deleted."""
    if not folder.is_dir():
        return 0
    limit = cutoff.timestamp()
    removed = 0
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = Path(root, name)
            with contextlib.suppress(FileNotFoundError):  # another instance took it first
                if path.lstat().st_mtime < limit:
                    path.unlink()
                    removed += 1
        for name in dirs:
            with contextlib.suppress(OSError):  # not empty, or already gone
                Path(root, name).rmdir()
    return removed


async def prune_checkpoints(settings: Settings, cutoff_days: float, now: dt.datetime) -> int:
    async with AsyncExitStack() as stack:
        saver = await checkpointer(settings.effective_database_url, stack=stack, pool_size=2)
        return len(await prune_threads(saver, older_than=dt.timedelta(days=cutoff_days), now=now))


async def prune_all(settings: Settings, db: Database, *, now: dt.datetime | None = None) -> PruneReport:
    """Every kind past its period, once (see the module docstring); logs the counts."""
    now = now or utcnow()
    r = settings.retention
    report = PruneReport()
    if cutoff := _cutoff(now, r.transcripts_days):
        report.transcript_events, report.call_texts = await prune_transcripts(db, cutoff, r.batch)
    if days := checkpoint_days(settings):
        report.checkpoint_threads = await prune_checkpoints(settings, days, now)
    if cutoff := _cutoff(now, r.messages_days):
        report.messages = await prune_messages(db, cutoff, r.batch)
    if cutoff := _cutoff(now, r.recordings_days):
        report.recordings = await asyncio.to_thread(prune_recordings, settings.data_dir / RECORDINGS_DIR, cutoff)
    if cutoff := _cutoff(now, r.outbound_days):
        report.outbound_audit, report.outbound_context = await prune_outbound(db, cutoff, r.batch)
    report.stream_tokens = await prune_consumed_stream_tokens(db, expired_before=now - TOKEN_CLOCK_MARGIN)
    log.info("retention_pruned", **report.as_dict())
    return report


# --- one instance at a time -------------------------------------------------------------------
@asynccontextmanager
async def retention_lock(db: Database) -> AsyncIterator[bool]:
    """Yields True when this instance may prune now: on PostgreSQL it holds the session
    advisory lock ``RETENTION_LOCK`` (taken without waiting; released on the way out, or by
    the server if the connection dies), on SQLite always."""
    if db.is_sqlite:
        yield True
        return
    async with db.engine.connect() as conn:
        got = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": RETENTION_LOCK}))
        await conn.commit()
        try:
            yield got
        finally:
            if got:
                try:
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RETENTION_LOCK})
                    await conn.commit()
                except BaseException:
                    await conn.invalidate()  # closing the session releases the lock
                    raise


async def prune_if_leader(settings: Settings, db: Database, *, now: dt.datetime | None = None) -> PruneReport | None:
    """``prune_all`` when this instance holds the retention lock; None when another does."""
    async with retention_lock(db) as leader:
        if not leader:
            log.info("retention_prune_skipped", reason="another instance is pruning")
            return None
        return await prune_all(settings, db, now=now)


class RetentionTask:
    """The scheduled prune of one instance: the first run 5-10 minutes after start (a random
    half to whole of ``min(interval, 10 min)``, so instances started together spread out
    and a short-lived process never prunes), then every ``[retention] prune_interval_h``
    hours. A failed round is logged and the next one runs."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = settings
        self._db = db
        self._interval_s = settings.retention.prune_interval_h * 3600
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # rounds this instance pruned
        self.skipped = 0  # rounds another instance held the lock
        self.failed = 0

    def start(self) -> None:
        if self._task is None and self._interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="retention-prune")

    async def aclose(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()  # a prune is batches of short transactions: safe to stop between
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = random.uniform(0.5, 1.0) * min(FIRST_RUN_MAX_S, self._interval_s)
        while not await self._stopped_within(delay):
            try:
                report = await prune_if_leader(self._settings, self._db)
            except Exception as exc:  # the database away for a while must not end the schedule
                self.failed += 1
                log.warning("retention_prune_failed", error=type(exc).__name__)
            else:
                if report is None:
                    self.skipped += 1
                else:
                    self.rounds += 1
            delay = self._interval_s

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()


__all__ = [
    "RETENTION_LOCK",
    "PruneReport",
    "RetentionTask",
    "checkpoint_days",
    "prune_all",
    "prune_if_leader",
    "retention_lock",
]
