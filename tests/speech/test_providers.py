"""build_recognizer / build_synthesizer / build_vad_factory from settings."""

from __future__ import annotations

import contextlib
from pathlib import Path

from dialgraph.server.core.settings import Settings
from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake, word_audio
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake, fake_audio
from dialgraph.telephony.speech.base import Final, SpeechRecognizer, SpeechSynthesizer
from dialgraph.telephony.speech.fallback import FallbackRecognizer, FallbackSynthesizer
from dialgraph.telephony.speech.providers import build_recognizer, build_synthesizer, build_vad_factory
from tests.speech.conftest import OFFLINE, VOCAB, needs_offline, phrase_source


def make_settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, _env_file=None, **kw)  # type: ignore[call-arg]


async def test_cloud_providers_run_against_the_fakes_with_offline_behind(tmp_path: Path) -> None:
    async with (
        DeepgramFake(VOCAB, api_key="dg-key-0123456789") as dg,
        ElevenLabsFake(api_key="el-key-0123456789") as el,
    ):
        settings = make_settings(
            tmp_path,
            deepgram_api_key="dg-key-0123456789",
            deepgram_url=dg.url,
            elevenlabs_api_key="el-key-0123456789",
            elevenlabs_url=el.url,
            elevenlabs_voice="flow-voice",
        )
        async with contextlib.AsyncExitStack() as stack:
            rec: SpeechRecognizer = await build_recognizer(settings, stack)
            synth: SpeechSynthesizer = await build_synthesizer(settings, stack)
            assert isinstance(rec, FallbackRecognizer) and isinstance(synth, FallbackSynthesizer)
            assert (len(rec.recognizers) == 2) == OFFLINE
            stream = rec.stream()
            stream.push(word_audio(["book", "an", "appointment"], VOCAB, tail_ms=600))
            await stream.end_input()
            finals = [e.text for e in [e async for e in stream] if isinstance(e, Final)]
            await stream.aclose()
            assert finals == ["Book an appointment"]
            chunks = [c async for c in synth.synthesize(phrase_source(["Hello there."]))]
            assert b"".join(c.audio for c in chunks) == fake_audio("Hello there.")
            assert el.sockets[0].voice == "flow-voice"
            if OFFLINE:  # both ElevenLabs paths refused: the offline voice answers
                el.refuse = True
                chunks = [c async for c in synth.synthesize(phrase_source(["Hello there."]))]
                audio = b"".join(c.audio for c in chunks)
                assert len(audio) > 4000 and audio != fake_audio("Hello there.")
                assert [r["body"]["text"] for r in el.http_requests] == ["Hello there."]


@needs_offline
async def test_offline_providers_without_keys(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.asr_provider == "offline" and settings.tts_provider == "offline"
    async with contextlib.AsyncExitStack() as stack:
        rec = await build_recognizer(settings, stack)
        synth = await build_synthesizer(settings, stack)
        assert not rec.capabilities.interim_results
        chunks = [c async for c in synth.synthesize(phrase_source(["Thanks for calling."]))]
        assert chunks[-1].last and sum(len(c.audio) for c in chunks) > 4000
    vad = build_vad_factory(settings)()
    assert type(vad).__name__ == "SileroVad"
