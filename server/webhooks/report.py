"""What each webhook event says: the end-of-call report and the smaller event bodies.

Every body is an envelope ``{"id", "event", "created_at", "data"}`` (``id`` is the delivery
id, also in ``X-Dialgraph-Delivery``). Numbers are masked (``+9198******21``) unless the
endpoint says ``mask_numbers = false``; every text passes the ``Redactor`` again, whoever
wrote it; nothing here does I/O (``queue`` and ``worker`` read the rows).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from dialgraph.server.core.models import Call, CallEvent, Campaign
from dialgraph.server.core.redaction import Redactor
from dialgraph.server.routes.calls_api import mask_number

TRANSCRIPT_KINDS = frozenset({"turn", "dtmf"})


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def number(value: str | None, mask: bool) -> str:
    return mask_number(value) if mask else (value or "")


def envelope(delivery_id: str, event: str, created_at: dt.datetime, data: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": delivery_id, "event": event, "created_at": _iso(created_at), "data": dict(data)}


def call_facts(call: Call, *, mask: bool) -> dict[str, Any]:
    """Who called whom, in which flow, when, and how it went."""
    since = call.answered_at or call.started_at
    duration = round((call.ended_at - since).total_seconds(), 3) if call.ended_at is not None else None
    return {
        "call_sid": call.sid,
        "direction": call.direction,
        "flow": call.flow,
        "from": number(call.from_number, mask),
        "to": number(call.to_number, mask),
        "status": call.status,
        "outcome": call.outcome,
        "campaign_id": call.campaign_id,
        "started_at": _iso(call.started_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "duration_s": duration,
    }


def _text(redactor: Redactor, event: CallEvent) -> str:
    text = event.text or ""
    return redactor.redact_digits(text) if event.kind == "dtmf" else redactor.redact(text)


def call_ended(
    call: Call,
    events: Sequence[CallEvent],
    *,
    mask: bool,
    redactor: Redactor,
    analysis: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The end-of-call report: the call, its transfer, its transcript (redacted), the
    post-call analysis (``summary`` + ``fields``; null when none was made in time) and its
    cost and usage (null until known)."""
    transcript = [
        {
            "at": _iso(e.at),
            "role": e.role,
            "kind": e.kind,
            "text": _text(redactor, e),
            "interrupted": bool(e.interrupted),
        }
        for e in events
        if e.kind in TRANSCRIPT_KINDS and e.text
    ]
    transfer = None
    if call.transfer_target or call.transfer_status:
        transfer = {"target": call.transfer_target, "status": call.transfer_status}
    return {
        **call_facts(call, mask=mask),
        "transfer": transfer,
        "barge_ins": sum(1 for e in events if e.kind == "barge_in"),
        "transcript": transcript,
        "analysis": dict(analysis) if analysis is not None else None,
        "cost": getattr(call, "cost", None),
        "usage": getattr(call, "usage", None),
    }


def transfer_event(
    call: Call, *, mask: bool, redactor: Redactor, status: str | None, target: str | None = None
) -> dict[str, Any]:
    """transfer.started (status ``dialing``) / transfer.failed (busy, no-answer, failed,
    canceled, refused)."""
    reason = call.transfer_reason
    name = target if target is not None else call.transfer_target
    return {
        **call_facts(call, mask=mask),
        "transfer": {
            # a refused target is whatever the conversation produced: redacted like text
            "target": redactor.redact(name[:64]) if name else None,
            "status": status,
            "reason": redactor.redact(reason) if reason else None,
        },
    }


def campaign_finished(campaign: Campaign, counts: Mapping[str, int]) -> dict[str, Any]:
    """A campaign that completed (no contact left to call) or was cancelled."""
    return {
        "campaign_id": campaign.id,
        "name": campaign.name,
        "flow": campaign.flow,
        "status": campaign.status,
        "purpose": campaign.purpose,
        "created_at": _iso(campaign.created_at),
        "finished_at": _iso(campaign.finished_at),
        "counts": dict(counts),
    }


__all__ = ["call_ended", "call_facts", "campaign_finished", "envelope", "number", "transfer_event"]
