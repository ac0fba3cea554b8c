"""Faults inside a call: a failing graph run, synthesizer, checkpoint repair or database
write is one bad turn, never the end of the call; graph work stays in order around a
barge-in; a socket that goes silent ends its session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from dialgraph.server.core.call_events import CallEventWriter
from dialgraph.server.core.call_store import get_call, record_call, transcript, update_call
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.reply_heard import ReplyProgressWriter
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import CallerDigits, CallerInput, CallerText, RunnerEvent, TextChunk, TransferRequest
from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.call.session import APOLOGY, CallSession
from dialgraph.telephony.call.turn_policy import TurnPolicy
from dialgraph.telephony.simulator.protocol import TwilioProtocol
from dialgraph.telephony.simulator.scripted import ScriptedRecognizer, ScriptedRunner, ScriptedSynthesizer
from dialgraph.telephony.speech.base import AudioChunk, Final, ProviderError
from dialgraph.telephony.speech.vad import EnergyVad
from dialgraph.telephony.twilio.codec import Start
from dialgraph.telephony.twilio.protocol import MediaStreamProtocol
from tests.telephony.harness import WAIT_S, Served, TwilioMediaClient, connected_call, new_call, new_sids, serve
from tests.telephony.test_call_session import GREETING, overrides, play_out


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=sqlite_url, _env_file=None)  # type: ignore[call-arg]


@dataclass
class FaultyRunner(ScriptedRunner):
    """A ScriptedRunner that logs every call in order and fails where told: ``fail_after``
    maps a caller text to the words said before the run raises; ``heard_failures``
    record_heard calls raise before one succeeds; ``block`` turns never yield."""

    calls: list[str] = field(default_factory=list)
    fail_after: dict[str, str] = field(default_factory=dict)
    heard_failures: int = 0
    block: set[str] = field(default_factory=set)
    heard_tried: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, ctx: CallContext) -> AsyncIterator[RunnerEvent]:
        self.calls.append("start")
        return super().start(ctx)

    def respond(self, ctx: CallContext, turn: CallerInput) -> AsyncIterator[RunnerEvent]:
        self.calls.append("respond")
        events = super().respond(ctx, turn)
        key = turn.text if isinstance(turn, CallerText) else getattr(turn, "kind", "")
        if key in self.block:
            return self._never()
        if isinstance(turn, CallerText) and turn.text in self.fail_after:
            return self._fail(self.fail_after[turn.text])
        return events

    async def _never(self) -> AsyncIterator[RunnerEvent]:
        await asyncio.Event().wait()
        yield TextChunk("")

    async def _fail(self, said: str) -> AsyncIterator[RunnerEvent]:
        for word in said.split(" "):
            yield TextChunk(word + " ")
        raise OperationalError("INSERT INTO checkpoints", {}, Exception("database is locked"))

    async def record_heard(self, ctx: CallContext, heard_text: str) -> None:
        self.calls.append("record_heard")
        self.heard_tried.set()
        if self.heard_failures > 0:
            self.heard_failures -= 1
            raise OperationalError("UPDATE checkpoints", {}, Exception("database is locked"))
        await super().record_heard(ctx, heard_text)


class BreakingSynthesizer(ScriptedSynthesizer):
    """Fails with a ProviderError half-way through the phrase numbered ``fail_serial``."""

    def __init__(self, fail_serial: int) -> None:
        super().__init__()
        self.fail_serial = fail_serial

    async def synthesize(
        self,
        phrases: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> AsyncIterator[AudioChunk]:
        index = 0
        async for phrase in phrases:
            serial = len(self.phrases)
            self.phrases.append(phrase)
            audio = self.audio_for(serial)
            if serial == self.fail_serial:
                yield AudioChunk(audio[:400], index, last=False)
                raise ProviderError("voice server went away", provider="scripted")
            yield AudioChunk(audio, index, last=True)
            index += 1


async def test_keys_pressed_during_the_greeting_repair_it_before_the_new_turn_runs(sqlite_settings: Settings) -> None:
    recognizer, synth = ScriptedRecognizer(), ScriptedSynthesizer()
    runner = FaultyRunner(greeting=GREETING, replies={"digits:5": "You pressed five."})
    async with connected_call(sqlite_settings, overrides(recognizer, synth, runner)) as (served, client):
        await client.until(lambda m: m["event"] == "media")
        await client.dtmf("5")  # interrupts the greeting AND is the next turn, in one event
        await client.until(lambda m: m["event"] == "clear")
        await play_out(client, 2, synth, generation=3)
        await client.stop()
        assert await client.drain_until_closed() == 1000
        await served.session_done(client.call_sid)
        call = await get_call(served.app.state.services.db, client.call_sid)
    # The greeting's history is cut to what was heard (nothing) before the digit's run reads it.
    assert runner.calls == ["start", "record_heard", "respond"]
    assert runner.heard == [""]
    assert runner.inputs[-1] == ("respond", CallerDigits("5"))
    assert call is not None and call.reply_heard is None


async def test_a_failing_graph_run_apologises_and_the_call_goes_on(sqlite_settings: Settings) -> None:
    recognizer, synth = ScriptedRecognizer(), ScriptedSynthesizer()
    recognizer.script = [
        (10, Final("book me in", 0.0, 0.2, speech_final=True)),
        (30, Final("tomorrow", 0.4, 0.6, speech_final=True)),
    ]
    runner = FaultyRunner(greeting=GREETING, fail_after={"book me in": "Let me check that for you. The"})
    async with connected_call(sqlite_settings, overrides(recognizer, synth, runner)) as (served, client):
        await play_out(client, 0, synth, generation=1)
        await client.media(SILENCE_FRAME, 10)  # -> "book me in": the run fails after one sentence
        await play_out(client, 2, synth, generation=2)
        assert synth.phrases[2:] == ["Let me check that for you.", APOLOGY]
        await client.media(SILENCE_FRAME, 20)  # -> "tomorrow": the next turn is answered
        await play_out(client, 4, synth, generation=3)
        await client.stop()
        assert await client.drain_until_closed() == 1000
        session = await served.session_done(client.call_sid)
        events = await transcript(served.app.state.services.db, client.call_sid)
    assert session.state.end_reason == "stop"
    assert runner.inputs[-1] == ("respond", CallerText("tomorrow"))
    # The failed run's history keeps what was said of it; the apology is no part of it.
    assert runner.heard == ["Let me check that for you."]
    assert runner.calls == ["start", "respond", "record_heard", "respond"]
    agent = [(e.text, e.interrupted) for e in events if e.kind == "turn" and e.role == "agent"]
    assert agent[1] == ("Let me check that for you.", True)
    assert [e.data for e in events if e.kind == "error"] == [{"stage": "runner"}]


async def test_speech_failing_mid_reply_records_only_what_played(sqlite_settings: Settings) -> None:
    recognizer, synth = ScriptedRecognizer(), BreakingSynthesizer(fail_serial=3)
    recognizer.script = [
        (10, Final("when are you open", 0.0, 0.2, speech_final=True)),
        (30, Final("thanks", 0.4, 0.6, speech_final=True)),
    ]
    reply = "We are open at nine. We close at five. Never on Sundays."
    runner = FaultyRunner(greeting=GREETING, replies={"when are you open": reply})
    async with connected_call(sqlite_settings, overrides(recognizer, synth, runner)) as (served, client):
        await play_out(client, 0, synth, generation=1)
        await client.media(SILENCE_FRAME, 10)  # -> "when are you open"
        start = len(client.received)
        await client.until_mark("g2.4")  # the end of "We are open at nine." (5 words, 5 marks)
        for name in client.marks(start):
            await client.echo_mark(name)
        async with asyncio.timeout(WAIT_S):  # the cut reply is settled (and being repaired)
            await runner.heard_tried.wait()
        await client.media(SILENCE_FRAME, 20)  # -> "thanks": answered after the failed reply
        await client.until(lambda m: m["event"] == "mark" and m["mark"]["name"].startswith("g3."))
        await client.stop()
        assert await client.drain_until_closed() == 1000
        await served.session_done(client.call_sid)
        events = await transcript(served.app.state.services.db, client.call_sid)
    assert runner.heard == ["We are open at nine."]
    assert runner.calls == ["start", "respond", "record_heard", "respond"]
    assert runner.inputs[-1] == ("respond", CallerText("thanks"))
    agent = [(e.text, e.interrupted) for e in events if e.kind == "turn" and e.role == "agent"]
    assert agent[1] == ("We are open at nine.", True)


async def test_a_failing_repair_does_not_end_the_call(sqlite_settings: Settings) -> None:
    recognizer, synth = ScriptedRecognizer(), ScriptedSynthesizer()
    runner = FaultyRunner(greeting=GREETING, replies={"digits:5": "You pressed five."}, heard_failures=1)
    async with connected_call(sqlite_settings, overrides(recognizer, synth, runner)) as (served, client):
        await client.until(lambda m: m["event"] == "media")
        await client.dtmf("5")
        await client.until(lambda m: m["event"] == "clear")
        await play_out(client, 2, synth, generation=3)
        await client.stop()
        assert await client.drain_until_closed() == 1000
        session = await served.session_done(client.call_sid)
    assert session.state.end_reason == "stop"
    assert runner.calls == ["start", "record_heard", "respond"]


async def test_a_transfer_still_ends_the_stream_when_its_outcome_cannot_be_stored(sqlite_settings: Settings) -> None:
    recognizer, synth = ScriptedRecognizer(), ScriptedSynthesizer()
    runner = FaultyRunner(
        greeting=GREETING,
        replies={"digits:0": [TextChunk("Putting you through."), TransferRequest("front_desk", "pressed 0", "")]},
    )

    async def outcome_writes_fail(served: Served) -> None:  # a real database error on the outcome's write
        async with served.app.state.services.db.engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TRIGGER no_outcome BEFORE UPDATE OF outcome ON calls "
                    "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
                )
            )

    providers = overrides(recognizer, synth, runner)
    async with connected_call(sqlite_settings, providers, prepare=outcome_writes_fail) as (served, client):
        await play_out(client, 0, synth, generation=1)
        await client.dtmf("0")
        await play_out(client, 2, synth, generation=2)
        # Closed normally (Twilio then asks <Connect action> for the plan), not 1011.
        assert await client.drain_until_closed() == 1000
        session = await served.session_done(client.call_sid)
        events = await transcript(served.app.state.services.db, client.call_sid)
    assert session.state.end_reason == "transfer"
    assert [e.kind for e in events][-1] == "transfer"


@pytest.mark.postgres
async def test_a_transfer_retries_a_failed_outcome_write(tmp_path: Path, pg_dsn: str) -> None:
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path, database_url=pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1), _env_file=None
    )
    recognizer, synth = ScriptedRecognizer(), ScriptedSynthesizer()
    runner = FaultyRunner(
        greeting=GREETING,
        replies={"digits:0": [TextChunk("Putting you through."), TransferRequest("front_desk", "pressed 0", "")]},
    )

    async def first_outcome_write_fails(served: Served) -> None:
        async with served.app.state.services.db.engine.begin() as conn:  # a sequence is not rolled back
            await conn.execute(text("CREATE SEQUENCE outcome_writes"))
            await conn.execute(
                text(
                    "CREATE FUNCTION fail_first() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF nextval('outcome_writes') = 1 THEN RAISE EXCEPTION 'connection reset'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER fail_first BEFORE UPDATE OF outcome ON calls "
                    "FOR EACH ROW EXECUTE FUNCTION fail_first()"
                )
            )

    providers = overrides(recognizer, synth, runner)
    async with connected_call(settings, providers, prepare=first_outcome_write_fails) as (served, client):
        await play_out(client, 0, synth, generation=1)
        await client.dtmf("0")
        await play_out(client, 2, synth, generation=2)
        assert await client.drain_until_closed() == 1000
        await served.session_done(client.call_sid)
        call = await get_call(served.app.state.services.db, client.call_sid)
    assert call is not None
    assert (call.outcome, call.transfer_target) == ("transfer_requested", "front_desk")


async def test_heard_text_survives_a_failed_repair_on_resume(sqlite_settings: Settings) -> None:
    recognizer, synth = ScriptedRecognizer(), ScriptedSynthesizer()
    runner = FaultyRunner(greeting=GREETING, heard_failures=1, block={"reconnected"})
    call_sid = new_sids()[0]
    async with serve(sqlite_settings, overrides(recognizer, synth, runner)) as served:
        db = served.app.state.services.db
        token = await new_call(sqlite_settings, served.app, call_sid=call_sid, signal="reconnected")
        await update_call(db, call_sid, reply_heard="We are open Monday to")
        for attempt in range(2):
            if attempt:  # a stream token opens one socket: /stream-ended hands out a fresh one
                token = await new_call(sqlite_settings, served.app, call_sid=call_sid, signal="reconnected")
            stream_sid = new_sids()[1]
            runner.heard_tried.clear()
            async with TwilioMediaClient.connect(
                served.url, sqlite_settings, call_sid=call_sid, stream_sid=stream_sid
            ) as client:
                await client.start(token)
                async with asyncio.timeout(WAIT_S):
                    await runner.heard_tried.wait()
                await client.stop()  # dropped again before the reconnection line's audio
                await client.drain_until_closed()
            await served.session_done(call_sid)  # its heard progress is stored on the way out
            served.finished.clear()
            served._events.pop(call_sid)
            call = await get_call(db, call_sid)
            assert call is not None
            if attempt == 0:  # the repair failed: the heard text is still there for the next stream
                assert call.reply_heard == "We are open Monday to"
    assert runner.heard == ["We are open Monday to"]
    assert call is not None and call.reply_heard is None


async def reply_heard_becomes(db: Database, call_sid: str, want: str) -> None:
    """Until the call row holds ``want`` (heard progress is written asynchronously)."""
    async with asyncio.timeout(WAIT_S):
        while (call := await get_call(db, call_sid)) is None or call.reply_heard != want:
            await asyncio.sleep(0.02)


KEPT = "We are open Monday to"  # left by a stream that dropped mid-reply
LINE = "Sorry about that. We were cut off."


@pytest.mark.parametrize("failures", [1, 2])
async def test_the_callers_next_turn_first_repairs_what_a_failed_repair_kept(settings: Settings, failures: int) -> None:
    recognizer, synth = ScriptedRecognizer(), ScriptedSynthesizer()
    recognizer.script = [(10, Final("yes please", 0.0, 0.2, speech_final=True))]
    runner = FaultyRunner(replies={"signal:reconnected": LINE, "yes please": "Great."}, heard_failures=failures)

    async with connected_call(settings, overrides(recognizer, synth, runner), signal="reconnected", start=False) as (
        served,
        client,
    ):
        db = served.app.state.services.db
        await update_call(db, client.call_sid, reply_heard=KEPT)  # before ``start``: a fresh token for it
        token = await new_call(settings, served.app, call_sid=client.call_sid, signal="reconnected")
        await client.start(token)
        await play_out(client, 0, synth, generation=1)  # the repair failed; the line plays to the end
        await reply_heard_becomes(db, client.call_sid, f"{KEPT} {LINE}")  # kept, the whole line after it
        await client.media(SILENCE_FRAME, 10)  # -> "yes please": its run waits for one last repair
        await play_out(client, 2, synth, generation=2)
        await client.stop()
        assert await client.drain_until_closed() == 1000
        session = await served.session_done(client.call_sid)
        events = await transcript(db, client.call_sid)
        call = await get_call(db, client.call_sid)
    assert session.state.end_reason == "stop"
    assert runner.calls == ["record_heard", "respond", "record_heard", "respond"]
    assert runner.inputs[-1] == ("respond", CallerText("yes please"))
    # Repaired before the caller's turn ran, or given up: never left to cut a later reply.
    assert runner.heard == ([f"{KEPT} {LINE}"] if failures == 1 else [])
    assert call is not None and call.reply_heard is None
    agent = [(e.text, e.interrupted) for e in events if e.kind == "turn" and e.role == "agent"]
    # The kept text joins the transcript once, when it is settled (after the line it preceded).
    assert agent == [(LINE, False), (KEPT, True), ("Great.", False)]


async def test_a_barge_in_on_the_reconnection_line_repairs_what_a_failed_repair_kept(settings: Settings) -> None:
    recognizer, synth = ScriptedRecognizer(), ScriptedSynthesizer()
    runner = FaultyRunner(replies={"signal:reconnected": LINE, "digits:5": "You pressed five."}, heard_failures=1)
    async with connected_call(settings, overrides(recognizer, synth, runner), signal="reconnected", start=False) as (
        served,
        client,
    ):
        db = served.app.state.services.db
        await update_call(db, client.call_sid, reply_heard=KEPT)
        token = await new_call(settings, served.app, call_sid=client.call_sid, signal="reconnected")
        await client.start(token)
        await client.until(lambda m: m["event"] == "media")
        await client.dtmf("5")  # cuts the line before a word of it was heard
        await client.until(lambda m: m["event"] == "clear")
        await play_out(client, 2, synth, generation=3)
        await client.stop()
        assert await client.drain_until_closed() == 1000
        await served.session_done(client.call_sid)
        call = await get_call(db, client.call_sid)
    # The cut line's repair carries the kept text: the turn ends with all the caller heard.
    assert runner.calls == ["record_heard", "respond", "record_heard", "respond"]
    assert runner.heard == [KEPT]
    assert runner.inputs[-1] == ("respond", CallerDigits("5"))
    assert call is not None and call.reply_heard is None


async def test_a_silent_socket_ends_its_session(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    await db.upgrade()
    call_sid, stream_sid = new_sids()
    await record_call(
        db,
        sid=call_sid,
        direction="inbound",
        from_number="+14155550100",
        to_number="+15550009999",
        flow="x",
        thread_id=call_sid,
    )
    socket = HalfOpenSocket()
    recognizer = ScriptedRecognizer()
    media = MediaStreamProtocol()  # its handshake done, as the media route leaves it
    twilio = TwilioProtocol(stream_sid=stream_sid, call_sid=call_sid)
    assert isinstance(media.receive_text(twilio.start({})), Start)
    try:
        async with ReplyProgressWriter(db) as progress, CallEventWriter(db) as call_events:
            session = CallSession(
                socket=socket,
                ctx=CallContext(call_sid, call_sid, "+14155550100", "+15550009999", "x", FlowSettings()),
                media=media,
                db=db,
                recognition=recognizer.stream(),
                synthesizer=ScriptedSynthesizer(),
                vad=EnergyVad(),
                runner=ScriptedRunner(greeting=GREETING),
                policy=TurnPolicy(),
                progress=progress,
                call_events=call_events,
                inbound_timeout_s=0.4,
            )
            async with asyncio.timeout(WAIT_S):  # a safety net: without the watchdog, forever
                await session.run()
    finally:
        await db.aclose()
    assert session.state.end_reason == "inbound timeout"
    assert socket.sent  # the greeting went out before the peer fell silent
    assert recognizer.streams[0].closed


class HalfOpenSocket:
    """A peer that vanished without a FIN: sends succeed, nothing ever arrives."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: int | None = None

    async def receive(self) -> str | bytes | None:
        await asyncio.Event().wait()
        return None

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000) -> None:
        self.closed = code
