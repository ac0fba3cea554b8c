"""Deepgram and ElevenLabs clients against the local fakes: wire details and faults."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment

from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake, word_audio
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake, fake_audio
from dialgraph.telephony.speech.base import FRAME_BYTES, AudioChunk, Final, Interim, ProviderError, UtteranceEnd
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
from dialgraph.telephony.speech.elevenlabs import ElevenLabsHttpSynthesizer, ElevenLabsSynthesizer
from dialgraph.telephony.speech.fallback import FallbackRecognizer, FallbackSynthesizer
from tests.fakes.speech import ToneSynthesizer, WordCodeRecognizer, tone_audio
from tests.speech.conftest import VOCAB, phrase_source

SENTENCE = ["i", "would", "like", "to", "book", "an", "appointment", "for", "tuesday", "at", "ten", "please"]
PHRASES = ["Hello there.", "How can I help you today?", "We open at 9 a.m. tomorrow."]


async def feed(stream: object, audio: bytes, *, pace: float = 0.0) -> None:
    for i in range(0, len(audio), FRAME_BYTES):
        stream.push(audio[i : i + FRAME_BYTES])  # type: ignore[attr-defined]
        if pace:
            await asyncio.sleep(pace)
        elif i % (FRAME_BYTES * 10) == 0:
            await asyncio.sleep(0)  # let the socket move, like a live call
    await stream.end_input()  # type: ignore[attr-defined]


async def transcript_of(stream: object, audio: bytes) -> list[object]:
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        tg.create_task(feed(stream, audio))
        events = [e async for e in stream]  # type: ignore[attr-defined]
    await stream.aclose()  # type: ignore[attr-defined]
    return events


# --- Deepgram ------------------------------------------------------------------------------
async def test_deepgram_query_and_controls_on_the_wire() -> None:
    async with DeepgramFake(VOCAB) as fake:
        rec = DeepgramRecognizer("dg-test-key", url=fake.url, endpointing_ms=300, utterance_end_ms=1000)
        audio = word_audio(SENTENCE[:5], VOCAB, tail_ms=1200)
        events = await transcript_of(rec.stream(language="multi"), audio)
    conn = fake.connections[0]
    assert conn.query["encoding"] == "mulaw" and conn.query["sample_rate"] == "8000"
    assert conn.query["language"] == "multi" and conn.query["model"] == "nova-3"
    assert conn.query["interim_results"] == "true" and conn.query["vad_events"] == "true"
    assert conn.query["endpointing"] == "300" and conn.query["utterance_end_ms"] == "1000"
    assert conn.headers["authorization"] == "Token dg-test-key"
    assert bytes(conn.audio) == audio  # mu-law passed through untouched, nothing lost
    assert [c["type"] for c in conn.controls] == ["Finalize", "CloseStream"]
    assert any(isinstance(e, Interim) for e in events)
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.text.lower() for f in finals] == [" ".join(SENTENCE[:5])]
    assert finals[0].speech_final
    # the end of speech is the last word's end (its audio: 5 words of 200 ms, 100 ms apart),
    # not the result's, which runs on through the endpointing silence
    assert finals[0].last_word_end == pytest.approx(1.4, abs=0.03)
    assert finals[0].end - finals[0].last_word_end >= 0.29
    assert any(isinstance(e, UtteranceEnd) for e in events)


async def test_deepgram_fake_refuses_wrong_encoding() -> None:
    async with DeepgramFake(VOCAB) as fake:
        env = DeepgramClientEnvironment(base=fake.url, production=fake.url, agent=fake.url, agent_rest=fake.url)
        client = AsyncDeepgramClient(api_key="dg-test-key", environment=env)
        with pytest.raises(ApiError):
            async with client.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000):
                pass
    assert fake.rejected == [(400, "expected encoding=mulaw&sample_rate=8000")]


async def test_deepgram_keepalive_while_caller_is_silent() -> None:
    async with DeepgramFake(VOCAB) as fake:
        stream = DeepgramRecognizer("dg-test-key", url=fake.url, keepalive_s=0.05).stream()
        async with asyncio.timeout(10):
            await fake.keepalive.wait()
        await stream.aclose()
    assert {"type": "KeepAlive"} in fake.connections[0].controls


async def test_deepgram_drop_mid_utterance_keeps_every_word() -> None:
    async with DeepgramFake(VOCAB, drop_after_words=4) as fake:
        rec = DeepgramRecognizer("dg-test-key", url=fake.url)
        stream = rec.stream()
        audio = word_audio(SENTENCE, VOCAB, tail_ms=800)
        events = await transcript_of(stream, audio)
    assert fake.connections[0].dropped and len(fake.connections) == 2
    assert stream.reconnects == 1
    finals = " ".join(e.text for e in events if isinstance(e, Final)).lower().split()
    assert finals == SENTENCE  # every word, once, in order
    # the second socket got the audio since the last final again (the words before the drop)
    assert fake.connections[1].words == SENTENCE


async def test_deepgram_long_utterance_without_a_final_is_not_dropped() -> None:
    """More speech than the resend buffer holds, with no final in between (word gaps are
    shorter than the endpointing): the oldest resend copy is forgotten, never new audio."""
    async with DeepgramFake(VOCAB) as fake:
        rec = DeepgramRecognizer("dg-test-key", url=fake.url, endpointing_ms=300, max_buffer_s=1.0)
        audio = word_audio(SENTENCE, VOCAB, tail_ms=600)  # ~3.5 s of speech, one utterance
        assert len(audio) > 3 * rec.max_buffer_bytes
        stream = rec.stream()
        await asyncio.wait_for(stream.ready.wait(), 10)  # (before it is open, a full buffer does drop)
        events = await transcript_of(stream, audio)
    assert bytes(fake.connections[0].audio) == audio  # every frame reached Deepgram
    finals = [e for e in events if isinstance(e, Final)]
    assert " ".join(f.text for f in finals).lower().split() == SENTENCE
    # one timeline: the last final ends between the last word's end and the end of the audio
    # (where in the 600 ms silent tail depends on how the audio was batched into messages)
    last_word_end = (len(audio) - 600 * 8) / 8000
    assert finals[0].start == 0.0 and last_word_end <= finals[-1].end <= len(audio) / 8000 + 0.05
    assert len(stream._replay) + len(stream._pending) <= rec.max_buffer_bytes


async def test_deepgram_refused_falls_back_with_the_buffered_audio() -> None:
    async with DeepgramFake(VOCAB) as fake:
        fake.refuse = True
        fallback = WordCodeRecognizer(VOCAB)
        rec = FallbackRecognizer([DeepgramRecognizer("dg-test-key", url=fake.url, max_reconnects=1), fallback])
        async with contextlib.aclosing(rec):
            stream = rec.stream()
            events = await transcript_of(stream, word_audio(SENTENCE, VOCAB, tail_ms=800))
    assert stream.switched and fake.rejected
    assert " ".join(e.text for e in events if isinstance(e, Final)).split() == SENTENCE


async def test_deepgram_gives_up_with_provider_error_without_fallback() -> None:
    async with DeepgramFake(VOCAB) as fake:
        fake.refuse = True
        stream = DeepgramRecognizer("dg-test-key", url=fake.url, max_reconnects=1).stream()
        stream.push(word_audio(SENTENCE[:2], VOCAB))
        await stream.end_input()
        with pytest.raises(ProviderError):
            async with asyncio.timeout(30):
                _ = [e async for e in stream]
        await stream.aclose()
    assert len(fake.rejected) == 2


# --- ElevenLabs ----------------------------------------------------------------------------
async def test_elevenlabs_ws_wire_and_audio_untouched() -> None:
    async with ElevenLabsFake() as fake:
        synth = ElevenLabsSynthesizer("el-test-key", url=fake.url, voice="voice-1")
        chunks = [c async for c in synth.synthesize(phrase_source(PHRASES), language="hi")]
    sock = fake.sockets[0]
    assert sock.voice == "voice-1"
    assert sock.query["output_format"] == "ulaw_8000" and sock.query["model_id"] == "eleven_flash_v2_5"
    assert sock.query["language_code"] == "hi"
    assert sock.flushes == [(f"p{i}", p) for i, p in enumerate(PHRASES)]  # one flush per phrase
    assert sock.closed_contexts == ["p0", "p1", "p2"]
    for i, p in enumerate(PHRASES):
        assert b"".join(c.audio for c in chunks if c.phrase == i) == fake_audio(p)


async def test_elevenlabs_barge_in_closes_contexts_and_socket() -> None:
    async with ElevenLabsFake() as fake:
        fake.chunk_delay_s = 0.01
        synth = ElevenLabsSynthesizer("el-test-key", url=fake.url)
        it = synth.synthesize(phrase_source(PHRASES * 4))
        await anext(it)
        await it.aclose()  # type: ignore[attr-defined]
        async with asyncio.timeout(10):
            while not fake.sockets[0].ended:
                await asyncio.sleep(0.01)
    sock = fake.sockets[0]
    opened = {m["context_id"] for m in sock.messages if m.get("text") == " "}
    assert opened and set(sock.closed_contexts) == opened  # every context closed
    assert sock.messages[-1] == {"close_socket": True}
    assert len(sock.flushes) < len(PHRASES) * 4


async def test_elevenlabs_http_fallback_path_uses_the_sdk() -> None:
    async with ElevenLabsFake() as fake:
        synth = ElevenLabsHttpSynthesizer("el-test-key", url=fake.url, voice="voice-2")
        chunks = [c async for c in synth.synthesize(phrase_source(PHRASES))]
    assert [r["query"]["output_format"] for r in fake.http_requests] == ["ulaw_8000"] * 3
    assert [r["body"]["text"] for r in fake.http_requests] == PHRASES
    assert fake.http_requests[1]["body"]["previous_text"] == PHRASES[0]
    assert b"".join(c.audio for c in chunks if c.phrase == 2) == fake_audio(PHRASES[2])


async def test_elevenlabs_refused_caller_hears_the_fallback_voice() -> None:
    async with ElevenLabsFake() as fake:
        fake.refuse = True
        fallback = ToneSynthesizer()
        synth = FallbackSynthesizer([ElevenLabsSynthesizer("el-test-key", url=fake.url), fallback])
        async with contextlib.aclosing(synth):
            chunks = [c async for c in synth.synthesize(phrase_source(PHRASES))]
    assert fake.rejected
    for i, p in enumerate(PHRASES):
        assert b"".join(c.audio for c in chunks if c.phrase == i) == tone_audio(p)


async def test_elevenlabs_drop_mid_reply_fallback_finishes_the_reply() -> None:
    phrases = [PHRASES[1], PHRASES[2], PHRASES[0]]  # the first one is two chunks long
    async with ElevenLabsFake(drop_after_chunks=1) as fake:
        fallback = ToneSynthesizer()
        synth = FallbackSynthesizer([ElevenLabsSynthesizer("el-test-key", url=fake.url), fallback])
        async with contextlib.aclosing(synth):
            chunks = [c async for c in synth.synthesize(phrase_source(phrases))]
    assert fallback.spoken == phrases  # phrase 0 was cut: it restarts in the fallback voice
    assert [c.phrase for c in chunks if c.last] == [0, 1, 2]
    first = b"".join(c.audio for c in chunks if c.phrase == 0)
    assert first == fake_audio(phrases[0])[:1600] + tone_audio(phrases[0])
    assert b"".join(c.audio for c in chunks if c.phrase == 2) == tone_audio(phrases[2])


async def test_elevenlabs_silent_primary_times_out_to_fallback() -> None:
    async with ElevenLabsFake() as fake:
        fake.chunk_delay_s = 60  # the service accepts text but never answers
        synth = FallbackSynthesizer(
            [ElevenLabsSynthesizer("el-test-key", url=fake.url), ToneSynthesizer()], first_audio_timeout_s=0.3
        )
        async with contextlib.aclosing(synth), asyncio.timeout(20):
            chunks = [c async for c in synth.synthesize(phrase_source(PHRASES[:2]))]
    assert b"".join(c.audio for c in chunks) == tone_audio(PHRASES[0]) + tone_audio(PHRASES[1])


async def test_both_fail_the_canned_apology_plays() -> None:
    async with ElevenLabsFake() as fake:
        synth = FallbackSynthesizer([ElevenLabsSynthesizer("el-test-key", url=fake.url)], apology="Sorry.")
        await synth.prepare()  # rendered while the service still works
        fake.refuse = True
        async with contextlib.aclosing(synth):
            chunks = [c async for c in synth.synthesize(phrase_source(PHRASES))]
    assert chunks == [AudioChunk(fake_audio("Sorry."), 0, last=True)]


async def test_phrase_source_error_is_not_swallowed_by_the_fallback() -> None:
    async def broken() -> AsyncIterator[str]:
        yield PHRASES[0]
        raise RuntimeError("LLM stream failed")

    async with ElevenLabsFake() as fake:
        fallback = ToneSynthesizer()
        synth = FallbackSynthesizer([ElevenLabsSynthesizer("el-test-key", url=fake.url), fallback])
        with pytest.raises(RuntimeError, match="LLM stream failed"):
            _ = [c async for c in synth.synthesize(broken())]
    assert fallback.spoken == []
