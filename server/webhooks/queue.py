"""The deliveries queue in SQL, shared by every instance: enqueue, claim, finish, list, retry.

``enqueue`` is what the rest of the app calls when something happens: ONE multi-row INSERT
(a row per endpoint that wants the event), never a POST, and it never raises: a webhook
problem must not change what a Twilio callback answers. A ``call.ended`` row is inserted
without its body, due ``[webhooks] settle_s`` later: the worker builds the report at its
first attempt (the transcript, costs and post-call analysis are in by then) and keeps it.

Claiming (``claim``) is one UPDATE of due rows (``pending`` and due, or ``delivering`` whose
claim expired) to ``delivering`` under this instance's name, ``RETURNING`` them: on
PostgreSQL the rows are picked with ``FOR UPDATE SKIP LOCKED`` (instances never wait on each
other and never claim one row twice); on SQLite the UPDATE runs under the database's write
lock and re-checks the due condition (the single-instance fallback). Every later write of a
claimed row is conditional on the claim (``claimed_by`` and ``delivering``): an instance
whose claim expired and was taken over changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Call, Campaign, WebhookDelivery, new_id, utcnow
from dialgraph.server.core.redaction import redactor_for
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.webhooks_config import WebhookEvent
from dialgraph.server.webhooks import report

log = structlog.get_logger(__name__)

STATUSES = ("pending", "delivering", "delivered", "failed")


def _due(now: dt.datetime) -> Any:
    return or_(
        and_(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now),
        and_(WebhookDelivery.status == "delivering", WebhookDelivery.claim_expires_at <= now),
    )


async def insert_rows(db: Database, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert delivery rows in one statement; a row whose (endpoint, dedupe_key) exists is
    skipped (a second call.ended of one call, a campaign swept twice)."""
    if not rows:
        return
    make = sqlite_insert if db.is_sqlite else pg_insert
    stmt = make(WebhookDelivery).on_conflict_do_nothing(index_elements=["endpoint", "dedupe_key"])
    async with db.engine.begin() as conn:
        await conn.execute(stmt, [dict(r) for r in rows])


def _row(endpoint: str, url: str, event: str, subject: str, now: dt.datetime, **values: Any) -> dict[str, Any]:
    return {
        "id": new_id(),
        "endpoint": endpoint,
        "url": url,
        "event": event,
        "subject": subject,
        "dedupe_key": None,
        "body": None,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "claimed_by": None,
        "claim_expires_at": None,
        "last_status_code": None,
        "last_error": None,
        "created_at": now,
        "delivered_at": None,
        **values,
    }


async def enqueue(
    db: Database,
    settings: Settings,
    event: WebhookEvent,
    *,
    call: Call | None = None,
    campaign: Campaign | None = None,
    status: str | None = None,
    target: str | None = None,
    counts: Mapping[str, int] | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Queue ``event`` for every endpoint of the call's (campaign's) flow that wants it: one
    INSERT, no HTTP. Returns the rows queued; never raises (errors are logged)."""
    try:
        rows = _rows_for(
            settings,
            event,
            call=call,
            campaign=campaign,
            status=status,
            target=target,
            counts=counts,
            now=now or utcnow(),
        )
        await insert_rows(db, rows)
        return len(rows)
    except Exception as exc:  # a webhook must never break the callback that reports it
        subject = call.sid if call is not None else campaign.id if campaign is not None else ""
        log.error("webhook not queued", webhook_event=event, subject=subject, error=type(exc).__name__)
        return 0


def _rows_for(
    settings: Settings,
    event: WebhookEvent,
    *,
    call: Call | None,
    campaign: Campaign | None,
    status: str | None,
    target: str | None,
    counts: Mapping[str, int] | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    flow = call.flow if call is not None else campaign.flow if campaign is not None else None
    endpoints = {n: e for n, e in settings.webhook_endpoints(flow).items() if event in e.events}
    if not endpoints:
        return []
    redactor = redactor_for(settings.redaction)
    rows = []
    for name, endpoint in endpoints.items():
        if event == "call.ended" and call is not None:
            # The report is built at the first attempt, once the call has settled.
            due = now + dt.timedelta(seconds=settings.webhooks.settle_s)
            rows.append(
                _row(name, endpoint.url, event, call.sid, now, dedupe_key=f"{event}:{call.sid}", next_attempt_at=due)
            )
        elif event in ("transfer.started", "transfer.failed") and call is not None:
            row = _row(name, endpoint.url, event, call.sid, now)
            data = report.transfer_event(
                call, mask=endpoint.mask_numbers, redactor=redactor, status=status, target=target
            )
            row["body"] = report.envelope(row["id"], event, now, data)
            rows.append(row)
        elif event == "campaign.finished" and campaign is not None:
            row = _row(name, endpoint.url, event, campaign.id, now, dedupe_key=f"{event}:{campaign.id}")
            row["body"] = report.envelope(row["id"], event, now, report.campaign_finished(campaign, counts or {}))
            rows.append(row)
        else:
            raise ValueError(f"{event} needs a {'campaign' if event == 'campaign.finished' else 'call'}")
    return rows


# --- the worker's side ------------------------------------------------------------------------
async def claim(
    db: Database, instance_id: str, *, limit: int, ttl_s: float, now: dt.datetime | None = None
) -> list[WebhookDelivery]:
    """Claim up to ``limit`` due deliveries for ``instance_id`` (``attempts`` counts this one)."""
    now = now or utcnow()
    pick = select(WebhookDelivery.id).where(_due(now)).order_by(WebhookDelivery.next_attempt_at).limit(limit)
    if not db.is_sqlite:
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(pick.scalar_subquery()), _due(now))
        .values(
            status="delivering",
            claimed_by=instance_id,
            claim_expires_at=now + dt.timedelta(seconds=ttl_s),
            attempts=WebhookDelivery.attempts + 1,
        )
        .returning(WebhookDelivery)
        .execution_options(synchronize_session=False)
    )
    async with db.sessionmaker() as s, s.begin():
        return list((await s.scalars(stmt)).all())


def _claimed(row_id: str, instance_id: str) -> Any:
    return and_(
        WebhookDelivery.id == row_id,
        WebhookDelivery.claimed_by == instance_id,
        WebhookDelivery.status == "delivering",
    )


async def finish(db: Database, row_id: str, instance_id: str, **values: Any) -> bool:
    """Write the result of a claimed delivery and release the claim; False when the claim was
    lost (expired and taken by another instance): then nothing is written."""
    values = {"claimed_by": None, "claim_expires_at": None, **values}
    async with db.engine.begin() as conn:
        result = await conn.execute(update(WebhookDelivery).where(_claimed(row_id, instance_id)).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_body(db: Database, row_id: str, instance_id: str, body: Mapping[str, Any]) -> bool:
    """Keep the body built at the first attempt (retries send the same bytes)."""
    async with db.engine.begin() as conn:
        result = await conn.execute(
            update(WebhookDelivery).where(_claimed(row_id, instance_id)).values(body=dict(body))
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --- the admin API's side ---------------------------------------------------------------------
def encode_cursor(row: WebhookDelivery) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """ValueError for anything that is not a cursor this API gave out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, row_id = raw.partition("|")
        when = dt.datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor of this list") from None
    if when.tzinfo is None or not row_id:
        raise ValueError("not a cursor of this list")
    return when, row_id


async def list_deliveries(
    db: Database,
    *,
    status: str | None = None,
    event: str | None = None,
    endpoint: str | None = None,
    subject: str | None = None,
    cursor: tuple[dt.datetime, str] | None = None,
    limit: int = 50,
) -> tuple[list[WebhookDelivery], bool]:
    """Newest first (keyset on created_at, id); the bool says whether more follow."""
    q = select(WebhookDelivery)
    if status is not None:
        q = q.where(WebhookDelivery.status == status)
    if event is not None:
        q = q.where(WebhookDelivery.event == event)
    if endpoint is not None:
        q = q.where(WebhookDelivery.endpoint == endpoint)
    if subject is not None:
        q = q.where(WebhookDelivery.subject == subject)
    if cursor is not None:
        at, row_id = cursor
        q = q.where(
            or_(WebhookDelivery.created_at < at, and_(WebhookDelivery.created_at == at, WebhookDelivery.id < row_id))
        )
    q = q.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit + 1)
    async with db.sessionmaker() as s:
        rows = list((await s.scalars(q)).all())
    return rows[:limit], len(rows) > limit


async def get_delivery(db: Database, row_id: str) -> WebhookDelivery | None:
    async with db.sessionmaker() as s:
        return await s.get(WebhookDelivery, row_id)


async def retry(db: Database, row_id: str, *, now: dt.datetime | None = None) -> bool:
    """Make a failed (or waiting) delivery due now; False when it is in flight or delivered.
    A retried delivery past its day gets one attempt."""
    now = now or utcnow()
    async with db.engine.begin() as conn:
        result = await conn.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == row_id, WebhookDelivery.status.in_(("failed", "pending")))
            .values(status="pending", next_attempt_at=now)
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


__all__ = [
    "STATUSES",
    "claim",
    "decode_cursor",
    "encode_cursor",
    "enqueue",
    "finish",
    "get_delivery",
    "insert_rows",
    "list_deliveries",
    "retry",
    "set_body",
]
