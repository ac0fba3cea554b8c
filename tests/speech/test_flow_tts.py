"""A flow's TTS voice and model reach ElevenLabs: on the WebSocket URL, on the HTTP fallback,
and through a whole call where two flows are configured differently."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.scripted import ScriptedRecognizer, ScriptedRunner
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake, fake_audio
from dialgraph.telephony.speech.elevenlabs import ElevenLabsHttpSynthesizer, ElevenLabsSynthesizer
from dialgraph.telephony.speech.fallback import FallbackSynthesizer
from dialgraph.telephony.speech.vad import EnergyVad
from tests.speech.conftest import phrase_source
from tests.telephony.harness import TwilioMediaClient, new_call, new_sids, serve

DEFAULT_MODEL = "eleven_flash_v2_5"
FLOW_MODEL = "eleven_turbo_v2_5"
PHRASES = ["Hello there.", "How can I help you today?"]


async def test_the_websocket_url_carries_the_requested_model_and_voice() -> None:
    async with ElevenLabsFake() as fake:
        synth = ElevenLabsSynthesizer("el-test-key", url=fake.url, voice="default-voice", model=DEFAULT_MODEL)
        flow = [c async for c in synth.synthesize(phrase_source(PHRASES), voice="X", model=FLOW_MODEL, language="de")]
        default = [c async for c in synth.synthesize(phrase_source(PHRASES))]
        blank = [c async for c in synth.synthesize(phrase_source(PHRASES), voice=" ", model=" ")]
    used = [(s.voice, s.query["model_id"], s.query.get("language_code")) for s in fake.sockets]
    assert used == [
        ("X", FLOW_MODEL, "de"),
        ("default-voice", DEFAULT_MODEL, None),
        ("default-voice", DEFAULT_MODEL, None),
    ]
    for chunks in (flow, default, blank):
        assert b"".join(c.audio for c in chunks) == b"".join(fake_audio(p) for p in PHRASES)


async def test_the_http_path_sends_the_requested_model_and_voice() -> None:
    async with ElevenLabsFake() as fake:
        synth = ElevenLabsHttpSynthesizer("el-test-key", url=fake.url, voice="default-voice", model=DEFAULT_MODEL)
        _ = [c async for c in synth.synthesize(phrase_source(PHRASES[:1]), voice="X", model=FLOW_MODEL)]
        _ = [c async for c in synth.synthesize(phrase_source(PHRASES[:1]))]
    used = [(r["voice"], r["body"]["model_id"]) for r in fake.http_requests]
    assert used == [("X", FLOW_MODEL), ("default-voice", DEFAULT_MODEL)]


async def test_the_http_fallback_keeps_the_flows_model_and_voice() -> None:
    """The production chain (WebSocket, then HTTP): the socket drops after one chunk and
    the HTTP path finishes the reply in the same voice and model."""
    phrases = PHRASES[::-1]  # the first is two chunks long: cut half-way, it restarts on HTTP
    async with ElevenLabsFake(drop_after_chunks=1) as fake:
        ws = ElevenLabsSynthesizer("el-test-key", url=fake.url, voice="default-voice", model=DEFAULT_MODEL)
        http = ElevenLabsHttpSynthesizer("el-test-key", url=fake.url, voice="default-voice", model=DEFAULT_MODEL)
        synth = FallbackSynthesizer([ws, http])
        async with contextlib.aclosing(synth):
            chunks = [c async for c in synth.synthesize(phrase_source(phrases), voice="X", model=FLOW_MODEL)]
    assert [(s.voice, s.query["model_id"]) for s in fake.sockets] == [("X", FLOW_MODEL)]
    assert [(r["voice"], r["body"]["model_id"], r["body"]["text"]) for r in fake.http_requests] == [
        ("X", FLOW_MODEL, p) for p in phrases
    ]
    assert [c.phrase for c in chunks if c.last] == [0, 1]


def test_a_blank_model_is_the_default_and_a_malformed_one_is_refused() -> None:
    assert FlowSettings(tts_model="  ").tts_model is None
    assert FlowSettings(tts_model=f" {FLOW_MODEL} ").tts_model == FLOW_MODEL
    for bad in ("eleven turbo", "https://evil.example/v1", "../../v1/voices", "model?x=1"):
        with pytest.raises(ValidationError, match="tts_model"):
            FlowSettings(tts_model=bad)


async def greeting_heard(client: TwilioMediaClient, phrases: list[str]) -> bytes:
    """Read the greeting's audio until all of it has arrived."""
    expected = sum(len(fake_audio(p)) for p in phrases)
    while sum(len(a) for a in client.audio()) < expected:
        await client.until(lambda m: m["event"] == "media")
    return b"".join(client.audio())


@pytest.mark.slow
async def test_two_flows_speak_with_their_own_voice_and_model(tmp_path: Path, sqlite_url: str) -> None:
    """Whole calls through the app, its synthesizer built from settings (ElevenLabs against
    the fake, HTTP and offline behind it): each call's socket uses its flow's voice and model."""
    greeting = ["Hello and welcome to Acme Dental.", "How can I help?"]
    async with ElevenLabsFake(api_key="el-key-0123456789") as fake:
        settings = Settings(  # type: ignore[call-arg]
            data_dir=tmp_path,
            database_url=sqlite_url,
            _env_file=None,
            elevenlabs_api_key=SecretStr("el-key-0123456789"),
            elevenlabs_url=fake.url,
            elevenlabs_voice="default-voice",
            elevenlabs_model=DEFAULT_MODEL,
            flows={"scheduling": FlowSettings(voice="X", tts_model=FLOW_MODEL), "support": FlowSettings()},
        )
        runner = ScriptedRunner(greeting=" ".join(greeting))
        overrides = Overrides(
            recognizer=ScriptedRecognizer(),
            vad_factory=EnergyVad,
            runners={"scheduling": runner, "support": runner},
            call_control=object(),
        )
        async with serve(settings, overrides) as served:
            for flow in ("scheduling", "support"):
                call_sid, stream_sid = new_sids()
                token = await new_call(settings, served.app, call_sid=call_sid, flow=flow)
                async with TwilioMediaClient.connect(
                    served.url, settings, call_sid=call_sid, stream_sid=stream_sid
                ) as client:
                    await client.start(token)
                    heard = await greeting_heard(client, greeting)
                    await client.stop()
                    await client.drain_until_closed()
                await served.session_done(call_sid)
                assert heard == b"".join(fake_audio(p) for p in greeting)
            async with asyncio.timeout(10):
                while not all(s.ended for s in fake.sockets):
                    await asyncio.sleep(0.01)
    greetings = [s for s in fake.sockets if [text for _, text in s.flushes] == greeting]  # not the apology
    assert [(s.voice, s.query["model_id"]) for s in greetings] == [("X", FLOW_MODEL), ("default-voice", DEFAULT_MODEL)]
    assert fake.http_requests == []  # the WebSocket path spoke both greetings
