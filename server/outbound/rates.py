"""A token schedule shared by every instance, in the ``rate_slots`` table.

Each key (``account``: Twilio's calls per second for the whole account) has one row whose
``next_at`` is the earliest instant the next caller may go. Taking a slot reserves
``max(now, next_at)`` and moves ``next_at`` one interval past it, in one transaction under
the row's lock, so reserved instants are at least one interval apart and never shared,
whichever instance (or process) takes them:

- PostgreSQL: ``SELECT ... FOR UPDATE`` on the row (inserted on first use, ON CONFLICT DO
  NOTHING), so a second taker waits for the first to commit and reads its ``next_at``;
- SQLite: the transaction's first statement is that INSERT, a write, which takes the
  database's write lock before anything is read; a second writer waits (busy_timeout).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import RateSlot


async def take_slot(db: Database, key: str, interval_s: float, now: dt.datetime, *, max_wait_s: float) -> float | None:
    """Reserve the next slot of ``key``'s schedule; return how long to wait for it (0.0 when
    it is now), or None, reserving nothing, when that would be longer than ``max_wait_s``."""
    if interval_s < 0:
        raise ValueError("interval_s must be >= 0")
    insert = postgresql.insert(RateSlot) if not db.is_sqlite else sqlite.insert(RateSlot)
    async with db.engine.begin() as conn:
        await conn.execute(insert.values(key=key, next_at=now).on_conflict_do_nothing(index_elements=["key"]))
        query = select(RateSlot.next_at).where(RateSlot.key == key)
        if not db.is_sqlite:
            query = query.with_for_update()
        next_at = (await conn.execute(query)).scalar_one()
        at = max(now, next_at)
        wait = (at - now).total_seconds()
        if wait > max_wait_s:
            await conn.rollback()
            return None
        await conn.execute(
            update(RateSlot).where(RateSlot.key == key).values(next_at=at + dt.timedelta(seconds=interval_s))
        )
    return wait
