"""The webhook deliveries log (bearer admin token).

* ``GET /api/webhooks/deliveries``: filters ``status`` (pending|delivering|delivered|failed),
  ``event``, ``endpoint``, ``subject`` (a call sid or campaign id); newest first, ``limit``
  (1-200) per page, ``next_cursor`` for the next one (opaque keyset cursor).
* ``GET /api/webhooks/deliveries/{id}``: one delivery with the body it sends.
* ``POST /api/webhooks/deliveries/{id}/retry``: a failed (or waiting) delivery is due now;
  409 while it is in flight or once delivered.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from dialgraph.server.core.models import WebhookDelivery
from dialgraph.server.core.webhooks_config import WebhookEvent
from dialgraph.server.deps import DbDep
from dialgraph.server.routes.admin import require_admin
from dialgraph.server.webhooks import queue

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], dependencies=[Depends(require_admin)])

Status = Literal["pending", "delivering", "delivered", "failed"]


class DeliveryItem(BaseModel):
    id: str
    endpoint: str
    url: str
    event: str
    subject: str
    status: str
    attempts: int
    next_attempt_at: dt.datetime | None  # when pending: the next attempt
    last_status_code: int | None
    last_error: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None


class DeliveryDetail(DeliveryItem):
    body: dict[str, Any] | None  # null until a call.ended report is built at its first attempt


class DeliveryPage(BaseModel):
    items: list[DeliveryItem]
    next_cursor: str | None


class RetryOut(BaseModel):
    id: str
    status: str
    next_attempt_at: dt.datetime


def _item(row: WebhookDelivery, cls: type[DeliveryItem] = DeliveryItem, **extra: Any) -> Any:
    return cls(
        id=row.id,
        endpoint=row.endpoint,
        url=row.url,
        event=row.event,
        subject=row.subject,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        **extra,
    )


@router.get("/deliveries", response_model=DeliveryPage)
async def deliveries(
    db: DbDep,
    status: Status | None = None,
    event: WebhookEvent | None = None,
    endpoint: str | None = Query(default=None, max_length=64),
    subject: str | None = Query(default=None, max_length=64),
    cursor: str | None = Query(default=None, max_length=200),
    limit: int = Query(default=50, ge=1, le=200),
) -> DeliveryPage:
    after = None
    if cursor is not None:
        try:
            after = queue.decode_cursor(cursor)
        except ValueError as exc:
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("query", "cursor"), "msg": str(exc), "input": cursor}]
            ) from None
    rows, more = await queue.list_deliveries(
        db, status=status, event=event, endpoint=endpoint, subject=subject, cursor=after, limit=limit
    )
    return DeliveryPage(
        items=[_item(r) for r in rows], next_cursor=queue.encode_cursor(rows[-1]) if more and rows else None
    )


@router.get("/deliveries/{delivery_id}", response_model=DeliveryDetail)
async def delivery(delivery_id: str, db: DbDep) -> DeliveryDetail:
    row = await queue.get_delivery(db, delivery_id)
    if row is None:
        raise HTTPException(status_code=404, detail="no such delivery")
    detail: DeliveryDetail = _item(row, DeliveryDetail, body=row.body)
    return detail


@router.post("/deliveries/{delivery_id}/retry", response_model=RetryOut)
async def retry_delivery(delivery_id: str, db: DbDep) -> RetryOut:
    row = await queue.get_delivery(db, delivery_id)
    if row is None:
        raise HTTPException(status_code=404, detail="no such delivery")
    if not await queue.retry(db, delivery_id):
        current = await queue.get_delivery(db, delivery_id)
        state = current.status if current is not None else row.status
        raise HTTPException(
            status_code=409,
            detail={"reason": state, "rule": "webhooks.retry", "message": f"a {state} delivery cannot be retried"},
        )
    again = await queue.get_delivery(db, delivery_id)
    assert again is not None
    return RetryOut(id=again.id, status=again.status, next_attempt_at=again.next_attempt_at)
