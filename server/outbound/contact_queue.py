"""The contact queue in SQL, shared by every instance: claiming contacts and recording each
attempt's outcome.

``campaign_contacts`` is the queue. A contact moves ``queued -> claimed -> dialing -> live ->
done`` (a retry or a deferral puts it back to ``queued`` with a later ``next_attempt_at``):

* ``claim`` takes, per active campaign and in ONE transaction, the campaign row's lock
  (PostgreSQL ``FOR UPDATE SKIP LOCKED``: a claimer never waits for another; SQLite takes the
  database's write lock first, the single-instance fallback), counts the contacts in
  claimed|dialing|live (so ``max_concurrent`` holds across instances), claims queued contacts
  (``FOR UPDATE SKIP LOCKED``) and moves the campaign's ``next_dial_at`` on by
  ``1 / calls_per_second`` per claim. Each claim carries its slot instant: the dispatcher
  places the call at or after it, so the rate holds across instances too.
* ``mark_dialing`` / ``mark_skipped`` / ``mark_failed_to_place`` record what the placer did;
  ``on_call_status`` / ``on_answered_by`` what Twilio's callbacks say.

``attempts`` counts calls handed to Twilio: a refusal or an expired claim refunds it. A
campaign whose contacts are all done is marked completed. Creating and steering campaigns is
``campaigns``; finishing what dead instances left is ``reaper``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import ColumnElement, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from dialgraph.server.core.db import Database
from dialgraph.server.core.enums import TERMINAL_STATUSES
from dialgraph.server.core.flow_config import CallingWindow, DltFields
from dialgraph.server.core.models import Call, Campaign, CampaignContact, utcnow
from dialgraph.server.outbound.types import OutboundRequest, Purpose, Refusal

__all__ = [
    "ACTIVE_STATES",
    "DEFERRALS",
    "FINAL_STATUSES",
    "OPEN_STATES",
    "RATE_LIMITED_RETRY_MIN_S",
    "RETRYABLE",
    "SKIP_OUTCOMES",
    "Claimed",
    "claim",
    "mark_dialing",
    "mark_failed_to_place",
    "mark_skipped",
    "on_answered_by",
    "on_call_status",
    "start_dialing",
    "still_claimed",
]

log = structlog.get_logger(__name__)

ACTIVE_STATES = ("claimed", "dialing", "live")  # what max_concurrent counts
OPEN_STATES = ("queued", *ACTIVE_STATES)  # a campaign with none of these is complete
RETRYABLE = frozenset({"busy", "no_answer", "failed", "voicemail"})
FINAL_STATUSES = {
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no_answer",
    "failed": "failed",
    "canceled": "canceled",
}
SKIP_OUTCOMES = {
    "dnd": "skipped_dnd",
    "opted_out": "skipped_opted_out",
    "calling_hours": "skipped_hours",
    "dlt_missing": "skipped_dlt",
    "rate_limited": "skipped_rate_limited",
    "overloaded": "skipped_overloaded",
}
DEFERRALS = frozenset(
    {"skipped_hours", "skipped_rate_limited", "skipped_overloaded"}
)  # a queued contact waiting for these
RATE_LIMITED_RETRY_MIN_S = 60  # a refused-for-rate contact never retries sooner (retry_after_s may be 0)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A contact this instance claimed: what the placer needs, and when it may dial."""

    contact_id: int
    campaign_id: str
    to: str
    context: dict[str, Any]
    timezone: str | None
    flow: str
    from_number: str
    purpose: Purpose
    dlt: DltFields | None
    window: CallingWindow | None
    attempt: int
    claimed_at: dt.datetime
    slot_at: dt.datetime  # the campaign's rate: dial at or after this instant

    def request(self) -> OutboundRequest:
        return OutboundRequest(
            to=self.to,
            from_=self.from_number,
            flow=self.flow,
            purpose=self.purpose,
            context=self.context,
            dlt=self.dlt,
            window=self.window,
            timezone=self.timezone,
            campaign_id=self.campaign_id,
            contact_id=self.contact_id,
        )


# --- claiming ----------------------------------------------------------------------------------
async def claim(
    db: Database, instance_id: str, now: dt.datetime, *, limit: int, horizon_s: float = 1.0
) -> list[Claimed]:
    """Claim up to ``limit`` contacts over all active campaigns, each within its campaign's
    ``max_concurrent`` and with a slot (``calls_per_second``) starting before
    ``now + horizon_s`` (so no instance hoards slots far ahead)."""
    if limit <= 0:
        return []
    async with db.sessionmaker() as s:
        ids = (
            await s.scalars(select(Campaign.id).where(Campaign.status == "active").order_by(Campaign.next_dial_at))
        ).all()
    out: list[Claimed] = []
    for campaign_id in ids:
        if len(out) >= limit:
            break
        out += await _claim_campaign(db, campaign_id, instance_id, now, limit - len(out), horizon_s)
    return out


async def _claim_campaign(
    db: Database, campaign_id: str, instance_id: str, now: dt.datetime, limit: int, horizon_s: float
) -> list[Claimed]:
    finished = False
    claimed: list[Claimed] = []
    async with db.sessionmaker() as s, s.begin():
        if db.is_sqlite:  # take the write lock first: the read below cannot go stale
            taken = await s.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id, Campaign.status == "active")
                .values(updated_at=Campaign.updated_at)
            )
            if not taken.rowcount:  # type: ignore[attr-defined]
                return []
        campaign = (
            await s.scalars(
                select(Campaign)
                .where(Campaign.id == campaign_id, Campaign.status == "active")
                .with_for_update(skip_locked=True)
            )
        ).first()
        if campaign is None:  # another instance holds it this instant, or it is no longer active
            return []
        busy = await s.scalar(
            select(func.count())
            .select_from(CampaignContact)
            .where(CampaignContact.campaign_id == campaign_id, CampaignContact.state.in_(ACTIVE_STATES))
        )
        busy = busy or 0
        interval = 1.0 / campaign.calls_per_second
        base = max(campaign.next_dial_at, now)
        ahead = (now + dt.timedelta(seconds=horizon_s) - base).total_seconds()
        by_rate = math.ceil(ahead / interval) if ahead > 0 else 0
        n = min(limit, campaign.max_concurrent - busy, by_rate)
        if n <= 0:
            return []
        rows = (
            await s.scalars(
                select(CampaignContact)
                .where(
                    CampaignContact.campaign_id == campaign_id,
                    CampaignContact.state == "queued",
                    CampaignContact.next_attempt_at <= now,
                )
                .order_by(CampaignContact.id)
                .limit(n)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not rows:
            finished = busy == 0
        else:
            window = CallingWindow.model_validate(campaign.window) if campaign.window else None
            dlt = DltFields.model_validate(campaign.dlt) if campaign.dlt else None
            claimed = [
                Claimed(
                    contact_id=row.id,
                    campaign_id=campaign_id,
                    to=row.to_number,
                    context=dict(row.context or {}),
                    timezone=row.timezone,
                    flow=campaign.flow,
                    from_number=campaign.from_number,
                    purpose=campaign.purpose,  # type: ignore[arg-type]
                    dlt=dlt,
                    window=window,
                    attempt=row.attempts + 1,
                    claimed_at=now,
                    slot_at=base + dt.timedelta(seconds=i * interval),
                )
                for i, row in enumerate(rows)
            ]
            await s.execute(
                update(CampaignContact)
                .where(CampaignContact.id.in_([row.id for row in rows]))
                .values(
                    state="claimed",
                    claimed_by=instance_id,
                    claimed_at=now,
                    attempts=CampaignContact.attempts + 1,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            campaign.next_dial_at = base + dt.timedelta(seconds=len(rows) * interval)
            campaign.updated_at = now
    if finished:
        await _finish_if_done(db, campaign_id, now)
        return []
    return claimed


async def still_claimed(db: Database, contact_id: int, instance_id: str) -> bool:
    """Whether ``instance_id`` still holds its claim (not reaped, not cancelled): checked
    just before the REST request, so a claim lost meanwhile is never dialled."""
    async with db.sessionmaker() as s:
        state = await s.scalar(
            select(CampaignContact.state).where(
                CampaignContact.id == contact_id, CampaignContact.claimed_by == instance_id
            )
        )
    return state == "claimed"


async def start_dialing(db: Database, contact_id: int, instance_id: str, *, now: dt.datetime | None = None) -> bool:
    """Take ``instance_id``'s claim into ``dialing`` (no CallSid yet) just before the REST
    request: from here the claim reaper never puts the contact back, so a request whose
    answer is lost (its instance died) cannot be followed by a second dial. The reaper asks
    Twilio instead (``reaper.reap``). False when the claim is no longer this instance's."""
    async with db.sessionmaker() as s, s.begin():
        result = await s.execute(
            update(CampaignContact)
            .where(
                CampaignContact.id == contact_id,
                CampaignContact.claimed_by == instance_id,
                CampaignContact.state == "claimed",
            )
            .values(state="dialing", call_sid=None, updated_at=now or utcnow())
            .execution_options(synchronize_session=False)
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _placing(contact: CampaignContact) -> bool:
    """Claimed, or dialing with its REST request in flight (no CallSid yet)."""
    return contact.state == "claimed" or (contact.state == "dialing" and contact.call_sid is None)


# --- what the placer did -----------------------------------------------------------------------
async def mark_dialing(db: Database, contact_id: int, call_sid: str, *, now: dt.datetime | None = None) -> bool:
    """Twilio took the call. False when the contact is no longer claimed (a fast callback
    already moved it on: fine; or its claim was reaped: logged)."""
    now = now or utcnow()
    async with db.sessionmaker() as s, s.begin():
        result = await s.execute(
            update(CampaignContact)
            .where(
                CampaignContact.id == contact_id,
                (CampaignContact.state == "claimed")
                | ((CampaignContact.state == "dialing") & CampaignContact.call_sid.is_(None)),
            )
            .values(state="dialing", call_sid=call_sid, updated_at=now)
        )
        dialing = bool(result.rowcount)  # type: ignore[attr-defined]
        current = None if dialing else await s.get(CampaignContact, contact_id)
        call = await s.get(Call, call_sid) if dialing else None
    if dialing:
        # Twilio's final callback may have landed before the placer wrote the call row (it
        # then recorded the status on a bare row): apply it now, or the contact would wait
        # for the reaper.
        if call is not None and call.status in TERMINAL_STATUSES:
            await on_call_status(db, call_sid, call.status, answered_by=call.answered_by, now=now)
        return True
    if current is None or current.call_sid != call_sid:
        log.warning("dialled contact was no longer claimed", contact_id=contact_id, call_sid=call_sid)
    return False


async def mark_skipped(db: Database, contact_id: int, refusal: Refusal, *, now: dt.datetime | None = None) -> None:
    """The placer refused the call (no REST request; the attempt is refunded). Calling hours
    requeue the contact for ``next_allowed_at``; a rate limit for its ``next_allowed_at`` or
    ``retry_after_s``, else the campaign's ``retry_after_s`` (at least a minute); an
    overloaded instance for its ``retry_after_s``; dnd, opted_out and dlt_missing are final."""
    now = now or utcnow()
    outcome = SKIP_OUTCOMES[refusal.reason]
    done = False
    async with db.sessionmaker() as s, s.begin():
        contact = await _lock_contact(s, db, CampaignContact.id == contact_id)
        if contact is None or not _placing(contact):
            return
        campaign = await s.get(Campaign, contact.campaign_id)
        contact.attempts = max(contact.attempts - 1, 0)
        contact.outcome = outcome
        contact.claimed_by = None
        _touch(contact, now)
        retry_at = _deferral(refusal, campaign, now)
        if retry_at is not None and campaign is not None and campaign.status in ("active", "paused"):
            contact.state = "queued"
            contact.next_attempt_at = retry_at
        else:
            contact.state = "done"
            done = True
        campaign_id = contact.campaign_id
    if done:
        await _finish_if_done(db, campaign_id, now)


def _deferral(refusal: Refusal, campaign: Campaign | None, now: dt.datetime) -> dt.datetime | None:
    if refusal.reason not in ("calling_hours", "rate_limited", "overloaded"):
        return None
    at = refusal.detail.get("next_allowed_at")
    if isinstance(at, str):
        parsed = dt.datetime.fromisoformat(at)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if refusal.reason == "calling_hours":
        return None  # the window never opens (no next instant): final
    hint = refusal.detail.get("retry_after_s")
    if isinstance(hint, int | float) and hint > 0:  # the placer knows (the account's call rate)
        return now + dt.timedelta(seconds=hint)
    retry_s = max(campaign.retry_after_s if campaign else 0, RATE_LIMITED_RETRY_MIN_S)
    return now + dt.timedelta(seconds=retry_s)


async def mark_failed_to_place(db: Database, contact_id: int, error: str, *, now: dt.datetime | None = None) -> None:
    """Twilio's REST API refused or failed: the attempt counts, retried like a failed call."""
    now = now or utcnow()
    log.warning("campaign call not placed", contact_id=contact_id, error=error)
    async with db.sessionmaker() as s, s.begin():
        contact = await _lock_contact(s, db, CampaignContact.id == contact_id)
        if contact is None or not _placing(contact):
            return
        done = await _end_attempt(s, contact, "failed", retryable=True, now=now)
        campaign_id = contact.campaign_id
    if done:
        await _finish_if_done(db, campaign_id, now)


# --- what Twilio says --------------------------------------------------------------------------
async def on_call_status(
    db: Database, call_sid: str, status: str, *, answered_by: str | None = None, now: dt.datetime | None = None
) -> None:
    """A status callback of a campaign call (call the webhook after updating the call row):
    ``in-progress`` -> live; a final status -> the contact's outcome (``opted_out`` or
    ``voicemail`` when the call row says so), retried while attempts remain. Idempotent;
    a callback of an earlier attempt is ignored."""
    now = now or utcnow()
    async with db.sessionmaker() as s, s.begin():
        call = await s.get(Call, call_sid)
        contact = await _contact_of(s, db, call_sid, call)
        if contact is None:
            return
        contact.call_sid = call_sid
        _touch(contact, now)
        done = False
        if status in FINAL_STATUSES:
            outcome, retryable = _outcome(status, call, answered_by)
            done = await _end_attempt(s, contact, outcome, retryable=retryable, now=now)
        elif status == "in-progress":
            contact.state = "live"
        elif contact.state == "claimed":
            contact.state = "dialing"
        campaign_id = contact.campaign_id
    if done:
        await _finish_if_done(db, campaign_id, now)


async def on_answered_by(db: Database, call_sid: str, answered_by: str, *, now: dt.datetime | None = None) -> None:
    """An async AMD callback: the call was answered (by whom is read from the call row, or the
    final status callback's ``AnsweredBy``, when the call ends)."""
    await on_call_status(db, call_sid, "in-progress", answered_by=answered_by, now=now)


def _outcome(status: str, call: Call | None, answered_by: str | None) -> tuple[str, bool]:
    """The contact's outcome of a finished call, and whether it may be retried."""
    call_outcome = call.outcome if call is not None else None
    machine = answered_by or (call.answered_by if call is not None else None) or ""
    if call_outcome == "opted_out":
        return "opted_out", False
    if call_outcome == "fax" or machine == "fax":
        return "failed", False  # a fax line never becomes a person
    if call_outcome == "voicemail" or machine.startswith("machine"):
        return "voicemail", True
    return FINAL_STATUSES[status], True


async def _contact_of(s: AsyncSession, db: Database, call_sid: str, call: Call | None) -> CampaignContact | None:
    """The contact a callback is about, locked; None when it is not (or no longer) waiting for it."""
    if call is not None and call.contact_id is not None:
        contact = await _lock_contact(s, db, CampaignContact.id == call.contact_id)
    else:
        contact = await _lock_contact(s, db, CampaignContact.call_sid == call_sid)
    if contact is None or contact.state not in ACTIVE_STATES:
        return None
    if contact.call_sid == call_sid:
        return contact
    # A callback that beat mark_dialing: it must be this attempt's call, not a late one of the last.
    early = _placing(contact) and call is not None and contact.claimed_at is not None
    return contact if early and call.started_at >= contact.claimed_at else None  # type: ignore[union-attr,operator]


async def _end_attempt(
    s: AsyncSession, contact: CampaignContact, outcome: str, *, retryable: bool, now: dt.datetime
) -> bool:
    """Record an attempt's outcome: back to the queue when it may be retried, else done (True)."""
    campaign = await s.get(Campaign, contact.campaign_id)
    contact.outcome = outcome
    contact.claimed_by = None
    _touch(contact, now)
    if (
        retryable
        and outcome in RETRYABLE
        and campaign is not None
        and campaign.status in ("active", "paused")
        and contact.attempts < campaign.max_attempts
    ):
        contact.state = "queued"
        contact.next_attempt_at = now + dt.timedelta(seconds=campaign.retry_after_s)
        return False
    contact.state = "done"
    return True


def _touch(contact: CampaignContact, now: dt.datetime) -> None:
    # Flagged even when unchanged: else the flush lets the column's onupdate stamp the wall clock.
    contact.updated_at = now
    flag_modified(contact, "updated_at")


async def _lock_contact(s: AsyncSession, db: Database, where: ColumnElement[bool]) -> CampaignContact | None:
    if db.is_sqlite:  # a no-op UPDATE takes the write lock before the read
        await s.execute(
            update(CampaignContact)
            .where(where)
            .values(updated_at=CampaignContact.updated_at)
            .execution_options(synchronize_session=False)
        )
    return (await s.scalars(select(CampaignContact).where(where).with_for_update())).first()


async def _finish_if_done(db: Database, campaign_id: str, now: dt.datetime) -> bool:
    """Mark an active campaign completed once none of its contacts is open."""
    open_contact = exists().where(CampaignContact.campaign_id == campaign_id, CampaignContact.state.in_(OPEN_STATES))
    async with db.sessionmaker() as s, s.begin():
        result = await s.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status == "active", ~open_contact)
            .values(status="completed", finished_at=now, updated_at=now)
        )
    if result.rowcount:  # type: ignore[attr-defined]
        log.info("campaign completed", campaign_id=campaign_id)
        return True
    return False
