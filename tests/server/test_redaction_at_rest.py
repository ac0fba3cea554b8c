"""Redaction at the writers, so no caller can forget it (SQLite and PostgreSQL): the call
row's free text (``update_call``), events written directly (``add_events``: voicemail text,
keypad keys, data), the event writer's keypad events, the heard text of a reply in progress
(``ReplyProgressWriter``, whose clear must still match what it wrote). The graph side (a
keypad key acted on in its run, a heard-text repair on a redacted history) is in
``tests/graphs/test_checkpoint_privacy.py``."""

from __future__ import annotations

from sqlalchemy import select

from dialgraph.server.core import reply_heard
from dialgraph.server.core.call_events import CallEventWriter
from dialgraph.server.core.call_store import add_events, get_call, record_call, transcript, update_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Call, CallEvent
from dialgraph.server.core.redaction import RedactionSettings, Redactor
from dialgraph.server.core.reply_heard import ReplyProgressWriter
from tests.telephony.harness import new_sids

CARD = "4111111111111111"
SAID = "your card 4111 1111 1111 1111 is blocked"
STORED = "your card [card ending 1111] is blocked"


async def new_call(db: Database) -> str:
    sid = new_sids()[0]
    await record_call(db, sid=sid, direction="inbound", from_number="", to_number="", flow="support", thread_id=sid)
    return sid


async def test_the_call_rows_free_text_is_redacted_by_update_call(db: Database) -> None:
    sid = await new_call(db)
    await update_call(db, sid, transfer_summary=f"Jane, {SAID}", transfer_reason=SAID, outcome="transfer_requested")
    call = await get_call(db, sid)
    assert call is not None
    assert (call.transfer_summary, call.transfer_reason) == (f"Jane, {STORED}", STORED)
    assert call.outcome == "transfer_requested"
    # the redactor of the deployment's [redaction] when given: here cards are not redacted
    await update_call(db, sid, transfer_summary=SAID, redactor=Redactor(RedactionSettings(card=False)))
    call = await get_call(db, sid)
    assert call is not None and call.transfer_summary == SAID


async def test_events_written_directly_are_redacted(db: Database) -> None:
    sid = await new_call(db)
    await add_events(
        db,
        [
            CallEvent(call_sid=sid, kind="voicemail", role="agent", text=SAID),
            CallEvent(call_sid=sid, kind="dtmf", role="caller", text=CARD),
            CallEvent(call_sid=sid, kind="dtmf", role="caller", text="1"),
            CallEvent(call_sid=sid, kind="dial", role="system", text=SAID, data={"summary": SAID, "n": 1}),
        ],
    )
    events = await transcript(db, sid)
    assert [e.text for e in events] == [STORED, "[card ending 1111]", "1", STORED]
    assert events[3].data == {"summary": STORED, "n": 1}


async def test_the_event_writer_redacts_keys_typed_in_one_event(db: Database) -> None:
    sid = await new_call(db)
    async with CallEventWriter(db, interval_s=0.01) as writer:
        writer.record(CallEvent(call_sid=sid, kind="dtmf", role="caller", text="123456789"))
        writer.record(CallEvent(call_sid=sid, kind="turn", role="caller", text=SAID, data={"note": SAID}))
        await writer.flush_call(sid)
    events = await transcript(db, sid)
    assert [e.text for e in events] == ["[9 digits]", STORED]
    assert events[1].data == {"note": STORED}


async def test_heard_text_is_stored_redacted_and_its_clear_still_matches(db: Database) -> None:
    sid, other = await new_call(db), await new_call(db)
    async with ReplyProgressWriter(db, interval_s=0.01) as progress:
        progress.set(sid, SAID)
        progress.set(other, SAID)
        await progress.flush_call(sid)
        await progress.flush_call(other)
        assert await reply_heard.peek_heard(db, sid) == STORED
        peeked = await progress.peek_heard(sid)
        assert peeked == STORED
        progress.clear_heard(sid, peeked)  # what a resumed stream does after its repair
        progress.clear_heard(other, SAID)  # a caller holding the raw text: the same text, so it matches
        await progress.flush_call(sid)
        await progress.flush_call(other)
    async with db.sessionmaker() as s:
        rows = dict((await s.execute(select(Call.sid, Call.reply_heard).where(Call.sid.in_([sid, other])))).all())
    assert rows == {sid: None, other: None}
    await update_call(db, sid, reply_heard=SAID)
    assert await reply_heard.peek_heard(db, sid) == STORED
    assert await reply_heard.clear_heard(db, sid, SAID)  # the module's own clear matches too
