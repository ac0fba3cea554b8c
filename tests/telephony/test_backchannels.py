"""Backchannels over the real WebSocket: the real app under uvicorn, the real deepgram-sdk
against the Deepgram stand-in (word-coded audio: each word's interim result comes at its
end, as the vendor streams them), the ElevenLabs stand-in and ChatOpenAI against the local
OpenAI fake.

While the agent answers, the caller says every default backchannel, English and Hindi
("mm-hmm", "yeah", "okay", "haan ji", "achha", "theek hai", ...): no ``clear`` comes. Then
"wait", "ruko", "nahi nahi": each is cleared within 250 ms of its speech onset, measured on
the caller's audio timeline (how much of the caller's speech Twilio had sent, 20 ms a
frame, when the ``clear`` arrived), not by the wall clock. The call log has the real
interruptions as caller turns, each with its language, and no backchannel at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from dialgraph.server.core.call_store import transcript
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.audio import silence
from dialgraph.telephony.call.turn_policy import BARGE_IN, TurnPolicy, words_of
from dialgraph.telephony.simulator.leg import TwilioLeg
from dialgraph.telephony.simulator.protocol import FRAME_BYTES
from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake, word_audio
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake
from dialgraph.telephony.simulator.vendors.openai import FakeOpenAIServer, ScriptedReply
from dialgraph.telephony.speech.base import Final, Interim
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
from dialgraph.telephony.speech.elevenlabs import ElevenLabsSynthesizer
from dialgraph.telephony.speech.vad import EnergyVad
from dialgraph.telephony.speech.workers import SpeechWorkers
from tests.speech.conftest import needs_offline, similarity
from tests.telephony.harness import WAIT_S, Served, new_call, new_sids, serve

DG_KEY = "dg-key-0123456789"
EL_KEY = "el-key-0123456789"
RATE = 8000
BARGE_IN_TARGET_MS = 250
BACKCHANNELS: list[str] = Settings(_env_file=None).backchannel_words  # type: ignore[call-arg]

# Every default backchannel, as the stand-in's words (a phrase is several words), in three
# batches: one per agent reply, each ended by a real interruption.
BATCHES: list[tuple[list[str], str]] = [
    (["mm-hm", "mm-hmm", "uh-huh", "yeah", "yes", "okay", "ok"], "wait"),
    (["right", "sure", "hmm", "hmm hmm", "haan", "haan ji", "achha"], "ruko"),
    (["accha", "ji", "theek hai", "हाँ जी", "अच्छा", "ठीक है"], "nahi nahi"),
]
VOCAB = sorted(
    {"opening", "hours", "please"} | {w for batch, stop in BATCHES for phrase in [*batch, stop] for w in phrase.split()}
)
# ~16 s of agent speech each (the stand-in renders 10 ms a character): longer than a batch
ANSWERS = [f"Answer {n}: " + "we are open from nine until five on weekdays, " * 35 for n in range(3)]


class Caller(TwilioLeg):
    """A Twilio leg that counts the caller's speech it has sent (frames of queued audio,
    20 ms each) and notes that count whenever a ``clear`` arrives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spoken = 0  # bytes of queued caller audio sent so far
        self.queued = 0  # bytes of caller audio queued so far
        self.clears_at: list[int] = []  # ``spoken`` when each clear arrived

    def say_at(self, audio: bytes) -> int:
        """Queue ``audio`` (whole frames); returns where it starts on the caller's timeline."""
        assert len(audio) % FRAME_BYTES == 0
        start = self.queued
        self.queued += len(audio)
        self.say(audio)
        return start

    def next_frame(self, at: float) -> bytes | None:
        frame = super().next_frame(at)
        if frame is not None:
            self.spoken += FRAME_BYTES
        return frame

    def on_clear(self, at: float, cut_end: float) -> None:
        self.clears_at.append(self.spoken)

    async def until_clears(self, n: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.clears_at) < n:
                assert not self.closed.is_set(), "the stream closed"
                await asyncio.sleep(0.01)

    async def until_spoken(self) -> None:
        async with asyncio.timeout(WAIT_S):
            while self.spoken < self.queued:
                await asyncio.sleep(0.01)


def phrase_audio(phrase: str, *, word_ms: int, pause_ms: int) -> bytes:
    """A phrase as the stand-in hears it, then ``pause_ms`` of silence (the stand-in ends the
    utterance with a ``speech_final`` result after 300 ms)."""
    return word_audio(phrase.split(), VOCAB, word_ms=word_ms, gap_ms=100, tail_ms=pause_ms)


@dataclass
class Stack:
    served: Served
    settings: Settings
    openai: FakeOpenAIServer


@asynccontextmanager
async def running(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Stack]:
    replies = [ScriptedReply(text=answer) for answer in ANSWERS] + [ScriptedReply(text="Of course.")]
    async with (
        DeepgramFake(VOCAB, api_key=DG_KEY) as deepgram,
        ElevenLabsFake(api_key=EL_KEY) as elevenlabs,
        FakeOpenAIServer(replies) as openai,
    ):
        config = Settings(  # type: ignore[call-arg]
            data_dir=tmp_path,
            database_url=sqlite_url,
            _env_file=None,
            deepgram_api_key=SecretStr(DG_KEY),
            deepgram_url=deepgram.url,
            elevenlabs_api_key=SecretStr(EL_KEY),
            elevenlabs_url=elevenlabs.url,
            model=f"openai-compatible:{openai.base_url}/gpt-4o-mini",
        )
        overrides = Overrides(
            # the production SDK clients, against the stand-ins
            # the default 40 ms messages: while the agent talks the session asks for one per
            # Twilio frame (a batched frame would hold a word's end back by up to 20 ms)
            recognizer=DeepgramRecognizer(DG_KEY, url=deepgram.url, model="nova-3"),
            synthesizer=ElevenLabsSynthesizer(EL_KEY, url=elevenlabs.url, model="eleven_flash_v2_5"),
            vad_factory=EnergyVad,
            call_control=object(),  # type: ignore[arg-type]
        )
        async with serve(config, overrides) as served:
            yield Stack(served, config, openai)


async def test_backchannels_do_not_interrupt_and_real_interruptions_clear_within_250_ms(
    tmp_path: Path, sqlite_url: str
) -> None:
    async with running(tmp_path, sqlite_url) as stack:
        call_sid, _ = new_sids()
        token = await new_call(stack.settings, stack.served.app, call_sid=call_sid)
        base = stack.served.url.replace("ws://", "http://").removesuffix("/twilio/media")
        leg = Caller(
            base,
            public_url=stack.settings.public_url,
            auth_token=stack.settings.twilio_auth_token.get_secret_value(),
            call_sid=call_sid,
            parameters={"token": token},
        )
        latencies_ms: list[float] = []
        async with leg:
            await leg.until_audio()
            await leg.until_quiet()  # the greeting
            leg.say_at(phrase_audio("opening hours please", word_ms=200, pause_ms=400))
            for n, (batch, interruption) in enumerate(BATCHES):
                await leg.until_spoken()  # the caller's turn (or the interruption) has been said
                heard = len(leg.audio)
                await leg.until_audio(heard + 8000)  # a second of the answer has arrived: it plays
                assert len(stack.openai.requests) == n + 1
                for phrase in batch:  # backchannels take 300 ms a word, like "mm-hmm" or "achha"
                    leg.say_at(phrase_audio(phrase, word_ms=300, pause_ms=600))
                onset = leg.say_at(phrase_audio(interruption, word_ms=200, pause_ms=800))
                await leg.until_clears(n + 1)
                cleared = leg.clears_at[n]
                assert cleared > onset, f"a clear before {interruption!r}: a backchannel of {batch} interrupted"
                latencies_ms.append((cleared - onset) / RATE * 1000)
            await leg.until_quiet()  # the answer to the last interruption has played
        await stack.served.session_done(call_sid)
        events = await transcript(stack.served.app.state.services.db, call_sid)

    assert len(leg.clears_at) == len(BATCHES)
    # Each real interruption was cleared once its first word was recognised: within the target.
    assert all(0 < ms <= BARGE_IN_TARGET_MS for ms in latencies_ms), latencies_ms
    caller = [(e.text, (e.data or {}).get("language")) for e in events if e.kind == "turn" and e.role == "caller"]
    assert caller == [("Opening hours please", "en"), ("Wait", "en"), ("Ruko", "hi-en"), ("Nahi nahi", "hi-en")]
    interrupted = [e for e in events if e.kind == "turn" and e.role == "agent" and e.interrupted]
    assert len(interrupted) == len(BATCHES)


# --- the offline path: whisper's early text ------------------------------------------------------
@needs_offline
async def test_offline_whisper_early_text_holds_an_english_backchannel_and_lets_wait_through() -> None:
    """Whisper with ``interim_ms``: the segment so far is decoded while the caller speaks, so
    the same text rule holds "Okay." and lets "Wait, ..." through before the caller stops."""
    from dialgraph.telephony.speech.offline_asr import WhisperRecognizer, load_whisper
    from dialgraph.telephony.speech.offline_tts import load_piper, render_piper
    from dialgraph.telephony.speech.vad import SileroVad

    pool = SpeechWorkers(1)
    try:
        model, voice = await asyncio.gather(asyncio.to_thread(load_whisper, workers=1), asyncio.to_thread(load_piper))
        recognizer = WhisperRecognizer(model, workers=pool, vad_factory=SileroVad, interim_ms=200)
        assert recognizer.capabilities.interim_results
        assert not WhisperRecognizer(model, workers=pool, vad_factory=SileroVad).capabilities.interim_results
        for said, interrupts in [("Okay.", False), ("Wait, what time was that?", True)]:
            policy = TurnPolicy(backchannel_words=BACKCHANNELS)
            policy.agent_turn_started()
            policy.agent_audio_started()
            audio = silence(300) + render_piper(voice, said, variation=False) + silence(900)
            split = 700 * RATE // 1000  # 300 ms of silence, then 400 ms of the caller's words
            stream = recognizer.stream()
            try:
                events = aiter(stream)
                for i in range(0, split, FRAME_BYTES):
                    stream.push(audio[i : i + FRAME_BYTES])
                async with asyncio.timeout(WAIT_S):  # the early decode, while the caller still speaks
                    first = await anext(events)
                    while not isinstance(first, Interim):
                        assert not isinstance(first, Final), first
                        first = await anext(events)
                actions = list(policy.recognition(first))
                for i in range(split, len(audio), FRAME_BYTES):
                    stream.push(audio[i : i + FRAME_BYTES])
                await stream.end_input()
                async with asyncio.timeout(WAIT_S):
                    rest = [e async for e in events]
            finally:
                await stream.aclose()
            for event in rest:
                actions += policy.recognition(event)
            finals = [e.text for e in rest if isinstance(e, Final)]
            assert finals and similarity(" ".join(finals), said) >= 0.7, finals
            if interrupts:
                assert words_of(first.text)[0] == "wait" and actions[0] == BARGE_IN, (first, actions)
            else:
                assert set(words_of(first.text)) <= policy.backchannels and actions == [], (first, actions)
    finally:
        pool.shutdown()
