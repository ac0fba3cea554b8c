"""Housekeeping jobs run from the CLI (``dialgraph db prune``) or a scheduler.

``prune`` applies ``[retention]`` (``server/core/retention.py``) to every kind of personal
data once: call events and the words kept on call rows, conversation checkpoints, messages,
recordings, the outbound audit and callee context (``server/privacy/retention.py`` says
what each kind covers). Call rows are the business record and stay; a caller ringing back
after the checkpoint period is simply greeted as a new caller. Each instance also runs it
every ``[retention] prune_interval_h`` hours (``RetentionTask``, one instance at a time on
PostgreSQL).

It also deletes the records of spent media stream tokens once the tokens have expired
(plus a margin for clocks that disagree between instances): an expired token is refused
on its expiry alone, so its record no longer guards anything.
"""

from __future__ import annotations

import datetime as dt

from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from dialgraph.server.privacy.retention import TOKEN_CLOCK_MARGIN, PruneReport, prune_all

__all__ = ["TOKEN_CLOCK_MARGIN", "PruneReport", "prune", "prune_report"]


async def prune_report(settings: Settings, *, now: dt.datetime | None = None) -> PruneReport:
    """Prune every kind past its retention period; what was removed, per kind."""
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        return await prune_all(settings, db, now=now)
    finally:
        await db.aclose()


async def prune(settings: Settings, *, now: dt.datetime | None = None) -> int:
    """``prune_report``, returning only how many checkpoint threads were deleted (the
    figure this function has always returned)."""
    return (await prune_report(settings, now=now)).checkpoint_threads
