"""Writes and reads of the call record and its transcript (one place for the SQL).

Privacy: the free-text columns a caller's words can reach (``REDACTED_COLUMNS`` of a call:
the transfer summary whispered to a human, the model's transfer reason, the heard text of
a reply in progress) and every event's text and data are redacted here, at the writer, so
no caller of ``update_call`` or ``add_events`` can forget (``server/core/redaction.py``;
the redactor of ``[redaction]`` when given, every category otherwise).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from dialgraph.server.core.db import Database
from dialgraph.server.core.enums import TERMINAL_STATUSES, CallStatus
from dialgraph.server.core.models import Call, CallEvent, ConsumedStreamToken, utcnow
from dialgraph.server.core.redaction import Redactor, default_redactor

# Columns of ``calls`` that may hold what a caller said (redacted by ``update_call``).
REDACTED_COLUMNS = ("transfer_summary", "transfer_reason", "reply_heard")


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
    status: str = CallStatus.RINGING,
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


async def update_call(db: Database, sid: str, *, redactor: Redactor | None = None, **values: Any) -> bool:
    """Set columns of a call (``REDACTED_COLUMNS`` redacted); returns False when the call is unknown."""
    for column in REDACTED_COLUMNS:
        if isinstance(values.get(column), str):
            values[column] = (redactor or default_redactor()).redact(values[column])
    if values.get("status") in TERMINAL_STATUSES and "ended_at" not in values:
        values["ended_at"] = utcnow()
    if values.get("status") == CallStatus.IN_PROGRESS and "answered_at" not in values:
        values["answered_at"] = utcnow()
    values["updated_at"] = utcnow()
    async with db.sessionmaker() as s, s.begin():
        result = await s.execute(update(Call).where(Call.sid == sid).values(**values))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def event_row(event: CallEvent) -> dict[str, Any]:
    """The ``call_events`` row of ``event`` for a Core INSERT, with the model's defaults for
    what was not set (Core leaves an explicit None alone) and ``at`` stamped now when unset:
    called when the event happens, it keeps that instant however late the row is written."""
    return {
        "call_sid": event.call_sid,
        "kind": event.kind or "turn",
        "role": event.role,
        "text": event.text,
        "interrupted": bool(event.interrupted),
        "at": event.at or utcnow(),
        "latency_ms": event.latency_ms,
        "data": event.data,
    }


_SET_STREAM = (
    update(Call)
    .where(Call.sid == bindparam("b_sid"))
    .values(stream_sid=bindparam("b_stream"), updated_at=bindparam("b_now"))
)


async def add_event_rows(db: Database, rows: list[dict[str, Any]], *, streams: Mapping[str, str] | None = None) -> None:
    """Insert ``event_row`` rows in order (ids follow it: the transcript's order), and set
    the ``stream_sid`` of the calls in ``streams``, in one transaction (executemany: an
    ORM flush costs ~10x the CPU, on the event loop)."""
    if not rows and not streams:
        return
    async with db.engine.begin() as conn:
        if streams:
            now = utcnow()
            await conn.execute(_SET_STREAM, [{"b_sid": s, "b_stream": m, "b_now": now} for s, m in streams.items()])
        if rows:
            await conn.execute(insert(CallEvent), rows)


async def add_events(db: Database, events: list[CallEvent], *, redactor: Redactor | None = None) -> None:
    """Append transcript turns / call events in one transaction, redacted (``redact_row``)."""
    r = redactor or default_redactor()
    await add_event_rows(db, [redact_row(event_row(e), r) for e in events])


def redact_row(row: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """An ``event_row`` as it may be stored: its text redacted (keypad keys by
    ``redact_digits``: a menu choice stays, a number typed does not) and the strings of its
    data too. Changes ``row`` in place and returns it."""
    text = row["text"]
    if text:
        row["text"] = redactor.redact_digits(text) if row["kind"] == "dtmf" else redactor.redact(text)
    if row["data"]:
        row["data"] = redactor.redact_data(row["data"])
    return row


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


async def consume_stream_token(db: Database, *, jti: str, call_sid: str, expires_at: dt.datetime) -> bool:
    """Spend a stream token: True the first time ``jti`` is presented, False ever after.

    One INSERT against the primary key, no read first: concurrent spenders on any instance
    serialise on the key (PostgreSQL) or the write lock (SQLite) and exactly one commits.
    Database errors other than the duplicate key propagate to the caller.
    """
    try:
        async with db.sessionmaker() as s, s.begin():
            await s.execute(insert(ConsumedStreamToken).values(jti=jti, call_sid=call_sid, expires_at=expires_at))
    except IntegrityError:
        return False
    return True


async def prune_consumed_stream_tokens(db: Database, *, expired_before: dt.datetime) -> int:
    """Delete the records of spent tokens that expired before ``expired_before`` (an
    expired token is refused before its id is looked up); returns how many."""
    async with db.sessionmaker() as s, s.begin():
        result = await s.execute(delete(ConsumedStreamToken).where(ConsumedStreamToken.expires_at < expired_before))
        return int(result.rowcount)  # type: ignore[attr-defined]
