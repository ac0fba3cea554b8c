"""Housekeeping jobs run from the CLI (``dialgraph db prune``) or a scheduler.

The open-source checkpoint savers keep every thread forever; ``prune`` deletes the
conversation threads whose newest checkpoint is older than
``Settings.checkpoint_retention_days``. Call rows and transcripts are not touched (they
are the business record); a caller ringing back after the retention period is simply
greeted as a new caller.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AsyncExitStack

import structlog

from graphs.checkpoint import checkpointer, prune_threads
from server.settings import Settings

log = structlog.get_logger(__name__)


async def prune(settings: Settings, *, now: dt.datetime | None = None) -> int:
    """Delete checkpoint threads older than the retention period; returns how many."""
    older_than = dt.timedelta(days=settings.checkpoint_retention_days)
    async with AsyncExitStack() as stack:
        saver = await checkpointer(settings.effective_database_url, stack=stack, pool_size=2)
        deleted = await prune_threads(saver, older_than=older_than, now=now)
    log.info("prune_done", threads=len(deleted), retention_days=settings.checkpoint_retention_days)
    return len(deleted)
