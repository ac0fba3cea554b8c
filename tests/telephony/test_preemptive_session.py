"""Preemptive replies in a whole call: the real app under uvicorn, the real flow graphs and
offline model (``GraphRunner.preempt``), a scripted recognizer that pauses on stable text
(``Interim(stable=True)``) before its final, over a real WebSocket (SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from dialgraph.server.core.call_store import transcript
from dialgraph.server.core.models import Appointment
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.call.reply import Reply
from dialgraph.telephony.call.session import CallSession, _Preempted
from dialgraph.telephony.simulator.scripted import ScriptedRecognizer, ScriptedSynthesizer
from dialgraph.telephony.speech.base import Final, Interim
from dialgraph.telephony.speech.vad import EnergyVad
from tests.telephony.harness import WAIT_S, TwilioMediaClient, connected_call

BOOK = "I'd like to book next friday at ten, my name is Ana Lopez"
ASK = "Could I come in on Tuesday? Which times are free?"
PAUSE_AT, FINAL_AT = 20, 40  # frames pushed after the greeting: the stable interim, then the final


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=sqlite_url, _env_file=None)  # type: ignore[call-arg]


def overrides(recognizer: ScriptedRecognizer) -> Overrides:
    # no runners given: the app builds the real flow graphs on the offline model
    return Overrides(
        recognizer=recognizer, synthesizer=ScriptedSynthesizer(), vad_factory=EnergyVad, call_control=object()
    )


async def play(client: TwilioMediaClient, reply: Reply) -> None:
    """Echo the reply's marks as they come, until it has played."""
    echoed = 0
    async with asyncio.timeout(WAIT_S):
        while not reply.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await client.until(lambda m: m["event"] == "mark")
            marks = client.marks()
            for name in marks[echoed:]:
                await client.echo_mark(name)
            echoed = len(marks)


async def greeted(session: CallSession, client: TwilioMediaClient) -> None:
    await until(lambda: session.state.reply is not None)
    assert session.state.reply is not None
    await play(client, session.state.reply)


async def until(done: object) -> None:
    async with asyncio.timeout(WAIT_S):
        while not done():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def session_of(call: object, call_sid: str) -> CallSession:
    active = call.served.app.state.active_calls  # type: ignore[attr-defined]
    await until(lambda: call_sid in active)
    session: CallSession = active[call_sid]
    return session


async def appointments(call: object) -> int:
    db = call.served.app.state.services.db  # type: ignore[attr-defined]
    async with db.sessionmaker() as s:
        return int(await s.scalar(select(func.count()).select_from(Appointment)) or 0)


def paused_then_final(text: str, final: str | None = None) -> ScriptedRecognizer:
    return ScriptedRecognizer(
        [
            (PAUSE_AT, Interim(text, 0.0, 2.0, stable=True)),
            (FINAL_AT, Final(final or text, 0.0, 2.0, speech_final=True)),
        ]
    )


async def paused(call: Any) -> tuple[CallSession, TwilioMediaClient, _Preempted]:
    """Greet the caller, then play frames until the stable interim: the preemptive reply's start."""
    client = call.client
    session = await session_of(call, client.call_sid)
    await greeted(session, client)
    await client.media(SILENCE_FRAME, PAUSE_AT)
    await until(lambda: session._preempted is not None)
    assert session._preempted is not None
    return session, client, session._preempted


async def test_a_reply_started_at_the_pause_goes_out_when_the_final_confirms_it(sqlite_settings: Settings) -> None:
    async with connected_call(sqlite_settings, overrides(paused_then_final(ASK))) as call:
        session, client, preempted = await paused(call)
        held = preempted.reply
        await until(lambda: held.timing.first_tts_audio_at is not None)  # synthesised, not sent
        media_before = len([m for m in client.received if m["event"] == "media"])
        await client.media(SILENCE_FRAME, FINAL_AT - PAUSE_AT)
        await until(lambda: session.state.reply is held)
        assert (session.state.preempted, session.state.preempts_discarded) == (1, 0)
        timing = held.timing
        assert timing.first_token_at is not None and timing.first_token_at < timing.started_at  # answered early
        await play(client, held)
        assert len([m for m in client.received if m["event"] == "media"]) > media_before
        events = await transcript(call.served.app.state.services.db, client.call_sid)
    agent = [e for e in events if e.kind == "turn" and e.role == "agent"]
    assert (agent[-1].data or {}).get("preempted") is True
    assert "morning" in (agent[-1].text or "") or "afternoon" in (agent[-1].text or "")


async def test_a_booking_waits_for_the_confirmed_turn(sqlite_settings: Settings) -> None:
    async with connected_call(sqlite_settings, overrides(paused_then_final(BOOK))) as call:
        session, client, preempted = await paused(call)
        await until(lambda: preempted.run.waiting.is_set())  # type: ignore[attr-defined]
        assert preempted.run.held_back == ("book_appointment",)  # type: ignore[attr-defined]
        assert await appointments(call) == 0
        await client.media(SILENCE_FRAME, FINAL_AT - PAUSE_AT)
        await until(lambda: session.state.reply is preempted.reply)
        await play(client, preempted.reply)
        assert await appointments(call) == 1  # booked once the turn was confirmed
        events = await transcript(call.served.app.state.services.db, client.call_sid)
    agent = [e for e in events if e.kind == "turn" and e.role == "agent"]
    assert (agent[-1].data or {}).get("preempted") is True and "Friday" in (agent[-1].text or "")


async def test_a_final_with_other_words_drops_the_preemptive_reply_unheard(sqlite_settings: Settings) -> None:
    final = "actually I want to cancel my appointment"
    async with connected_call(sqlite_settings, overrides(paused_then_final(BOOK, final))) as call:
        session, client, preempted = await paused(call)
        held = preempted.reply
        await until(lambda: preempted.run.waiting.is_set())  # type: ignore[attr-defined]
        await client.media(SILENCE_FRAME, FINAL_AT - PAUSE_AT)
        await until(lambda: held.done() and session.state.reply is not None and session.state.reply is not held)
        reply = session.state.reply
        assert reply is not None and not reply.timing.preempted
        assert (session.state.preempted, session.state.preempts_discarded) == (0, 1)
        await until(lambda: reply.done() or reply.timing.first_audio_at is not None)
        assert held.timing.first_audio_at is None  # nothing of it was sent
        assert await appointments(call) == 0  # its booking never ran
        await play(client, reply)
        events = await transcript(call.served.app.state.services.db, client.call_sid)
    turns = [(e.role, e.text) for e in events if e.kind == "turn"]
    assert turns[-2] == ("caller", final)
    assert "Friday" not in (turns[-1][1] or "")  # the answer is to the final's words


async def test_preemptive_replies_off_answers_only_the_final(sqlite_settings: Settings) -> None:
    settings = sqlite_settings.model_copy(update={"preemptive_replies": False})
    async with connected_call(settings, overrides(paused_then_final(ASK))) as call:
        client = call.client
        session = await session_of(call, client.call_sid)
        await greeted(session, client)
        await client.media(SILENCE_FRAME, FINAL_AT)
        await until(lambda: session.state.reply is not None and session.timings[-1].trigger == "caller")
        assert session._preempted is None and not session.timings[-1].preempted
