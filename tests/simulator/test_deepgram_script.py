"""The Deepgram stand-in's script mode (``vendors/deepgram_script.py``), read by our Deepgram
client on the real deepgram-sdk: real audio (tones here, piper's voice in the benchmark) is
heard as the scripted words, a pause longer than ``endpointing`` ends the result there
(measured on the audio's energy), ``SpeechStarted`` marks each onset, ``UtteranceEnd`` follows
the last word, ``Finalize`` answers with the words begun so far; a connection with no
script queued stays the word-coded stand-in."""

from __future__ import annotations

import asyncio
import math

from dialgraph.telephony.audio import audioop
from dialgraph.telephony.simulator.vendors import word_audio
from dialgraph.telephony.simulator.vendors.deepgram_script import ScriptedDeepgram, ScriptedUtterance, ScriptedWord
from dialgraph.telephony.speech.base import FRAME_BYTES, Final, Interim, SpeechStarted, UtteranceEnd
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer

WAIT_S = 20.0  # a safety net against hangs, not a timing assertion


def tone(ms: int) -> bytes:
    pcm = b"".join(
        int(8000 * math.sin(2 * math.pi * 220 * i / 8000)).to_bytes(2, "little", signed=True) for i in range(8 * ms)
    )
    return audioop.lin2ulaw(pcm, 2)


def quiet(ms: int) -> bytes:
    return b"\xff" * (8 * ms)


# "I want" (0-500 ms), a 500 ms pause, "to book it." (1000-1600 ms): times from the onset
SCRIPT = ScriptedUtterance(
    words=(
        ScriptedWord("I", 0.0, 0.2),
        ScriptedWord("want", 0.2, 0.5),
        ScriptedWord("to", 1.0, 1.1),
        ScriptedWord("book", 1.1, 1.4),
        ScriptedWord(
            "it.", 1.4, 1.7
        ),  # past the audio (as whisper may time it): the endpoint still counts from the energy
    ),
    duration=1.6,
)


async def heard(fake: ScriptedDeepgram, audio: bytes, *, endpointing_ms: int) -> list[object]:
    recognizer = DeepgramRecognizer("dg-test-key", url=fake.url, endpointing_ms=endpointing_ms, utterance_end_ms=1000)
    stream = recognizer.stream()
    events: list[object] = []
    async with asyncio.timeout(WAIT_S):
        for i in range(0, len(audio), FRAME_BYTES):
            stream.push(audio[i : i + FRAME_BYTES])
        await asyncio.sleep(0.3)  # the fake hears it all: then Finalize and CloseStream
        await stream.end_input()
        async for event in stream:
            events.append(event)
    await stream.aclose()
    return events


async def test_real_audio_is_heard_by_script_with_endpointing_on_its_energy() -> None:
    audio = quiet(300) + tone(500) + quiet(500) + tone(600) + quiet(1500)
    async with ScriptedDeepgram() as fake:
        taken = fake.expect([SCRIPT])
        split = await heard(fake, audio, endpointing_ms=300)
        assert (await taken).query["endpointing"] == "300"
        fake.expect([SCRIPT])
        whole = await heard(fake, audio, endpointing_ms=700)
        cut_short = fake.expect([SCRIPT])
        finalized = await heard(fake, quiet(300) + tone(1200), endpointing_ms=300)
        await cut_short
        plain = await heard(fake, word_audio([], [], tail_ms=500), endpointing_ms=300)  # no script: word-coded

    finals = [e for e in split if isinstance(e, Final)]
    assert [(f.text, f.speech_final) for f in finals] == [("I want", True), ("To book it.", True)]
    assert [round(f.end, 2) for f in finals] == [1.1, 2.2]  # 300 ms of quiet after 0.8 s and 1.9 s
    assert [round(e.at, 2) for e in split if isinstance(e, SpeechStarted)] == [0.3, 1.3]
    assert [round(e.last_word_end, 2) for e in split if isinstance(e, UtteranceEnd)] == [2.0]
    assert any(isinstance(e, Interim) for e in split)

    assert [(f.text, f.speech_final) for f in whole if isinstance(f, Final)] == [("I want to book it.", True)]
    # Finalize mid-word: the words begun by then (the audio stops at 1.5 s, in "book")
    assert [(f.text, f.speech_final) for f in finalized if isinstance(f, Final)] == [("I want to book", False)]
    assert plain == []
