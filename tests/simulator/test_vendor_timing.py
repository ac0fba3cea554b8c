"""The vendor stand-ins' timing profiles (what the whole-call benchmark models): results and
audio arrive no earlier than the profile says, interims at the profile's cadence, and the
default profile keeps the old behaviour (an interim per word, 10 ms of audio a character). Our real clients (Deepgram SDK, our ElevenLabs socket) read them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from websockets.asyncio.client import connect

from dialgraph.telephony.simulator.vendors import (
    DeepgramFake,
    DeepgramTiming,
    ElevenLabsFake,
    ElevenLabsTiming,
    fake_audio,
    word_audio,
)
from dialgraph.telephony.speech.base import FRAME_BYTES, Final, Interim
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
from dialgraph.telephony.speech.elevenlabs import ElevenLabsSynthesizer

VOCAB = ["what", "are", "your", "opening", "hours"]
WAIT_S = 20.0  # a safety net against hangs, not a timing assertion


async def first_final(fake: DeepgramFake) -> tuple[float, list[object]]:
    """Push a whole utterance (and the endpointing silence) at once; seconds from the push to
    the first ``Final``, and the events up to it."""
    stream = DeepgramRecognizer("dg-test-key", url=fake.url, endpointing_ms=300).stream()
    audio = word_audio(VOCAB, VOCAB, tail_ms=500)
    loop = asyncio.get_running_loop()
    events: list[object] = []
    async with asyncio.timeout(WAIT_S):
        await asyncio.sleep(0.3)  # the socket is open: time the results, not the handshake
        pushed = loop.time()
        for i in range(0, len(audio), FRAME_BYTES):
            stream.push(audio[i : i + FRAME_BYTES])
        async for event in stream:
            events.append(event)
            if isinstance(event, Final):
                break
        took = loop.time() - pushed
        await stream.end_input()
    await stream.aclose()
    return took, events


async def test_deepgram_results_come_no_earlier_than_the_profile_latency() -> None:
    async with DeepgramFake(VOCAB, timing=DeepgramTiming(result_latency_ms=250)) as fake:
        took, events = await first_final(fake)
    final = events[-1]
    assert isinstance(final, Final) and final.text.lower() == " ".join(VOCAB)
    assert took >= 0.25
    assert any(isinstance(e, Interim) for e in events[:-1])  # held back in order, not dropped


async def results_heard(fake: DeepgramFake, words: list[str]) -> list[dict[str, object]]:
    """The ``Results`` messages for ``words`` on a raw socket (the wire, not a client's view)."""
    url = f"{fake.url}/v1/listen?encoding=mulaw&sample_rate=8000&interim_results=true&endpointing=300"
    out = []
    async with asyncio.timeout(WAIT_S), connect(url, additional_headers={"Authorization": "Token dg-test-key"}) as ws:
        await ws.send(word_audio(words, VOCAB, tail_ms=400))
        await ws.send(json.dumps({"type": "CloseStream"}))
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "Results":
                out.append(message)
    return out


async def test_deepgram_interims_at_the_profile_cadence() -> None:
    words = ["what", "are", "your", "opening", "hours"]  # words end at 0.2, 0.5, 0.8, 1.1, 1.4 s of audio
    async with DeepgramFake(VOCAB) as fake:
        every_word = await results_heard(fake, words)
    async with DeepgramFake(VOCAB, timing=DeepgramTiming(interim_every_ms=1000)) as fake:
        per_second = await results_heard(fake, words)
    assert [m["is_final"] for m in every_word] == [False] * 5 + [True, True]  # speech_final, then Finalize's
    interims = [m for m in per_second if not m["is_final"]]
    assert [m["duration"] for m in interims] == [1.1]  # the first word end a second into the utterance
    assert per_second[-2]["speech_final"] is True


async def phrases(*texts: str) -> AsyncIterator[str]:
    for text in texts:
        yield text


async def test_elevenlabs_first_byte_and_pace_no_earlier_than_the_profile() -> None:
    timing = ElevenLabsTiming(first_byte_ms=150, pace=4.0, ms_per_char=65)
    text = "We open at nine."  # 16 characters: 1.04 s of audio, 6 chunks of 0.2 s
    async with ElevenLabsFake(timing=timing) as fake:
        synth = ElevenLabsSynthesizer("el-test-key", url=fake.url)
        loop = asyncio.get_running_loop()
        arrivals: list[float] = []
        audio = b""
        async with asyncio.timeout(WAIT_S):
            started = loop.time()
            async for chunk in synth.synthesize(phrases(text)):
                arrivals.append(loop.time())
                audio += chunk.audio
    assert audio == fake_audio(text, 65) and len(audio) == 16 * 520
    assert arrivals[0] - started >= 0.15
    # 6 chunks: 5 waits of 0.2 s / 4 between the first and the last (a timer may wake 1 ms early)
    assert arrivals[-1] - arrivals[0] >= 5 * 0.05 - 0.005


async def test_elevenlabs_default_profile_is_the_old_one() -> None:
    async with ElevenLabsFake() as fake:
        synth = ElevenLabsSynthesizer("el-test-key", url=fake.url)
        async with asyncio.timeout(WAIT_S):
            audio = b"".join([c.audio async for c in synth.synthesize(phrases("Hello there."))])
    assert audio == fake_audio("Hello there.") and len(audio) == 12 * 80
