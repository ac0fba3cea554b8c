"""The session keeps ``calls.reply_heard`` in step with the marks Twilio echoes, and a
reconnected stream repairs the interrupted reply with it before its reconnection line
(the app under uvicorn, scripted speech and graph; SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import event

from dialgraph.server.core.call_store import get_call, record_call, transcript, update_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.reply_heard import ReplyProgressWriter, clear_heard, peek_heard
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import CallSignal
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.scripted import ScriptedRecognizer, ScriptedRunner, ScriptedSynthesizer
from dialgraph.telephony.speech.base import Final
from dialgraph.telephony.speech.vad import EnergyVad
from tests.telephony.harness import WAIT_S, Served, TwilioMediaClient, expected_messages, new_call, new_sids, serve
from tests.telephony.test_session_faults import FaultyRunner

GREETING = "Hello and welcome to Acme Dental. How can I help?"
ANSWER = "Sure thing. Which day suits you best?"


async def heard_becomes(db: Database, sid: str, want: str | None, *, other_than: bool = False) -> None:
    """Until the call row holds ``want`` (or anything else, with ``other_than``): the
    session writes asynchronously."""
    async with asyncio.timeout(20):
        while True:
            call = await get_call(db, sid)
            if call is not None and (call.reply_heard == want) != other_than:
                return
            await asyncio.sleep(0.02)


async def sessions_finished(served: Served, count: int) -> None:
    async with asyncio.timeout(20):
        while len(served.finished) < count:
            await asyncio.sleep(0.02)


def first_phrase_marks(client: TwilioMediaClient, synth: ScriptedSynthesizer, serial: int, generation: int) -> int:
    return sum(
        1 for m in expected_messages(client.stream_sid, [synth.audio_for(serial)], generation) if m["event"] == "mark"
    )


async def test_heard_progress_is_stored_and_repaired_after_a_drop(settings: Settings) -> None:
    recognizer = ScriptedRecognizer(script=[(5, Final("I need a cleaning", 0.0, 0.1, speech_final=True))])
    synth = ScriptedSynthesizer()
    runner = ScriptedRunner(
        greeting=GREETING,
        replies={"I need a cleaning": ANSWER, "signal:reconnected": "Sorry about that, we were cut off."},
    )
    overrides = Overrides(
        recognizer=recognizer,
        synthesizer=synth,
        vad_factory=EnergyVad,
        runners={"scheduling": runner, "support": runner, "sales": runner},
        call_control=object(),
    )
    call_sid, stream_sid = new_sids()
    async with serve(settings, overrides) as served:
        db: Database = served.app.state.services.db
        token = await new_call(settings, served.app, call_sid=call_sid)
        async with TwilioMediaClient.connect(served.url, settings, call_sid=call_sid, stream_sid=stream_sid) as client:
            await client.start(token)
            # The greeting: its first phrase plays, then the rest.
            await client.until(lambda m: m["event"] == "media")
            n = first_phrase_marks(client, synth, 0, 1)
            await client.until_mark(f"g1.{n - 1}")
            for name in client.marks()[:n]:
                await client.echo_mark(name)
            await heard_becomes(db, call_sid, "Hello and welcome to Acme Dental.")
            total = n + first_phrase_marks(client, synth, 1, 1)
            await client.until_mark(f"g1.{total - 1}")
            for name in client.marks()[n:total]:
                await client.echo_mark(name)
            await heard_becomes(db, call_sid, None)  # played to the end: nothing to repair
            assert runner.heard == []

            # The caller's turn; the answer's first phrase plays, then the line drops.
            since = len(client.received)
            await client.media(frames=5)
            await client.until(lambda m: m["event"] == "media")
            n = first_phrase_marks(client, synth, 2, 2)
            await client.until_mark(f"g2.{n - 1}")
            for name in client.marks(since)[:n]:
                await client.echo_mark(name)
            await heard_becomes(db, call_sid, "Sure thing.")
            client.ws.transport.abort()  # the network fails: no stop, no close frame
        await sessions_finished(served, 1)
        assert (await get_call(db, call_sid)).reply_heard == "Sure thing."  # type: ignore[union-attr]

        # Twilio reconnects (``/twilio/stream-ended`` answered signal "reconnected").
        token = await new_call(settings, served.app, call_sid=call_sid, signal="reconnected")
        _, stream_sid2 = new_sids()
        async with TwilioMediaClient.connect(served.url, settings, call_sid=call_sid, stream_sid=stream_sid2) as client:
            await client.start(token)
            await client.until(lambda m: m["event"] == "media")
            # Taken by the repair (then "" again: the reconnection line is playing).
            await heard_becomes(db, call_sid, "Sure thing.", other_than=True)
            await client.stop()
        await sessions_finished(served, 2)
        events = await transcript(db, call_sid)

    # The repair came first, with what the caller heard, then the reconnection line.
    assert runner.heard == ["Sure thing."]
    assert runner.inputs[-1] == ("respond", CallSignal("reconnected"))
    drop = [e for e in events if e.interrupted]
    assert [(e.role, e.text, (e.data or {}).get("trigger")) for e in drop] == [("agent", "Sure thing.", "drop")]


async def test_a_failed_repair_survives_a_second_drop_during_the_reconnection_line(settings: Settings) -> None:
    heard = "Sure thing. We have Monday at"  # left by a stream that dropped mid-reply
    line = "Sorry about that. We were cut off."
    synth = ScriptedSynthesizer()
    runner = FaultyRunner(replies={"signal:reconnected": line}, heard_failures=1)
    overrides = Overrides(
        recognizer=ScriptedRecognizer(),
        synthesizer=synth,
        vad_factory=EnergyVad,
        runners={"scheduling": runner, "support": runner, "sales": runner},
        call_control=object(),
    )
    call_sid = new_sids()[0]
    async with serve(settings, overrides) as served:
        db: Database = served.app.state.services.db
        token = await new_call(settings, served.app, call_sid=call_sid, signal="reconnected")
        await update_call(db, call_sid, reply_heard=heard)

        # The repair fails; the reconnection line's audio begins, its first phrase is heard, and
        # the line drops again. What the caller heard of the turn is kept, the line's part after it.
        async with TwilioMediaClient.connect(
            served.url, settings, call_sid=call_sid, stream_sid=new_sids()[1]
        ) as client:
            await client.start(token)
            await client.until(lambda m: m["event"] == "media")
            n = first_phrase_marks(client, synth, 0, 1)
            await client.until_mark(f"g1.{n - 1}")
            for name in client.marks()[:n]:
                await client.echo_mark(name)
            await heard_becomes(db, call_sid, f"{heard} Sorry about that.")
            client.ws.transport.abort()
        await sessions_finished(served, 1)
        assert (await get_call(db, call_sid)).reply_heard == f"{heard} Sorry about that."  # type: ignore[union-attr]

        # The next stream repairs the turn with all of it, then says its own line.
        runner.heard_tried.clear()
        token = await new_call(settings, served.app, call_sid=call_sid, signal="reconnected")
        async with TwilioMediaClient.connect(
            served.url, settings, call_sid=call_sid, stream_sid=new_sids()[1]
        ) as client:
            await client.start(token)
            async with asyncio.timeout(WAIT_S):
                await runner.heard_tried.wait()
            await client.until(lambda m: m["event"] == "media")
            await client.stop()
        await sessions_finished(served, 2)
        events = await transcript(db, call_sid)
        call = await get_call(db, call_sid)

    assert runner.calls == ["record_heard", "respond", "record_heard", "respond"]
    assert runner.heard == [f"{heard} Sorry about that."]
    assert call is not None and call.reply_heard == ""  # the new line's audio began; nothing of it heard
    drop = [e for e in events if e.interrupted]
    assert [(e.role, e.text, (e.data or {}).get("trigger")) for e in drop] == [
        ("agent", f"{heard} Sorry about that.", "drop")
    ]


async def new_calls(db: Database, count: int) -> list[str]:
    sids = [new_sids()[0] for _ in range(count)]
    for sid in sids:
        await record_call(
            db, sid=sid, direction="inbound", from_number="", to_number="", flow="scheduling", thread_id=sid
        )
    return sids


async def stored(db: Database, sid: str) -> str | None:
    call = await get_call(db, sid)
    assert call is not None
    return call.reply_heard


def count_commits(db: Database) -> list[int]:
    commits = [0]

    def on_commit(_conn: object) -> None:
        commits[0] += 1

    event.listen(db.engine.sync_engine, "commit", on_commit)
    return commits


async def test_every_calls_latest_value_goes_out_in_one_transaction(db: Database) -> None:
    sids = await new_calls(db, 3)
    commits = count_commits(db)
    # A long pause between rounds: only the first round and the explicit flushes write.
    async with ReplyProgressWriter(db, interval_s=60) as writer:
        for sid in sids:
            writer.set(sid, "")
            writer.set(sid, "One.")
        writer.set(sids[0], "One. Two.")
        writer.set(sids[2], None)
        await writer.flush_now()
        assert commits[0] == 1
        assert [await stored(db, sid) for sid in sids] == ["One. Two.", "One.", None]

        # In the pause after that round: a session's end does not wait the pause out.
        writer.set(sids[1], "One. Two. Three.")
        await writer.flush_call(sids[1])
        assert await stored(db, sids[1]) == "One. Two. Three."
        await writer.flush_call(sids[1])  # nothing pending: no write
        assert commits[0] == 2
        assert writer.rows == 4

        # Closing writes what is still pending.
        writer.set(sids[2], "Bye.")
    assert await stored(db, sids[2]) == "Bye."


async def test_peek_prefers_the_value_pending_here_and_a_clear_happens_once(db: Database) -> None:
    (sid,) = await new_calls(db, 1)
    async with ReplyProgressWriter(db, interval_s=60) as writer:
        writer.set(sid, "One.")
        await writer.flush_now()
        writer.set(sid, "One. Two.")  # not stored yet: the pause runs
        assert await writer.peek_heard(sid) == "One. Two."
        writer.clear_heard(sid, "One. Two.")  # repaired: the pending value goes, the row is cleared
        assert await writer.peek_heard(sid) is None
        await writer.flush_now()
        assert await stored(db, sid) is None

        writer.set(sid, "Three.")
        await writer.flush_now()
    assert await peek_heard(db, sid) == "Three."  # another instance: from the row alone
    assert await clear_heard(db, sid, "Three.")
    assert not await clear_heard(db, sid, "Three.")  # a repair happens once
    assert await peek_heard(db, sid) is None


async def test_a_failed_round_keeps_its_values_for_the_next(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'late.db'}")  # no tables yet: writes fail
    try:
        async with ReplyProgressWriter(db, interval_s=60) as writer:
            writer.set("CA-late", "One.")
            await writer.flush_call("CA-late")  # failed, but the session's end is not held up
            assert writer.rows == 0
            await db.upgrade()
            await record_call(
                db, sid="CA-late", direction="inbound", from_number="", to_number="", flow="scheduling", thread_id=""
            )
            await writer.flush_now()
            assert writer.rows == 1
            assert await stored(db, "CA-late") == "One."
    finally:
        await db.aclose()
