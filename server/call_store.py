"""Writes and reads of the call record and its transcript (one place for the SQL)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, update

from server.db import Database
from server.models import Call, CallEvent, utcnow

TERMINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


async def record_call(
    db: Database,
    *,
    sid: str,
    direction: str,
    from_number: str,
    to_number: str,
    flow: str,
    thread_id: str,
    previous_thread_id: str | None = None,
    status: str = "ringing",
) -> Call:
    """Create the call row, or return the existing one (Twilio retries webhooks)."""
    async with db.sessionmaker() as s, s.begin():
        call = await s.get(Call, sid)
        if call is None:
            call = Call(
                sid=sid,
                direction=direction,
                from_number=from_number,
                to_number=to_number,
                flow=flow,
                thread_id=thread_id,
                previous_thread_id=previous_thread_id,
                status=status,
            )
            s.add(call)
        return call


async def get_call(db: Database, sid: str) -> Call | None:
    async with db.sessionmaker() as s:
        return await s.get(Call, sid)


async def update_call(db: Database, sid: str, **values: Any) -> bool:
    """Set columns of a call; returns False when the call is unknown."""
    if values.get("status") in TERMINAL_STATUSES and "ended_at" not in values:
        values["ended_at"] = utcnow()
    if values.get("status") == "in-progress" and "answered_at" not in values:
        values["answered_at"] = utcnow()
    values["updated_at"] = utcnow()
    async with db.sessionmaker() as s, s.begin():
        result = await s.execute(update(Call).where(Call.sid == sid).values(**values))
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def add_events(db: Database, events: list[CallEvent]) -> None:
    """Append transcript turns / call events in one transaction."""
    if not events:
        return
    async with db.sessionmaker() as s, s.begin():
        s.add_all(events)


async def transcript(db: Database, sid: str) -> list[CallEvent]:
    async with db.sessionmaker() as s:
        rows = await s.scalars(select(CallEvent).where(CallEvent.call_sid == sid).order_by(CallEvent.id))
        return list(rows)


async def last_call_from(db: Database, number: str, *, since: dt.datetime, exclude_sid: str = "") -> Call | None:
    """The most recent earlier call from ``number`` started after ``since`` (callback)."""
    async with db.sessionmaker() as s:
        row = await s.scalars(
            select(Call)
            .where(Call.from_number == number, Call.started_at >= since, Call.sid != exclude_sid)
            .order_by(Call.started_at.desc())
            .limit(1)
        )
        return row.first()
