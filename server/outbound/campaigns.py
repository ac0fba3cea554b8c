"""Campaigns: creating one with its contacts, reading where it stands, and steering it
(pause, resume, cancel).

The contact queue the dispatchers work (claiming, what the placer did, what Twilio's callbacks
say) is ``contact_queue``; finishing what dead instances left is ``reaper``. Their public names
are re-exported here, so ``campaigns.claim`` / ``campaigns.on_call_status`` / ``campaigns.reap``
keep working for the code that calls them so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

import structlog
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from sqlalchemy import func, insert, select, update

from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import E164, CallingWindow, DltFields
from dialgraph.server.core.models import Campaign, CampaignContact, utcnow
from dialgraph.server.outbound.contact_queue import (
    DEFERRALS,
    RATE_LIMITED_RETRY_MIN_S,
    SKIP_OUTCOMES,
    Claimed,
    claim,
    mark_dialing,
    mark_failed_to_place,
    mark_skipped,
    on_answered_by,
    on_call_status,
    start_dialing,
    still_claimed,
)
from dialgraph.server.outbound.contacts_csv import (
    ContactIn,
    RowError,
    check_contact_list,
    check_contacts,
    parse_contacts,
    parse_contacts_csv,
)
from dialgraph.server.outbound.reaper import FetchStatus, ReapReport, reap
from dialgraph.server.outbound.types import Purpose

__all__ = [
    "COUNT_KEYS",
    "RATE_LIMITED_RETRY_MIN_S",
    "CampaignSpec",
    "CampaignStatus",
    "Claimed",
    "ContactIn",
    "CampaignStateError",
    "FetchStatus",
    "ReapReport",
    "RowError",
    "cancel",
    "check_contact_list",
    "claim",
    "counts",
    "create_campaign",
    "get_campaign",
    "list_contacts",
    "mark_dialing",
    "mark_failed_to_place",
    "mark_skipped",
    "on_answered_by",
    "on_call_status",
    "parse_contacts",
    "parse_contacts_csv",
    "pause",
    "reap",
    "resume",
    "status",
    "start_dialing",
    "still_claimed",
]

log = structlog.get_logger(__name__)

COUNT_KEYS = (
    "queued",
    "dialing",
    "in_progress",
    "completed",
    "no_answer",
    "busy",
    "voicemail",
    "failed",
    "canceled",
    "opted_out",
    *SKIP_OUTCOMES.values(),
)


class CampaignSpec(BaseModel):
    """A campaign as the API takes it (``contacts`` may instead come from a CSV upload)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=128)
    flow: str = Field(min_length=1, max_length=64)
    from_number: str | None = Field(
        default=None,
        validation_alias=AliasChoices("from", "from_number"),
        serialization_alias="from",
        pattern=E164,
        description="caller ID; else the flow's, else [outbound] default_from",
    )
    contacts: list[ContactIn] = Field(default_factory=list)
    max_concurrent: int = Field(default=1, ge=1, le=1000, description="live calls at once, across all instances")
    calls_per_second: float = Field(default=1.0, gt=0, le=100, description="call starts per second, all instances")
    max_attempts: int = Field(default=1, ge=1, le=10, description="calls per contact (busy/no-answer/failed/voicemail)")
    retry_after_s: int = Field(default=3600, ge=0, description="wait before calling a contact again")
    window: CallingWindow | None = Field(default=None, description="calling hours; else [outbound] window")
    purpose: Purpose = "service"
    dlt: DltFields | None = None


class CampaignStatus(BaseModel):
    """``GET /api/campaigns/{id}``: the campaign, and its contacts counted by where they stand."""

    id: str
    name: str
    flow: str
    from_number: str = Field(serialization_alias="from")
    status: Literal["active", "paused", "cancelled", "completed"]
    purpose: str
    max_concurrent: int
    calls_per_second: float
    max_attempts: int
    retry_after_s: int
    created_at: dt.datetime
    finished_at: dt.datetime | None
    total: int
    counts: dict[str, int]


# --- creating ----------------------------------------------------------------------------------
async def create_campaign(
    db: Database, spec: CampaignSpec, contacts: Sequence[ContactIn], *, now: dt.datetime | None = None
) -> Campaign:
    """Store the campaign and its contacts (checked again: a bad or duplicate row raises
    ``ValueError``; pass what ``parse_contacts_csv`` / ``check_contact_list`` kept)."""
    if spec.from_number is None:
        raise ValueError("a campaign needs a caller ID ('from', the flow's caller_id or [outbound] default_from)")
    good, errors = check_contacts(((c.line or i + 1), c) for i, c in enumerate(contacts))
    if errors:
        raise ValueError(f"{len(errors)} bad contact row(s), the first at line {errors[0].line}: {errors[0].error}")
    now = now or utcnow()
    campaign = Campaign(
        name=spec.name,
        flow=spec.flow,
        from_number=spec.from_number,
        status="active",
        purpose=spec.purpose,
        dlt=spec.dlt.model_dump(exclude_none=True) if spec.dlt else None,
        window=spec.window.model_dump() if spec.window else None,
        max_concurrent=spec.max_concurrent,
        calls_per_second=spec.calls_per_second,
        max_attempts=spec.max_attempts,
        retry_after_s=spec.retry_after_s,
        next_dial_at=now,
        created_at=now,
        updated_at=now,
    )
    async with db.sessionmaker() as s, s.begin():
        s.add(campaign)
        await s.flush()
        for start in range(0, len(good), 1000):
            rows = [
                {
                    "campaign_id": campaign.id,
                    "line": c.line or 0,
                    "to_number": c.to,
                    "context": c.context or None,
                    "timezone": c.timezone,
                    "state": "queued",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "updated_at": now,
                }
                for c in good[start : start + 1000]
            ]
            await s.execute(insert(CampaignContact), rows)
    log.info("campaign created", campaign_id=campaign.id, contacts=len(good))
    return campaign


# --- reading and steering ----------------------------------------------------------------------
async def counts(db: Database, campaign_id: str) -> dict[str, int]:
    """Every contact counted once: open ones by state (queued; dialing = claimed or ringing;
    in_progress = answered; a contact waiting for calling hours or a rate limit under its
    skip outcome), done ones by outcome. Every key of ``COUNT_KEYS`` is present."""
    out = dict.fromkeys(COUNT_KEYS, 0)
    async with db.sessionmaker() as s:
        rows = (
            await s.execute(
                select(CampaignContact.state, CampaignContact.outcome, func.count())
                .where(CampaignContact.campaign_id == campaign_id)
                .group_by(CampaignContact.state, CampaignContact.outcome)
            )
        ).all()
    for state, outcome, n in rows:
        if state == "queued":
            key = outcome if outcome in DEFERRALS else "queued"
        elif state in ("claimed", "dialing"):
            key = "dialing"
        elif state == "live":
            key = "in_progress"
        else:
            key = outcome or "failed"
        out[key] = out.get(key, 0) + n
    return out


async def status(db: Database, campaign_id: str) -> CampaignStatus | None:
    """The campaign and its counts; None when unknown."""
    campaign = await get_campaign(db, campaign_id)
    if campaign is None:
        return None
    tally = await counts(db, campaign_id)
    return CampaignStatus(
        id=campaign.id,
        name=campaign.name,
        flow=campaign.flow,
        from_number=campaign.from_number,
        status=campaign.status,  # type: ignore[arg-type]
        purpose=campaign.purpose,
        max_concurrent=campaign.max_concurrent,
        calls_per_second=campaign.calls_per_second,
        max_attempts=campaign.max_attempts,
        retry_after_s=campaign.retry_after_s,
        created_at=campaign.created_at,
        finished_at=campaign.finished_at,
        total=sum(tally.values()),
        counts=tally,
    )


async def list_contacts(
    db: Database, campaign_id: str, *, after_id: int = 0, limit: int = 100
) -> list[CampaignContact]:
    """A page of the campaign's contacts in id order (pass the last id as ``after_id``): each
    one's line, number, state, outcome, attempts, last call_sid, next attempt."""
    async with db.sessionmaker() as s:
        rows = await s.scalars(
            select(CampaignContact)
            .where(CampaignContact.campaign_id == campaign_id, CampaignContact.id > after_id)
            .order_by(CampaignContact.id)
            .limit(limit)
        )
        return list(rows.all())


class CampaignStateError(Exception):
    """The campaign is not in a state that allows this (pausing a completed one...)."""


async def get_campaign(db: Database, campaign_id: str) -> Campaign | None:
    async with db.sessionmaker() as s:
        return await s.get(Campaign, campaign_id)


async def pause(db: Database, campaign_id: str) -> None:
    """Stop claiming (calls under way go on). ``CampaignStateError`` unless active."""
    await _set_status(db, campaign_id, ("active",), "paused")


async def resume(db: Database, campaign_id: str) -> None:
    """Claim again. ``CampaignStateError`` unless paused."""
    await _set_status(db, campaign_id, ("paused",), "active")


async def cancel(db: Database, campaign_id: str, *, now: dt.datetime | None = None) -> None:
    """End the campaign: contacts not yet dialled get outcome ``canceled``; live calls finish
    (and are not retried). ``CampaignStateError`` unless active or paused."""
    now = now or utcnow()
    current = await get_campaign(db, campaign_id)
    if current is None or current.status not in ("active", "paused"):
        raise _state_error(current, "cancelled")
    # Contacts first, then the campaign row: the lock order of the callbacks (no deadlock).
    async with db.sessionmaker() as s, s.begin():
        await s.execute(
            update(CampaignContact)
            .where(CampaignContact.campaign_id == campaign_id, CampaignContact.state.in_(("queued", "claimed")))
            .values(state="done", outcome="canceled", claimed_by=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    await _set_status(db, campaign_id, ("active", "paused"), "cancelled", finished_at=now)


async def _set_status(db: Database, campaign_id: str, from_: tuple[str, ...], to: str, **values: Any) -> None:
    async with db.sessionmaker() as s, s.begin():
        result = await s.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status.in_(from_))
            .values(status=to, updated_at=utcnow(), **values)
        )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise _state_error(await get_campaign(db, campaign_id), to)
    log.info("campaign status changed", campaign_id=campaign_id, status=to)


def _state_error(campaign: Campaign | None, to: str) -> CampaignStateError:
    if campaign is None:
        return CampaignStateError("no such campaign")
    return CampaignStateError(f"a campaign that is {campaign.status} cannot be {to}")
