"""Housekeeping jobs run from the CLI (``dialgraph db prune``) or a scheduler.

The open-source checkpoint savers keep every thread forever; ``prune`` deletes the
conversation threads whose newest checkpoint is older than
``Settings.checkpoint_retention_days``. Call rows and transcripts are not touched (they
are the business record); a caller ringing back after the retention period is simply
greeted as a new caller.

It also deletes the records of spent media stream tokens once the tokens have expired
(plus a margin for clocks that disagree between instances): an expired token is refused
on its expiry alone, so its record no longer guards anything.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AsyncExitStack

import structlog

from dialgraph.graphs.checkpoint import checkpointer, prune_threads
from dialgraph.server.core.call_store import prune_consumed_stream_tokens
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import utcnow
from dialgraph.server.core.settings import Settings

log = structlog.get_logger(__name__)

# A token record outlives its token by this much, so an instance whose clock runs behind
# the pruning host's still finds the record of a token it considers unexpired.
TOKEN_CLOCK_MARGIN = dt.timedelta(minutes=10)


async def prune(settings: Settings, *, now: dt.datetime | None = None) -> int:
    """Delete checkpoint threads older than the retention period and the records of spent
    stream tokens expired for longer than ``TOKEN_CLOCK_MARGIN``; returns how many threads."""
    older_than = dt.timedelta(days=settings.checkpoint_retention_days)
    async with AsyncExitStack() as stack:
        saver = await checkpointer(settings.effective_database_url, stack=stack, pool_size=2)
        deleted = await prune_threads(saver, older_than=older_than, now=now)
        db = Database(settings.effective_database_url, pool_size=1)
        stack.push_async_callback(db.aclose)
        tokens = await prune_consumed_stream_tokens(db, expired_before=(now or utcnow()) - TOKEN_CLOCK_MARGIN)
    log.info(
        "prune_done", threads=len(deleted), stream_tokens=tokens, retention_days=settings.checkpoint_retention_days
    )
    return len(deleted)
