"""Finishing what dead instances left in the contact queue.

``reap`` puts stale claims back in the queue (a claim whose call was placed becomes dialing),
and fetches from Twilio the calls nobody heard of for ``stale_call_s`` (their callbacks went
to the dead instance, or nowhere), recording their outcome as a callback would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import exists, select, update

from dialgraph.server.core.call_store import update_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Call, CampaignContact
from dialgraph.server.outbound.contact_queue import FINAL_STATUSES, on_call_status
from dialgraph.telephony.twilio.call_control import CallControlError

__all__ = ["FetchStatus", "FindCalls", "ReapReport", "reap"]

log = structlog.get_logger(__name__)

# Twilio's status of a call -> (status, answered_by); CallControl.fetch_status in production.
FetchStatus = Callable[[str], Awaitable[tuple[str, str | None]]]
# Calls Twilio has to a number since an instant -> [(sid, status, answered_by)]; CallControl.find_calls.
FindCalls = Callable[..., Awaitable[list[tuple[str, str, str | None]]]]
# A REST request in flight takes at most this long (the account's rate slot, 5 s, plus the
# client's timeout, 10 s, with margin): only then is a dial without a CallSid looked up.
PLACING_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class ReapReport:
    """What one ``reap`` round did."""

    requeued: int  # expired claims put back
    reconciled: int  # stale calls fetched from Twilio


async def reap(
    db: Database,
    now: dt.datetime,
    *,
    claim_ttl_s: float,
    stale_call_s: float,
    fetch_status: FetchStatus,
    find_calls: FindCalls | None = None,
    limit: int = 50,
) -> ReapReport:
    """Put claims older than ``claim_ttl_s`` back in the queue (never dialled: attempt
    refunded; one whose call row exists is dialing instead), and reconcile up to ``limit``
    dialing/live contacts not heard of for ``stale_call_s`` by fetching their call from Twilio
    (one instance per contact). A contact whose dial began but whose CallSid never came back
    (its instance died during the REST request) is looked up, after ``PLACING_MAX_S``: its
    call row, else Twilio's calls to the number since the claim (``find_calls``); found, it is
    reconciled like any call; not found, it was never dialled and goes back to the queue."""
    expired = (CampaignContact.state == "claimed", CampaignContact.claimed_at < now - dt.timedelta(seconds=claim_ttl_s))
    # A call row of this attempt means the REST request was made (its instance died before
    # mark_dialing): that contact is dialing, never dialled again.
    attempt_call = (
        Call.campaign_id == CampaignContact.campaign_id,
        Call.contact_id == CampaignContact.id,
        Call.started_at >= CampaignContact.claimed_at,
    )
    this_attempt = select(Call.sid).where(*attempt_call).order_by(Call.started_at.desc()).limit(1).scalar_subquery()
    async with db.sessionmaker() as s, s.begin():
        result = await s.execute(
            update(CampaignContact)
            .where(*expired, ~exists().where(*attempt_call))
            .values(state="queued", claimed_by=None, attempts=CampaignContact.attempts - 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        await s.execute(
            update(CampaignContact)
            .where(*expired)
            .values(state="dialing", call_sid=this_attempt, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        requeued = int(result.rowcount)  # type: ignore[attr-defined]
        stale = (
            await s.execute(
                select(
                    CampaignContact.id,
                    CampaignContact.call_sid,
                    CampaignContact.updated_at,
                    CampaignContact.to_number,
                    CampaignContact.claimed_at,
                )
                .where(
                    CampaignContact.state.in_(("dialing", "live")),
                    CampaignContact.updated_at < now - dt.timedelta(seconds=stale_call_s),
                )
                .order_by(CampaignContact.updated_at)
                .limit(limit)
            )
        ).all()
    if requeued:
        log.info("expired claims requeued", contacts=requeued)
    reconciled = 0
    placing_cutoff = now - dt.timedelta(seconds=max(claim_ttl_s, stale_call_s, PLACING_MAX_S))
    for contact_id, call_sid, updated_at, to_number, claimed_at in stale:
        if call_sid is None and updated_at >= placing_cutoff:
            continue  # its REST request may still be in flight
        if not await _take_stale(db, contact_id, updated_at, now):
            continue
        if call_sid is None:
            call_sid = await _lost_dial(db, contact_id, to_number, claimed_at, now, find_calls)
            if not call_sid:
                requeued += call_sid is None
                continue
        try:
            call_status, answered_by = await fetch_status(call_sid)
        except CallControlError as exc:  # try again after stale_call_s
            if exc.status != 404:
                log.warning("stale call not fetched", call_sid=call_sid, error=str(exc))
                continue
            call_status, answered_by = "failed", None  # Twilio has no such call
        reconciled += 1
        if call_status in FINAL_STATUSES:
            values: dict[str, Any] = {"status": call_status}
            if answered_by:
                values["answered_by"] = answered_by
            await update_call(db, call_sid, **values)
            await on_call_status(db, call_sid, call_status, answered_by=answered_by, now=now)
        elif call_status == "in-progress":
            await on_call_status(db, call_sid, call_status, answered_by=answered_by, now=now)
    return ReapReport(requeued=requeued, reconciled=reconciled)


async def _lost_dial(
    db: Database,
    contact_id: int,
    to_number: str,
    claimed_at: dt.datetime | None,
    now: dt.datetime,
    find_calls: FindCalls | None,
) -> str | None:
    """The CallSid of a dial whose answer was lost, recorded on its contact; None (and the
    contact back in the queue, attempt refunded) when Twilio never got the request; "" when
    Twilio could not be asked (it stays dialing until the next round)."""
    since = claimed_at or now
    async with db.sessionmaker() as s:
        sid = await s.scalar(
            select(Call.sid)
            .where(Call.contact_id == contact_id, Call.started_at >= since)
            .order_by(Call.started_at.desc())
            .limit(1)
        )
    if sid is None and find_calls is not None:
        try:
            found = await find_calls(to_number, since=since)
        except CallControlError as exc:
            log.warning("lost dial not looked up", contact_id=contact_id, error=str(exc))
            return ""  # unknown: it stays dialing, looked up again next round
        sid = found[0][0] if found else None
    async with db.sessionmaker() as s, s.begin():
        where = (
            CampaignContact.id == contact_id,
            CampaignContact.state == "dialing",
            CampaignContact.call_sid.is_(None),
        )
        if sid:
            await s.execute(update(CampaignContact).where(*where).values(call_sid=sid, updated_at=now))
        else:
            await s.execute(
                update(CampaignContact)
                .where(*where)
                .values(state="queued", claimed_by=None, attempts=CampaignContact.attempts - 1, updated_at=now)
            )
    if sid:
        log.info("lost dial found at Twilio", contact_id=contact_id, call_sid=sid)
    else:
        log.info("lost dial never reached Twilio: requeued", contact_id=contact_id)
    return sid


async def _take_stale(db: Database, contact_id: int, seen_updated_at: dt.datetime, now: dt.datetime) -> bool:
    """Touch a stale contact so that only this instance fetches it this round."""
    async with db.sessionmaker() as s, s.begin():
        result = await s.execute(
            update(CampaignContact)
            .where(
                CampaignContact.id == contact_id,
                CampaignContact.updated_at == seen_updated_at,
                CampaignContact.state.in_(("dialing", "live")),
            )
            .values(updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]
