"""The call log API (bearer admin token): list calls, list the live ones, follow one live.

* ``GET /api/calls``: filters ``flow``, ``direction``, ``outcome``, ``status``,
  ``campaign_id``, ``from`` / ``to`` (ISO date or date-time on ``started_at``; a date ``to``
  takes the whole day), ``phone`` (an E.164 number, matched exactly against the From or To
  number, or 4-15 digits, matched as the end of either); newest first, ``limit`` (1-200) per
  page, ``next_cursor`` for the next page and ``total`` for all the filters match. The cursor
  is opaque (the last item's ``started_at`` and ``sid``): keyset paging, so calls that start
  while a client pages never repeat or shift an item of a later page.
* ``GET /api/calls/live``: the calls in progress (``limits.LIVE_SQL``, the partial index
  ``ix_calls_live``), with ``live_s``.
* ``GET /api/calls/{sid}/events``: Server-Sent Events of one call as it happens. Every
  instance serves it: it tails ``call_events`` in SQL (``id`` > the last one sent, every
  ``POLL_S``; ``Last-Event-ID`` resumes after a reconnect) and adds the caller's interim
  text (``event: interim``, no id: never stored) when the call's media session is on THIS
  process (``server.core.live.hub``). The stream ends (``event: end``) once the call's status
  is terminal and nothing more has arrived for ``END_GRACE_S``.

Numbers are shown masked (``mask_number``: ``+9198******21``); every text that leaves
passes the ``Redactor`` (``[redaction]``) again, whoever wrote it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, func, or_, select, text

from dialgraph.server.core.db import Database
from dialgraph.server.core.enums import TERMINAL_STATUSES, CallOutcome, CallStatus
from dialgraph.server.core.limits import LIVE_HORIZON, LIVE_SQL
from dialgraph.server.core.live import CallerSpeech, LiveHub, hub
from dialgraph.server.core.models import Call, CallEvent, utcnow
from dialgraph.server.core.redaction import Redactor, redactor_for
from dialgraph.server.deps import DbDep, SettingsDep
from dialgraph.server.routes.admin import require_admin

router = APIRouter(prefix="/api/calls", tags=["calls"], dependencies=[Depends(require_admin)])

MAX_LIVE = 1000  # live calls listed at most (the deployment's concurrency is far below)
POLL_S = 0.5  # the event stream's SQL poll (the event writer stores about once a second)
END_GRACE_S = 2.0  # after the terminal status: how long late events are still waited for
KEEPALIVE_S = 15.0  # a comment line when nothing else was sent (proxies close idle streams)
TAIL_BATCH = 500

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SUFFIX = re.compile(r"^\d{4,15}$")
_FLOW = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


# --- masking -----------------------------------------------------------------------------------
def mask_number(number: str | None) -> str:
    """A phone number as the API shows it: the country and first digits, then ``*``, then
    the last two (``+919812345621`` -> ``+9198******21``). Short numbers keep less; anything
    that is not a number (``anonymous``, a SIP name) is shown as ``***``, empty as empty."""
    if not number:
        return ""
    value = number.strip()
    plus = value.startswith("+")
    digits = value[1:] if plus else value
    if not digits.isdigit():
        return "***"
    n = len(digits)
    head = 4 if n >= 10 else max(0, n - 6)
    tail = 2 if n >= 6 else 0
    return ("+" if plus else "") + digits[:head] + "*" * (n - head - tail) + digits[n - tail :]


# --- the shapes ---------------------------------------------------------------------------------
class CallItem(BaseModel):
    sid: str
    direction: str
    flow: str
    from_number: str  # masked
    to_number: str  # masked
    status: str
    outcome: str | None
    campaign_id: str | None
    started_at: dt.datetime
    answered_at: dt.datetime | None
    ended_at: dt.datetime | None
    duration_s: float | None  # from answer (else start) to end; None while it lasts
    turns: int  # transcript turns stored (caller and agent)
    cost_total: float | None = None  # when known (calls.cost_total)


class LiveCallItem(CallItem):
    live_s: float  # since answered (else since it started)


class CallPage(BaseModel):
    items: list[CallItem]
    next_cursor: str | None
    total: int


class LiveCalls(BaseModel):
    items: list[LiveCallItem]
    total: int


def _invalid(field: str, value: object, msg: str) -> RequestValidationError:
    """A 422 naming the query field, in FastAPI's own error shape."""
    return RequestValidationError([{"type": "value_error", "loc": ("query", field), "msg": msg, "input": value}])


def _item(call: Call, turns: int, cls: type[CallItem] = CallItem, **extra: Any) -> Any:
    since = call.answered_at or call.started_at
    cost = call.cost_total
    return cls(
        sid=call.sid,
        direction=call.direction,
        flow=call.flow,
        from_number=mask_number(call.from_number),
        to_number=mask_number(call.to_number),
        status=call.status,
        outcome=call.outcome,
        campaign_id=call.campaign_id,
        started_at=call.started_at,
        answered_at=call.answered_at,
        ended_at=call.ended_at,
        duration_s=round((call.ended_at - since).total_seconds(), 3) if call.ended_at else None,
        turns=turns,
        cost_total=float(cost) if cost is not None else None,
        **extra,
    )


async def _turns(db: Database, sids: Sequence[str]) -> dict[str, int]:
    """Transcript turns per call, for one page (the ``call_sid`` index; one query)."""
    if not sids:
        return {}
    stmt = (
        select(CallEvent.call_sid, func.count())
        .where(CallEvent.call_sid.in_(sids), CallEvent.kind == "turn")
        .group_by(CallEvent.call_sid)
    )
    async with db.engine.connect() as conn:
        return {sid: int(n) for sid, n in (await conn.execute(stmt)).all()}


# --- filters ------------------------------------------------------------------------------------
def _instant(field: str, value: str | None, *, end: bool) -> dt.datetime | None:
    """``from``/``to``: an ISO date (a ``to`` date counts its whole day) or date-time (UTC
    unless it says otherwise)."""
    if value is None:
        return None
    raw = value.strip()
    try:
        if len(raw) == 10:
            day = dt.date.fromisoformat(raw)
            start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            return start + dt.timedelta(days=1) if end else start
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise _invalid(field, value, "not an ISO date (2026-01-31) or date-time (2026-01-31T09:30:00Z)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _phone(value: str | None) -> ColumnElement[bool] | None:
    if value is None:
        return None
    raw = value.strip()
    if _E164.match(raw):
        return or_(Call.from_number == raw, Call.to_number == raw)
    if _SUFFIX.match(raw):  # also an E.164 number whose "+" a query string turned into a space
        return or_(Call.from_number.endswith(raw), Call.to_number.endswith(raw))
    raise _invalid("phone", value, "an E.164 number (+ and 7-15 digits) or the last 4-15 digits of one")


def _decode_cursor(value: str | None) -> tuple[dt.datetime, str] | None:
    if value is None:
        return None
    try:
        padded = value + "=" * (-len(value) % 4)
        started, sid = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        when = dt.datetime.fromisoformat(started)
        if when.tzinfo is None or not isinstance(sid, str):
            raise ValueError
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        raise _invalid("cursor", value, "not a cursor this API gave out") from None
    return when, sid


def _encode_cursor(call: Call) -> str:
    raw = json.dumps([call.started_at.isoformat(), call.sid], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii").rstrip("=")


@router.get("", response_model=CallPage)
async def list_calls(
    db: DbDep,
    flow: Annotated[str | None, Query(max_length=64)] = None,
    direction: Literal["inbound", "outbound"] | None = None,
    outcome: CallOutcome | None = None,
    status: CallStatus | None = None,
    campaign_id: Annotated[str | None, Query(max_length=32)] = None,
    phone: Annotated[str | None, Query(max_length=32)] = None,
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    to: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> CallPage:
    """Calls, newest first, matching every filter given."""
    if flow is not None and not _FLOW.match(flow):
        raise _invalid("flow", flow, "not a flow name")
    since = _instant("from", from_, end=False)
    until = _instant("to", to, end=True)
    if since is not None and until is not None and until <= since:
        raise _invalid("to", to, "before 'from'")
    conds: list[ColumnElement[bool]] = []
    if flow is not None:
        conds.append(Call.flow == flow)
    if direction is not None:
        conds.append(Call.direction == direction)
    if outcome is not None:
        conds.append(Call.outcome == outcome.value)
    if status is not None:
        conds.append(Call.status == status.value)
    if campaign_id is not None:
        conds.append(Call.campaign_id == campaign_id)
    if since is not None:
        conds.append(Call.started_at >= since)
    if until is not None:
        # a date ``to`` is the next midnight (exclusive); a date-time is inclusive
        conds.append(Call.started_at < until if to is not None and len(to.strip()) == 10 else Call.started_at <= until)
    matched = _phone(phone)
    if matched is not None:
        conds.append(matched)
    after = _decode_cursor(cursor)
    page = select(Call).where(*conds)
    if after is not None:
        at, sid = after
        page = page.where(or_(Call.started_at < at, and_(Call.started_at == at, Call.sid < sid)))
    page = page.order_by(Call.started_at.desc(), Call.sid.desc()).limit(limit + 1)
    count = select(func.count()).select_from(Call).where(*conds)
    async with db.sessionmaker() as s:
        calls = list(await s.scalars(page))
        total = int((await s.execute(count)).scalar_one())
    more = len(calls) > limit
    calls = calls[:limit]
    turns = await _turns(db, [c.sid for c in calls])
    return CallPage(
        items=[_item(c, turns.get(c.sid, 0)) for c in calls],
        next_cursor=_encode_cursor(calls[-1]) if more and calls else None,
        total=total,
    )


@router.get("/live", response_model=LiveCalls)
async def live_calls(db: DbDep) -> LiveCalls:
    """The calls in progress on every instance (status not terminal, not refused), newest first."""
    now = utcnow()
    stmt = (
        select(Call)
        .where(text(LIVE_SQL), Call.started_at > now - LIVE_HORIZON)
        .order_by(Call.started_at.desc(), Call.sid.desc())
        .limit(MAX_LIVE)
    )
    async with db.sessionmaker() as s:
        calls = list(await s.scalars(stmt))
    turns = await _turns(db, [c.sid for c in calls])
    items = [
        _item(
            c,
            turns.get(c.sid, 0),
            LiveCallItem,
            live_s=round((now - (c.answered_at or c.started_at)).total_seconds(), 1),
        )
        for c in calls
    ]
    return LiveCalls(items=items, total=len(items))


# --- the live event stream ----------------------------------------------------------------------
def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def _event_data(row: Any, redact: Redactor) -> dict[str, Any]:
    text_ = row.text
    if text_ and row.kind != "dtmf":  # DTMF is stored masked already (call_events.py)
        text_ = redact.redact(text_)
    return {
        "id": row.id,
        "kind": row.kind,
        "role": row.role,
        "text": text_,
        "interrupted": bool(row.interrupted),
        "at": row.at.isoformat() if isinstance(row.at, dt.datetime) else row.at,
        "latency_ms": row.latency_ms,
        "data": row.data,
    }


async def _poll(db: Database, sid: str, after: int) -> tuple[list[Any], Any]:
    """The call's events after id ``after`` (at most ``TAIL_BATCH``) and its state: one
    connection, two indexed reads."""
    events = (
        select(
            CallEvent.id,
            CallEvent.kind,
            CallEvent.role,
            CallEvent.text,
            CallEvent.interrupted,
            CallEvent.at,
            CallEvent.latency_ms,
            CallEvent.data,
        )
        .where(CallEvent.call_sid == sid, CallEvent.id > after)
        .order_by(CallEvent.id)
        .limit(TAIL_BATCH)
    )
    state = select(Call.status, Call.outcome, Call.transfer_status, Call.started_at).where(Call.sid == sid)
    async with db.engine.connect() as conn:
        rows = list((await conn.execute(events)).all())
        call = (await conn.execute(state)).one_or_none()
    return rows, call


async def event_stream(
    db: Database, sid: str, *, after: int, redact: Redactor, live: LiveHub = hub
) -> AsyncIterator[str]:
    """The SSE text of call ``sid`` from event id ``after`` on (see the module docstring)."""
    with live.subscribe(sid) as sub:
        yield f"retry: {int(POLL_S * 2000)}\n\n"
        last_sent = time.monotonic()
        shown: tuple[Any, ...] | None = None
        terminal_since: float | None = None
        while True:
            rows, call = await _poll(db, sid, after)
            now = time.monotonic()
            for row in rows:
                after = row.id
                yield _sse("call_event", _event_data(row, redact), row.id)
                last_sent = now
            if call is None:  # deleted (retention) while we watched
                yield _sse("end", {"status": None})
                return
            state = (call.status, call.outcome, call.transfer_status)
            if state != shown:
                shown = state
                yield _sse(
                    "status", {"status": call.status, "outcome": call.outcome, "transfer_status": call.transfer_status}
                )
                last_sent = now
            old = call.started_at < utcnow() - LIVE_HORIZON  # its final status never came
            if call.status in TERMINAL_STATUSES or old:
                if terminal_since is None or rows:  # late events: wait the grace again
                    terminal_since = now
                if len(rows) < TAIL_BATCH and now - terminal_since >= END_GRACE_S:
                    yield _sse("end", {"status": call.status, "outcome": call.outcome})
                    return
            if len(rows) == TAIL_BATCH:
                continue  # a backlog: read on at once
            deadline = now + POLL_S
            while (left := deadline - time.monotonic()) > 0:
                for item in await sub.wait(left):
                    if isinstance(item, CallerSpeech):
                        at = dt.datetime.fromtimestamp(item.at, dt.UTC).isoformat()
                        data = {"text": redact.redact(item.text), "final": item.final, "at": at}
                        yield _sse("interim", data)
                        last_sent = time.monotonic()
                if sub.dropped:
                    sub.dropped = 0  # a slow reader: interim text was dropped (the stored turn follows)
            if time.monotonic() - last_sent >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()


@router.get("/{sid}/events")
async def call_events_stream(
    sid: str,
    db: DbDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    after: Annotated[int | None, Query(ge=0, description="start after this event id (else from the first)")] = None,
) -> StreamingResponse:
    """Server-Sent Events: ``call_event`` (a stored event, with its id), ``interim`` (the
    caller's words as heard, when the call is on this instance), ``status``, ``end``."""
    start = after or 0
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("header", "Last-Event-ID"),
                        "msg": "not an event id",
                        "input": last_event_id,
                    }
                ]
            )
        start = int(last_event_id)
    async with db.sessionmaker() as s:
        if await s.get(Call, sid) is None:
            raise HTTPException(status_code=404, detail="unknown call")
    stream = event_stream(db, sid, after=start, redact=redactor_for(settings.redaction))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
