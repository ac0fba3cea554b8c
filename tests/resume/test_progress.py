"""The session keeps ``calls.reply_heard`` in step with the marks Twilio echoes, and a
reconnected stream repairs the interrupted reply with it before its reconnection line
(the app under uvicorn, scripted speech and graph; SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from graphs.events import CallSignal
from server.call_store import get_call, transcript
from server.db import Database
from server.services import Overrides
from server.settings import Settings
from telephony.reply_progress import ReplyProgress, take_heard
from telephony.speech import Final
from telephony.vad import EnergyVad
from tests.fakes.scripted_call import ScriptedRecognizer, ScriptedRunner, ScriptedSynthesizer
from tests.telephony.harness import Served, TwilioMediaClient, expected_messages, new_call, new_sids, serve

GREETING = "Hello, you reached Acme Dental. How can I help?"
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
            await heard_becomes(db, call_sid, "Hello, you reached Acme Dental.")
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


async def test_progress_writes_coalesce_and_take_is_once(db: Database, settings: Settings) -> None:
    sid, _ = new_sids()
    from server.call_store import record_call

    await record_call(db, sid=sid, direction="inbound", from_number="", to_number="", flow="scheduling", thread_id=sid)
    progress = ReplyProgress(db, sid, interval_s=0)
    progress.heard("")
    progress.heard("One.")
    progress.heard("One. Two.")
    await progress.flush()
    await progress.flush()  # unchanged: no second write
    assert progress.writes == 1
    assert (await get_call(db, sid)).reply_heard == "One. Two."  # type: ignore[union-attr]
    assert await take_heard(db, sid) == "One. Two."
    assert await take_heard(db, sid) is None  # a repair happens once
    progress.settled()
    await progress.flush()  # stored NULL already (taken) but the writer does not know: one write
    assert (await get_call(db, sid)).reply_heard is None  # type: ignore[union-attr]
