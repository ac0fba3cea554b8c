"""A flow's language and vocabulary reach the vendors: the real deepgram-sdk and our
ElevenLabs client against the stand-ins on 127.0.0.1 (what they received on the wire), the
fallback chains, the outbound voicemail, and one whole call over the real WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from dialgraph.server.core import call_store
from dialgraph.server.core.flow_config import MAX_KEYTERMS, FlowSettings, TransferTarget
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.settings import Settings
from dialgraph.server.outbound import voicemail
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.leg import TwilioLeg
from dialgraph.telephony.simulator.scripted import ScriptedRunner
from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake, word_audio
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake, fake_audio
from dialgraph.telephony.speech.base import FRAME_BYTES, Final, RecognitionStream, open_stream
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
from dialgraph.telephony.speech.elevenlabs import (
    DEFAULT_VOICE,
    INDIAN_VOICE,
    ElevenLabsHttpSynthesizer,
    ElevenLabsSynthesizer,
)
from dialgraph.telephony.speech.fallback import FallbackRecognizer, FallbackSynthesizer
from dialgraph.telephony.speech.offline_tts import OfflineSynthesizer
from dialgraph.telephony.speech.vad import EnergyVad
from tests.fakes.speech import WordCodeRecognizer
from tests.speech.conftest import needs_espeak, phrase_source
from tests.telephony.harness import new_call, new_sids, serve

DG_KEY = "dg-test-key"
EL_KEY = "el-test-key"
VOCAB = ["mujhe", "thursday", "ko", "appointment", "chahiye", "haan", "ji", "i", "need", "an", "please"]
HINGLISH = ["mujhe", "thursday", "ko", "appointment", "chahiye"]
PHRASES = ["Namaste, Sharma Dental.", "Aapko kab aana hai?"]


def clinic(language: str, **more: object) -> FlowSettings:
    return FlowSettings(
        language=language,
        company="Sharma Dental",
        transfer_targets={"desk": TransferTarget(number="+911140000000", description="Dr Mehta")},
        **more,  # type: ignore[arg-type]
    )


async def transcript(stream: RecognitionStream, audio: bytes) -> list[Final]:
    async def feed() -> None:
        for i in range(0, len(audio), FRAME_BYTES):
            stream.push(audio[i : i + FRAME_BYTES])
            if i % (FRAME_BYTES * 10) == 0:
                await asyncio.sleep(0)
        await stream.end_input()

    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        tg.create_task(feed())
        events = [e async for e in stream]
    await stream.aclose()
    return [e for e in events if isinstance(e, Final)]


# --- the flow's settings ---------------------------------------------------------------------
def test_a_flow_language_must_be_one_we_speak() -> None:
    for good in ("en", "en-IN", "hi", "hi-en"):
        assert FlowSettings(language=good).language == good
    for bad in ("fr", "hindi", "hi_en", "EN", "", "multi"):
        with pytest.raises(ValidationError, match=r"language .* is not supported \(use one of: en, en-IN, hi, hi-en\)"):
            FlowSettings(language=bad)


def test_a_bad_language_in_the_configuration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(  # type: ignore[call-arg]
            data_dir=tmp_path, _env_file=None, flows={"reception": {"language": "hinglish"}}
        )
    message = str(info.value)
    assert "reception" in message and "'hinglish' is not supported" in message and "hi-en" in message


def test_keyterms_default_to_the_company_and_the_transfer_targets() -> None:
    assert clinic("hi-en").keyterms == ["Sharma Dental", "Dr Mehta"]
    assert clinic("hi-en", keyterms=[" Dr  Kapoor ", "Dr Kapoor", " ", "Smile Plus"]).keyterms == [
        "Dr Kapoor",
        "Smile Plus",
    ]
    assert clinic("hi-en", keyterms=[]).keyterms == []  # an explicit empty list turns them off
    flow = clinic("hi-en")
    assert FlowSettings.model_validate(flow.model_dump()).keyterms == flow.keyterms
    with pytest.raises(ValidationError, match="keyterms"):
        FlowSettings(keyterms=[f"term {i}" for i in range(MAX_KEYTERMS + 1)])
    with pytest.raises(ValidationError, match="keyterms"):
        FlowSettings(keyterms=["x" * 61])


def test_script_is_roman_unless_the_flow_says_devanagari() -> None:
    assert FlowSettings().script == "roman"
    assert FlowSettings(language="hi", script="devanagari").script == "devanagari"
    with pytest.raises(ValidationError, match="script"):
        FlowSettings(script="latin")  # type: ignore[arg-type]


# --- Deepgram: language and keyterms on the wire ---------------------------------------------
@pytest.mark.parametrize(("language", "sent"), [("hi-en", "multi"), ("hi", "hi"), ("en-IN", "en-IN"), ("en", "en")])
async def test_the_flow_language_and_keyterms_reach_deepgram(language: str, sent: str) -> None:
    flow = clinic(language)
    async with DeepgramFake(VOCAB, api_key=DG_KEY) as fake:
        recognizer = DeepgramRecognizer(DG_KEY, url=fake.url)
        finals = await transcript(
            open_stream(recognizer, language=flow.language, keyterms=flow.keyterms),
            word_audio(HINGLISH, VOCAB, tail_ms=800),
        )
    (conn,) = fake.connections
    assert conn.query["language"] == sent and conn.query["model"] == "nova-3"
    assert conn.params["keyterm"] == ["Sharma Dental", "Dr Mehta"]
    assert "keywords" not in conn.params  # nova-3 takes keyterm, not keywords
    assert " ".join(f.text.lower() for f in finals) == " ".join(HINGLISH)


async def test_a_flow_without_keyterms_sends_none() -> None:
    async with DeepgramFake(VOCAB, api_key=DG_KEY) as fake:
        stream = open_stream(DeepgramRecognizer(DG_KEY, url=fake.url), language="hi-en", keyterms=[])
        await transcript(stream, word_audio(["haan"], VOCAB, tail_ms=500))
    assert fake.connections[0].query["language"] == "multi"
    assert "keyterm" not in fake.connections[0].params


async def test_models_before_nova_3_get_keywords() -> None:
    async with DeepgramFake(VOCAB, api_key=DG_KEY) as fake:
        recognizer = DeepgramRecognizer(DG_KEY, url=fake.url, model="nova-2")
        await transcript(recognizer.stream(language="hi", keyterms=["Sharma Dental"]), word_audio(["ji"], VOCAB))
    assert fake.connections[0].params["keywords"] == ["Sharma Dental"]
    assert "keyterm" not in fake.connections[0].params


async def test_the_fallback_chain_passes_language_and_keyterms_on() -> None:
    flow = clinic("hi-en")
    async with DeepgramFake(VOCAB, api_key=DG_KEY) as fake:
        behind = WordCodeRecognizer(VOCAB)
        chain = FallbackRecognizer([DeepgramRecognizer(DG_KEY, url=fake.url), behind])
        async with contextlib.aclosing(chain):
            await transcript(
                open_stream(chain, language=flow.language, keyterms=flow.keyterms), word_audio(HINGLISH, VOCAB)
            )
            fake.refuse = True  # Deepgram down: the next call's stream moves to the recognizer behind it
            finals = await transcript(
                open_stream(chain, language=flow.language, keyterms=flow.keyterms),
                word_audio(HINGLISH, VOCAB, tail_ms=800),
            )
    assert fake.connections[0].query["language"] == "multi"
    assert fake.connections[0].params["keyterm"] == flow.keyterms
    assert behind.streams and " ".join(f.text for f in finals).split() == HINGLISH  # no keyterms needed there


# --- Deepgram: the language of each final ----------------------------------------------------
async def test_each_final_says_which_language_deepgram_heard() -> None:
    utterances = [HINGLISH, ["i", "need", "an", "appointment", "please"], ["haan", "ji"]]
    audio = b"".join(word_audio(words, VOCAB, tail_ms=600) for words in utterances)
    async with DeepgramFake(VOCAB, api_key=DG_KEY) as fake:
        finals = await transcript(DeepgramRecognizer(DG_KEY, url=fake.url).stream(language="hi-en"), audio)
    assert [(f.text.lower().split(), f.language) for f in finals] == [
        (HINGLISH, "hi-en"),
        (utterances[1], "en"),
        (utterances[2], "hi"),
    ]


async def test_a_monolingual_stream_leaves_the_language_to_the_text() -> None:
    async with DeepgramFake(VOCAB, api_key=DG_KEY) as fake:
        finals = await transcript(
            DeepgramRecognizer(DG_KEY, url=fake.url).stream(language="hi"), word_audio(HINGLISH, VOCAB, tail_ms=600)
        )
    assert finals and all(f.language is None for f in finals)  # Deepgram tags words only with multi


# --- ElevenLabs: model, language_code and voice ----------------------------------------------
async def speak(synth: ElevenLabsSynthesizer | ElevenLabsHttpSynthesizer, flow: FlowSettings) -> bytes:
    chunks = [
        c
        async for c in synth.synthesize(
            phrase_source(PHRASES), voice=flow.voice, language=flow.language, model=flow.tts_model
        )
    ]
    return b"".join(c.audio for c in chunks)


async def test_a_hinglish_flow_gets_the_multilingual_model_hindi_and_an_indian_voice() -> None:
    async with ElevenLabsFake(api_key=EL_KEY) as fake:
        heard = await speak(ElevenLabsSynthesizer(EL_KEY, url=fake.url), clinic("hi-en"))
    (sock,) = fake.sockets
    assert (sock.model_id, sock.language_code, sock.voice) == ("eleven_flash_v2_5", "hi", INDIAN_VOICE)
    assert heard == b"".join(fake_audio(p) for p in PHRASES)


@pytest.mark.parametrize(
    ("flow", "configured_model", "expected"),
    [
        # (flow, the deployment's model) -> (model_id, language_code, voice)
        (clinic("hi-en"), "eleven_flash_v2", ("eleven_flash_v2_5", "hi", INDIAN_VOICE)),  # English-only default
        (clinic("hi"), "eleven_turbo_v2_5", ("eleven_turbo_v2_5", "hi", INDIAN_VOICE)),
        (clinic("en-IN"), "eleven_flash_v2", ("eleven_flash_v2", None, INDIAN_VOICE)),
        (clinic("en"), "eleven_flash_v2", ("eleven_flash_v2", None, DEFAULT_VOICE)),
        # the flow's own model and voice are kept; multilingual v2 takes no language_code
        (
            clinic("hi-en", tts_model="eleven_multilingual_v2", voice="flow-voice"),
            "eleven_flash_v2",
            ("eleven_multilingual_v2", None, "flow-voice"),
        ),
        (
            clinic("hi-en", tts_model="eleven_turbo_v2_5"),
            "eleven_flash_v2_5",
            ("eleven_turbo_v2_5", "hi", INDIAN_VOICE),
        ),
    ],
)
async def test_model_language_code_and_voice_per_flow(
    flow: FlowSettings, configured_model: str, expected: tuple[str, str | None, str]
) -> None:
    async with ElevenLabsFake(api_key=EL_KEY) as fake:
        await speak(ElevenLabsSynthesizer(EL_KEY, url=fake.url, model=configured_model), flow)
        await speak(ElevenLabsHttpSynthesizer(EL_KEY, url=fake.url, model=configured_model), flow)
    sock = fake.sockets[0]
    assert (sock.model_id, sock.language_code, sock.voice) == expected
    assert {(r["model_id"], r["language_code"], r["voice"]) for r in fake.http_requests} == {expected}


async def test_a_voice_the_deployment_chose_is_kept_for_every_language() -> None:
    async with ElevenLabsFake(api_key=EL_KEY) as fake:
        await speak(ElevenLabsSynthesizer(EL_KEY, url=fake.url, voice="house-voice"), clinic("hi-en"))
    assert (fake.sockets[0].voice, fake.sockets[0].language_code) == ("house-voice", "hi")


async def test_the_http_fallback_keeps_the_hinglish_settings() -> None:
    """The production chain: the socket drops, the HTTP path finishes in the same model,
    language and voice."""
    async with ElevenLabsFake(api_key=EL_KEY, drop_after_chunks=1) as fake:
        synth = FallbackSynthesizer(
            [ElevenLabsSynthesizer(EL_KEY, url=fake.url), ElevenLabsHttpSynthesizer(EL_KEY, url=fake.url)]
        )
        async with contextlib.aclosing(synth):
            flow = clinic("hi-en")
            _ = [c async for c in synth.synthesize(phrase_source(PHRASES), language=flow.language)]
    assert fake.http_requests
    for r in fake.http_requests:
        assert (r["model_id"], r["language_code"], r["voice"]) == ("eleven_flash_v2_5", "hi", INDIAN_VOICE)


async def test_the_voicemail_speaks_the_flows_language() -> None:
    flow = clinic("hi-en")
    text = voicemail.message(flow, {"name": "Priya Nair", "purpose": "your appointment"})
    assert text.startswith("Namaste Priya, yeh Sharma Dental ki taraf se call hai, your appointment ke baare mein.")
    async with ElevenLabsFake(api_key=EL_KEY) as fake:
        wav = await voicemail.render_wav(ElevenLabsSynthesizer(EL_KEY, url=fake.url), flow, text)
    assert wav.startswith(b"RIFF")
    sock = fake.sockets[0]
    assert (sock.model_id, sock.language_code, sock.voice) == ("eleven_flash_v2_5", "hi", INDIAN_VOICE)
    assert sock.flushes == [("p0", text)]


def test_the_default_voicemail_message_follows_language_and_script() -> None:
    assert voicemail.message(clinic("en-IN"), {"name": "Priya"}).startswith("Hello Priya, this is Sharma Dental.")
    assert voicemail.message(clinic("hi"), None).startswith("Namaste, yeh Sharma Dental ki taraf")
    assert voicemail.message(clinic("hi", script="devanagari"), None).startswith("नमस्ते, यह Sharma Dental की")
    own = clinic("hi-en", voicemail="{name} ji, {company} se call tha.")
    assert voicemail.message(own, {"name": "Ravi Kumar"}) == "Ravi Kumar ji, Sharma Dental se call tha."


async def test_the_elevenlabs_socket_asks_for_no_compression() -> None:
    async with ElevenLabsFake(api_key=EL_KEY) as fake:
        heard = await speak(ElevenLabsSynthesizer(EL_KEY, url=fake.url), clinic("en"))
    assert fake.sockets[0].extensions is None  # no permessage-deflate offered
    assert heard == b"".join(fake_audio(p) for p in PHRASES)


# --- one whole call ---------------------------------------------------------------------------
@pytest.mark.slow
async def test_a_hinglish_call_opens_deepgram_multi_with_the_flows_keyterms(tmp_path: Path, sqlite_url: str) -> None:
    """Two calls through the app over the real WebSocket, a hi-en flow and an en one: the
    production SDK clients against the stand-ins, Deepgram behind the fallback chain."""
    greeting = "Namaste, Sharma Dental."
    flows = {
        "scheduling": clinic("hi-en", keyterms=["Sharma Dental", "Dr Mehta", "Smile Plus"]),
        "support": clinic("en"),
    }
    async with DeepgramFake(VOCAB, api_key=DG_KEY) as deepgram, ElevenLabsFake(api_key=EL_KEY) as elevenlabs:
        settings = Settings(  # type: ignore[call-arg]
            data_dir=tmp_path,
            database_url=sqlite_url,
            _env_file=None,
            flows=flows,
            elevenlabs_api_key=SecretStr(EL_KEY),
        )
        runners = {name: ScriptedRunner(greeting=greeting, default="Theek hai.") for name in flows}
        overrides = Overrides(
            recognizer=FallbackRecognizer([DeepgramRecognizer(DG_KEY, url=deepgram.url), WordCodeRecognizer(VOCAB)]),
            synthesizer=ElevenLabsSynthesizer(EL_KEY, url=elevenlabs.url),
            vad_factory=EnergyVad,
            runners=runners,
            call_control=object(),  # type: ignore[arg-type]
        )
        events: dict[str, list[CallEvent]] = {}
        async with serve(settings, overrides) as served:
            base = served.url.replace("ws://", "http://").removesuffix("/twilio/media")
            for flow in flows:
                call_sid, _ = new_sids()
                token = await new_call(settings, served.app, call_sid=call_sid, flow=flow)
                leg = TwilioLeg(
                    base,
                    public_url=settings.public_url,
                    auth_token=settings.twilio_auth_token.get_secret_value(),
                    call_sid=call_sid,
                    parameters={"token": token},
                )
                async with leg:
                    await leg.until_audio()
                    await leg.until_quiet()  # the greeting
                    await leg.turn(word_audio(["haan", "ji"], VOCAB, tail_ms=100))
                await served.session_done(call_sid)
                events[flow] = await call_store.transcript(served.app.state.services.db, call_sid)
    hinglish, english = deepgram.connections[0], deepgram.connections[1]
    assert hinglish.query["language"] == "multi"
    assert hinglish.params["keyterm"] == ["Sharma Dental", "Dr Mehta", "Smile Plus"]
    assert english.query["language"] == "en" and english.params["keyterm"] == ["Sharma Dental", "Dr Mehta"]
    said = [turn for kind, turn in runners["scheduling"].inputs if kind == "respond"]
    assert said and "haan ji" in str(said[0]).lower()
    # The caller's turn is recorded with its language: as Deepgram tagged the words under
    # multi (all Hindi: "hi"), else as the text reads (en stream, no tags: "hi-en").
    caller = {
        flow: [(e.data or {}).get("language") for e in rows if e.role == "caller"] for flow, rows in events.items()
    }
    assert caller == {"scheduling": ["hi"], "support": ["hi-en"]}
    spoke = [(s.model_id, s.language_code, s.voice) for s in elevenlabs.sockets if s.flushes]
    assert spoke[0] == ("eleven_flash_v2_5", "hi", INDIAN_VOICE)
    assert spoke[-1] == ("eleven_flash_v2_5", None, DEFAULT_VOICE)


# --- the offline voice ------------------------------------------------------------------------
@needs_espeak
async def test_espeak_speaks_a_hindi_flow_and_devanagari_with_its_hindi_voice() -> None:
    tts = OfflineSynthesizer(engine="espeak")
    roman, devanagari = "Aapko 11 baje aana hai.", "आपको ग्यारह बजे आना है।"
    assert tts.voice_for(roman, "hi") == "hi" and tts.voice_for(devanagari, "en") == "hi"
    assert tts.voice_for(roman, "hi-en") == "en-us" and tts.voice_for(roman, "en-IN") == "en-us"

    async def said(text: str, language: str) -> bytes:
        return b"".join([c.audio async for c in tts.synthesize(phrase_source([text]), language=language)])

    hindi, english = await said(roman, "hi"), await said(roman, "en")
    assert hindi and english and hindi != english  # "11" is "gyarah" in the Hindi voice
    assert len(await said(devanagari, "en")) > 8000 * 0.5  # Devanagari is spoken, not skipped
