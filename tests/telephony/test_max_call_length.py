"""``max_call_minutes``: at the deadline the reply in progress plays to its end, the caller
gets no new turn, a fixed goodbye plays with no model call, and the call ends with outcome
``max_call_length``. Whole calls over the real WebSocket, with the scripted fakes of
``test_call_session``."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import update

from dialgraph.server.core.call_store import get_call, transcript
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.limits import LimitOverrides
from dialgraph.server.core.models import Call
from dialgraph.server.core.settings import LimitsSettings, Settings
from dialgraph.server.core.turns import EndCallRequest, TextChunk
from dialgraph.server.routes.media import max_call_seconds
from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.call.session import TIME_LIMIT_GOODBYE
from dialgraph.telephony.simulator.scripted import ScriptedRecognizer, ScriptedRunner, ScriptedSynthesizer
from dialgraph.telephony.speech.base import Final
from tests.telephony.harness import LOUD_FRAME, WAIT_S, Served, TwilioMediaClient, connected_call
from tests.telephony.test_call_session import overrides, play_out

GREETING = "Hello and welcome to Acme Dental. How can I help?"
GREETING_PHRASES = ["Hello and welcome to Acme Dental.", "How can I help?"]
GOODBYE_PHRASES = ["I'm sorry,", "we've reached the time limit for this call.", "Thank you for calling, goodbye."]


def limited(tmp_path: Path, sqlite_url: str, minutes: float) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=sqlite_url,
        limits=LimitsSettings(max_call_minutes=minutes),
        _env_file=None,  # type: ignore[call-arg]
    )


async def deadline_reached(served: Served, call_sid: str) -> None:
    """Wait (bounded) until the session has passed its deadline: ``state.ending`` set."""
    async with asyncio.timeout(WAIT_S):
        while True:
            session = served.app.state.active_calls.get(call_sid)
            if session is not None and session.state.ending:
                return
            await asyncio.sleep(0.01)


async def whole_reply_sent(client: TwilioMediaClient, synth: ScriptedSynthesizer, phrases: int) -> int:
    """Read until every message of the first ``phrases`` phrases has been sent (marks NOT
    echoed: the reply is still playing); returns how many marks it has."""
    while True:
        await client.until(lambda m: m["event"] == "mark")
        if len(synth.phrases) >= phrases:
            audio = sum(len(synth.audio_for(s)) for s in range(phrases))
            if sum(len(a) for a in client.audio()) == audio:
                return len(client.marks())


async def test_at_the_deadline_the_reply_finishes_then_a_fixed_goodbye_ends_the_call(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = limited(tmp_path, sqlite_url, minutes=0.02)  # 1.2 s
    recognizer = ScriptedRecognizer([(20, Final("wait, one more thing", 0.0, 0.5, speech_final=True))])
    synth, runner = ScriptedSynthesizer(), ScriptedRunner(greeting=GREETING)
    runner.replies = {"wait, one more thing": "This must never be said."}
    async with connected_call(settings, overrides(recognizer, synth, runner)) as (served, client):
        # The greeting is sent, but still playing (no mark echoed) when the deadline passes.
        await whole_reply_sent(client, synth, phrases=2)
        await deadline_reached(served, client.call_sid)
        # The caller talks over it (a barge-in the session ignores), finishes a turn, presses a key.
        await client.media(LOUD_FRAME, 15)
        await client.media(SILENCE_FRAME, 5)
        await client.dtmf("5")
        for name in client.marks():  # the greeting plays to its end
            await client.echo_mark(name)
        # Then the goodbye, the next reply (generation 2: nothing was cut), its exact messages.
        await play_out(client, 2, synth, generation=2)
        assert await client.drain_until_closed() == 1000
        await served.session_done(client.call_sid)
        db = served.app.state.services.db
        call = await get_call(db, client.call_sid)
        events = await transcript(db, client.call_sid)

    assert synth.phrases == [*GREETING_PHRASES, *GOODBYE_PHRASES]
    assert " ".join(GOODBYE_PHRASES) == TIME_LIMIT_GOODBYE
    assert not [m for m in client.received if m["event"] == "clear"]
    assert runner.inputs == [("start", None)]  # no model call after the deadline
    assert call is not None and call.outcome == "max_call_length"
    agent = [(e.text, e.interrupted) for e in events if e.kind == "turn" and e.role == "agent"]
    assert agent == [(GREETING, False), (TIME_LIMIT_GOODBYE, False)]  # the greeting was not cut
    caller = {(e.kind, e.text) for e in events if e.role == "caller"}
    assert caller == {("turn", "wait, one more thing"), ("dtmf", "5")}  # recorded, never answered
    assert (events[-1].kind, events[-1].data) == ("end_call", {"reason": "max_call_length"})


async def test_an_agent_ending_the_call_at_the_deadline_keeps_its_own_ending(tmp_path: Path, sqlite_url: str) -> None:
    settings = limited(tmp_path, sqlite_url, minutes=0.02)
    synth = ScriptedSynthesizer()
    runner = ScriptedRunner(greeting=[TextChunk("Goodbye for now."), EndCallRequest("done")])
    async with connected_call(settings, overrides(ScriptedRecognizer(), synth, runner)) as (served, client):
        await whole_reply_sent(client, synth, phrases=1)
        await deadline_reached(served, client.call_sid)
        for name in client.marks():
            await client.echo_mark(name)
        assert await client.drain_until_closed() == 1000
        await served.session_done(client.call_sid)
        call = await get_call(served.app.state.services.db, client.call_sid)
    assert synth.phrases == ["Goodbye for now."]  # no time-limit goodbye on top of the agent's
    assert call is not None and call.outcome == "ended_by_agent"


async def test_a_stream_reopened_past_the_deadline_only_says_goodbye(tmp_path: Path, sqlite_url: str) -> None:
    settings = limited(tmp_path, sqlite_url, minutes=1)
    synth, runner = ScriptedSynthesizer(), ScriptedRunner(greeting=GREETING)

    async def answered_long_ago(served: Served) -> None:  # the call's only row
        async with served.app.state.services.db.sessionmaker() as s, s.begin():
            await s.execute(update(Call).values(answered_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)))

    async with connected_call(
        settings, overrides(ScriptedRecognizer(), synth, runner), signal="reconnected", prepare=answered_long_ago
    ) as (served, client):
        await play_out(client, 0, synth, generation=1)
        assert await client.drain_until_closed() == 1000
        await served.session_done(client.call_sid)
        call = await get_call(served.app.state.services.db, client.call_sid)
    assert synth.phrases == GOODBYE_PHRASES
    assert runner.inputs == [] and runner.heard == []
    assert call is not None and call.outcome == "max_call_length"


@pytest.mark.parametrize(
    ("minutes", "flow_minutes", "began_s_ago", "left"),
    [
        (0, None, 10, None),  # no limit
        (10, None, None, 600.0),  # no call row: the whole length
        (10, 2, 30, 90.0),  # the flow's own limit, counted from when the call began
        (10, 0, 30, None),  # a flow may lift the limit
        (1, None, 120, -60.0),  # over already (a reconnect): the session says goodbye at once
    ],
)
def test_the_time_left_counts_from_when_the_call_began(
    minutes: float, flow_minutes: float | None, began_s_ago: float | None, left: float | None
) -> None:
    settings = Settings(limits=LimitsSettings(max_call_minutes=minutes), _env_file=None)  # type: ignore[call-arg]
    flow = settings.flows["scheduling"].model_copy(update={"limits": LimitOverrides(max_call_minutes=flow_minutes)})
    ctx = CallContext(call_sid="CA1", thread_id="CA1", caller="", called="", flow="scheduling", flow_settings=flow)
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    began = None if began_s_ago is None else now - dt.timedelta(seconds=began_s_ago)
    assert max_call_seconds(settings, ctx, began, now) == left
