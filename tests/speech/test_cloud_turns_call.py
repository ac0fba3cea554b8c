"""A whole call on the Deepgram path with the turn detector: the real app under uvicorn,
the real flow graph on the offline model, the real deepgram-sdk against the stand-in,
word-coded caller audio over a real Twilio media WebSocket at the phone's pace.

The caller pauses after a finished question: the stream scores the pause, offers the
words as stable (the session starts the reply, held), sends ``Finalize``, and the final
that answers it releases the held reply. The detector is the table stand-in of
``test_cloud_turns.py`` (word-coded audio means nothing to Smart Turn)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dialgraph.server.core.call_store import transcript
from dialgraph.server.core.flow_config import TurnSettings
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.scripted import ScriptedSynthesizer
from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake, DeepgramTiming, word_audio
from dialgraph.telephony.speech.base import FRAME_BYTES
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
from dialgraph.telephony.speech.vad import EnergyVad
from dialgraph.telephony.speech.workers import SpeechWorkers
from tests.speech.test_cloud_turns import TableDetector
from tests.telephony.harness import connected_call
from tests.telephony.test_preemptive_session import greeted, play, session_of, until

pytestmark = pytest.mark.slow  # ~6 s: the greeting, 2.3 s of caller audio at the phone's pace, the reply

WORDS = ["which", "times", "are", "free", "on", "tuesday"]


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    # the route hands each call its flow's [turn] (Settings.turn_for): the deployment's must say smart_turn
    return Settings(data_dir=tmp_path, database_url=sqlite_url, turn={"detector": "smart_turn"}, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def pool() -> Iterator[SpeechWorkers]:
    workers = SpeechWorkers(1)
    yield workers
    workers.shutdown()


async def test_a_paused_question_is_answered_by_the_held_reply(sqlite_settings: Settings, pool: SpeechWorkers) -> None:
    async with DeepgramFake(WORDS, timing=DeepgramTiming(result_latency_ms=200.0)) as fake:
        recognizer = DeepgramRecognizer(
            "dg-test-key",
            url=fake.url,
            endpointing_ms=800,  # Deepgram alone would end the turn ~1 s after the speech
            turn_detector=TableDetector({}, default=0.95, vocab=WORDS),
            workers=pool,
            turn=TurnSettings(detector="smart_turn"),
        )
        overrides = Overrides(
            recognizer=recognizer, synthesizer=ScriptedSynthesizer(), vad_factory=EnergyVad, call_control=object()
        )
        async with connected_call(sqlite_settings, overrides) as call:
            client = call.client
            session = await session_of(call, client.call_sid)
            await greeted(session, client)
            audio = word_audio(WORDS, WORDS, word_ms=200, gap_ms=100, tail_ms=500)
            loop = asyncio.get_running_loop()
            start = loop.time()
            for n, i in enumerate(range(0, len(audio), FRAME_BYTES)):
                await client.media(audio[i : i + FRAME_BYTES])
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - loop.time()))
            await until(lambda: session.state.reply is not None and session.state.reply.timing.preempted)
            reply = session.state.reply
            assert reply is not None
            await play(client, reply)
            events = await transcript(call.served.app.state.services.db, client.call_sid)
    caller = [e for e in events if e.kind == "turn" and e.role == "caller"]
    agent = [e for e in events if e.kind == "turn" and e.role == "agent"]
    assert [(e.text or "").lower() for e in caller] == [" ".join(WORDS)]  # one turn, every word
    assert (agent[-1].data or {}).get("preempted") is True  # the reply started at the pause went out
    assert [c["type"] for c in fake.connections[0].controls][0] == "Finalize"  # sent at the pause
