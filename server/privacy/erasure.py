"""Erasure of one person on request (India's DPDP Act 2023 s.12, GDPR art. 17).

``erase_person`` removes or anonymises everything stored about the holder of one phone
number (``dialgraph data erase --phone +E164``, ``DELETE /api/people/{phone}``):

- their calls (from or to the number): the number becomes ``erased``; the words kept on
  the row (``context``, ``transfer_summary``, ``transfer_reason``, ``reply_heard``) are
  dropped; flow, direction, times, status, outcome, usage and cost stay (the business
  record, no longer about anyone);
- the call events (transcript turns) of those calls: deleted;
- their LangGraph conversation threads (``thread_id`` and ``previous_thread_id`` of those
  calls, unless another person's call shares one): deleted through the saver;
- messages from the number, with it as the callback number, or taken on their calls: deleted;
- appointments booked for the number: deleted; the contact row: deleted;
- the recordings of their calls (``data_dir/recordings/*/<CallSid>.wav``): deleted, after
  the database part (``recordings_dir`` given: ``erase_person_by_settings`` always gives it);
- campaign contacts: number anonymised (``erased-<id>``), context dropped, and a contact not
  yet finished is finished with outcome ``erased`` (never dialled);
- outbound audit rows: the number becomes ``erased`` (decision, rule and time stay);
- do-not-call entries (opt-out and NCPR alike): replaced by the keyed hash of the number
  (``tools.do_not_call.number_hash``), which every compliance check also looks up, so an
  erased person who opted out is still never called. (The NCPR registry is public, and a
  newer registry import brings its plain entry back; until then the hash keeps it.)

Nothing of other people is touched. The database part runs in one transaction, after the
checkpoint threads are deleted (so a failure half-way leaves the calls findable and a
second run finishes the job). The log names the person only by the keyed hash, with the
counts. A call in progress while its caller is erased may write again after the erasure:
erase after it ends.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog
from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy import String, and_, cast, delete, literal, null, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dialgraph.graphs.checkpoint import checkpointer
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import (
    Appointment,
    Call,
    CallEvent,
    CampaignContact,
    Contact,
    DoNotCall,
    Message,
    OutboundAudit,
)
from dialgraph.server.core.settings import Settings
from dialgraph.server.privacy.hashing import number_hash, privacy_key
from dialgraph.telephony.call.recording import delete_recordings

log = structlog.get_logger(__name__)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ERASED = "erased"  # what an erased number becomes on call and audit rows
ERASED_OUTCOME = "erased"  # a campaign contact finished by erasure


class InvalidPhone(ValueError):
    """Not an E.164 number (``+`` and 7-15 digits)."""


@dataclass(slots=True)
class ErasureReport:
    """What an erasure did, per kind; ``ref`` names the person in logs (keyed hash)."""

    ref: str
    calls: int = 0  # call rows anonymised
    call_events: int = 0  # deleted
    checkpoint_threads: int = 0  # deleted
    messages: int = 0  # deleted
    appointments: int = 0  # deleted
    contacts: int = 0  # deleted
    campaign_contacts: int = 0  # anonymised
    outbound_audit: int = 0  # anonymised
    do_not_call: int = 0  # entries kept as the keyed hash
    recordings: int = 0  # call recordings deleted

    def counts(self) -> dict[str, int]:
        data = asdict(self)
        data.pop("ref")
        return data


def _rows(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def erase_person(
    db: Database, saver: BaseCheckpointSaver[Any], phone: str, *, key: bytes, data_dir: Path | None = None
) -> ErasureReport:
    """Erase the person holding ``phone`` (see the module docstring). ``key``: the
    deployment's hash key (``hashing.privacy_key``). InvalidPhone for a non-E.164 number."""
    if not E164.match(phone):
        raise InvalidPhone("must be an E.164 number: + and 7 to 15 digits")
    hashed = number_hash(phone, key)
    report = ErasureReport(ref=hashed)
    theirs = or_(Call.from_number == phone, Call.to_number == phone)

    # 1. Their conversation threads, through the saver (LangGraph's own tables and format).
    async with db.sessionmaker() as s:
        rows = (await s.execute(select(Call.thread_id, Call.previous_thread_id).where(theirs))).all()
        sids = list(await s.scalars(select(Call.sid).where(theirs)))
        threads = {t for row in rows for t in row if t}
        if threads:  # a thread another person's call also uses is not theirs alone: keep it
            shared = await s.scalars(select(Call.thread_id).where(Call.thread_id.in_(threads), ~theirs))
            threads -= set(shared)
    for thread_id in sorted(threads):
        await saver.adelete_thread(thread_id)
    report.checkpoint_threads = len(threads)

    # 2. Everything in SQL, in one transaction.
    their_sids = select(Call.sid).where(theirs).scalar_subquery()
    async with db.engine.begin() as conn:
        report.call_events = _rows(await conn.execute(delete(CallEvent).where(CallEvent.call_sid.in_(their_sids))))
        report.messages = _rows(
            await conn.execute(
                delete(Message).where(
                    or_(
                        Message.from_number == phone, Message.callback_number == phone, Message.call_sid.in_(their_sids)
                    )
                )
            )
        )
        report.appointments = _rows(await conn.execute(delete(Appointment).where(Appointment.phone == phone)))
        report.contacts = _rows(await conn.execute(delete(Contact).where(Contact.phone == phone)))
        await conn.execute(
            update(CampaignContact)
            .where(and_(CampaignContact.to_number == phone, CampaignContact.state != "done"))
            .values(state="done", outcome=ERASED_OUTCOME, claimed_by=None)
        )
        report.campaign_contacts = _rows(
            await conn.execute(
                update(CampaignContact)
                .where(CampaignContact.to_number == phone)
                .values(to_number=literal("erased-") + cast(CampaignContact.id, String), context=null())
            )
        )
        report.outbound_audit = _rows(
            await conn.execute(update(OutboundAudit).where(OutboundAudit.to_number == phone).values(to_number=ERASED))
        )
        entries = (
            await conn.execute(
                select(DoNotCall.source, DoNotCall.categories, DoNotCall.added_at).where(DoNotCall.number == phone)
            )
        ).all()
        if entries:
            insert = (sqlite.insert if db.is_sqlite else postgresql.insert)(DoNotCall)
            kept = [
                {
                    "number": hashed,
                    "source": source,
                    "categories": categories,
                    "reason": "erased on request",
                    "call_sid": None,
                    "added_at": added_at,
                }
                for source, categories, added_at in entries
            ]
            await conn.execute(insert.on_conflict_do_nothing(index_elements=["number", "source"]), kept)
            await conn.execute(delete(DoNotCall).where(DoNotCall.number == phone))
        report.do_not_call = len(entries)
        report.calls = _rows(
            await conn.execute(
                update(Call)
                .where(theirs)
                .values(
                    context=null(),
                    transfer_summary=None,
                    transfer_reason=None,
                    reply_heard=None,
                    # the post-call summary is about the person; a marker, not NULL, so the
                    # analysis sweeper never writes a new one
                    analysis={"failed": True, "reason": "erased"},
                )
            )
        )
        await conn.execute(update(Call).where(Call.from_number == phone).values(from_number=ERASED))
        await conn.execute(update(Call).where(Call.to_number == phone).values(to_number=ERASED))
    if data_dir is not None:  # 3. their calls' recordings (files: in a worker thread)
        report.recordings = await asyncio.to_thread(delete_recordings, data_dir, sids)
    log.info("person_erased", person=hashed, **report.counts())
    return report


async def erase_person_by_settings(settings: Settings, phone: str, *, db: Database | None = None) -> ErasureReport:
    """``erase_person`` on the configured database (``db`` when the caller has one open),
    with a checkpoint saver of its own for the duration."""
    if not E164.match(phone):
        raise InvalidPhone("must be an E.164 number: + and 7 to 15 digits")
    async with AsyncExitStack() as stack:
        if db is None:
            db = Database(settings.effective_database_url, pool_size=2)
            stack.push_async_callback(db.aclose)
        saver = await checkpointer(settings.effective_database_url, stack=stack, pool_size=2)
        return await erase_person(db, saver, phone, key=privacy_key(settings), data_dir=settings.data_dir)


__all__ = ["ERASED", "ERASED_OUTCOME", "ErasureReport", "InvalidPhone", "erase_person", "erase_person_by_settings"]
