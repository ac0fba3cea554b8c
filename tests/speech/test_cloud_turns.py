"""The semantic end of turn on the Deepgram path (telephony/speech/cloud_turns.py): the
real deepgram-sdk against the local stand-in, word-coded audio pushed at the phone's pace.

Word-coded audio means nothing to Smart Turn, so these streams get ``TableDetector``: a
stand-in for the external model implementing the ``TurnDetector`` interface, answering
from a table keyed by the words in the audio window it is given (audio only, like Smart
Turn: the text Deepgram has sent back by the pause lags the audio). The real model on real speech is the slow test in
``test_cloud_turns_smart.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dialgraph.server.core.flow_config import TurnSettings
from dialgraph.telephony.call.turn_policy import Preempt, StartTurn, TurnPolicy, words_of
from dialgraph.telephony.simulator.vendors.deepgram import (
    SILENCE,
    WORD_BASE,
    DeepgramFake,
    DeepgramTiming,
    word_audio,
)
from dialgraph.telephony.speech.base import FRAME_BYTES, Final, Interim, RecognitionEvent, UtteranceEnd
from dialgraph.telephony.speech.cloud_turns import CloudTurnRule, CloudTurns, frame_voiced
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer, DeepgramStream
from dialgraph.telephony.speech.workers import SpeechWorkers

VOCAB = ["book", "an", "appointment", "for", "um", "tuesday", "please"]
ON = TurnSettings(detector="smart_turn")
LATENCY = DeepgramTiming(result_latency_ms=200.0)  # Deepgram's "sub-300 ms", as the bench models it


class TableDetector:
    """``TurnDetector`` answering from a table keyed by the words the word-coded window
    holds (default: complete). ``asked``: those words, per call; ``texts``: the text given."""

    def __init__(self, table: dict[str, float], default: float = 0.9, *, vocab: list[str] = VOCAB) -> None:
        self.vocab = vocab
        self.table = table
        self.default = default
        self.asked: list[str] = []
        self.texts: list[str] = []

    def probability_complete(self, audio_window: bytes, text: str) -> float:
        assert audio_window and len(audio_window) % FRAME_BYTES == 0
        heard = [self.vocab[v - WORD_BASE] for v, _ in itertools.groupby(audio_window) if v not in SILENCE]
        self.asked.append(" ".join(heard))
        self.texts.append(" ".join(words_of(text)))
        return self.table.get(self.asked[-1], self.default)


@pytest.fixture(scope="module")
def pool() -> Iterator[SpeechWorkers]:
    workers = SpeechWorkers(2)
    yield workers
    workers.shutdown()


async def run_call(stream: DeepgramStream, audio: bytes) -> list[tuple[float, RecognitionEvent]]:
    """Push ``audio`` a frame every 20 ms; each event with its wall time, in seconds after
    the last voiced frame was pushed."""
    await asyncio.wait_for(stream.ready.wait(), 10)
    last_voiced = max(i for i in range(0, len(audio), FRAME_BYTES) if frame_voiced(audio[i : i + FRAME_BYTES]))
    marks: dict[str, float] = {}
    got: list[tuple[float, RecognitionEvent]] = []

    async def feed() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n, i in enumerate(range(0, len(audio), FRAME_BYTES)):
            stream.push(audio[i : i + FRAME_BYTES])
            if i == last_voiced:
                marks["speech_end"] = time.monotonic()
            await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - loop.time()))
        await stream.end_input()

    async def read() -> None:
        async for event in stream:
            got.append((time.monotonic(), event))

    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        tg.create_task(feed())
        tg.create_task(read())
    await stream.aclose()
    return [(t - marks["speech_end"], e) for t, e in got]


def turns_of(events: list[tuple[float, RecognitionEvent]]) -> list[tuple[float, object]]:
    """What the real turn policy makes of the events (the caller holds the floor)."""
    policy = TurnPolicy()
    out: list[tuple[float, object]] = []
    for at, event in events:
        for action in policy.recognition(event):
            out.append((at, action))
            if isinstance(action, StartTurn):
                policy.playback_done()  # the agent answered; the floor is the caller's again
    return out


def recognizer(fake: DeepgramFake, pool: SpeechWorkers, detector: TableDetector, **kw: object) -> DeepgramRecognizer:
    return DeepgramRecognizer(
        "dg-test-key", url=fake.url, turn_detector=detector, workers=pool, turn=kw.pop("turn", ON), **kw
    )  # type: ignore[arg-type]


async def test_complete_turn_ends_at_the_pause_with_a_stable_interim_first(pool: SpeechWorkers) -> None:
    detector = TableDetector({"book an appointment": 0.92})
    async with DeepgramFake(VOCAB, timing=LATENCY) as fake:
        rec = recognizer(fake, pool, detector, endpointing_ms=800, utterance_end_ms=1500)
        audio = word_audio(["book", "an", "appointment"], VOCAB, tail_ms=1500)
        events = await run_call(rec.stream(), audio)
    actions = turns_of(events)
    (preempt_at, preempt), (turn_at, turn) = actions
    assert isinstance(preempt, Preempt) and words_of(preempt.text) == ["book", "an", "appointment"]
    assert isinstance(turn, StartTurn) and words_of(turn.text) == words_of(preempt.text)  # the held reply is released
    # pause (160 ms) + verdict + the Finalize's round trip (200 ms here), well before Deepgram's
    # endpointing would have ended it (800 ms + 200 ms)
    assert preempt_at < turn_at < 0.8, events
    assert detector.asked == ["book an appointment"] and detector.texts == ["book an"]  # the text lags
    finals = [e for _, e in events if isinstance(e, Final)]
    assert len(finals) == 1 and finals[0].speech_final
    assert [c["type"] for c in fake.connections[0].controls] == ["Finalize", "Finalize", "CloseStream"]


async def test_um_holds_the_turn_through_deepgrams_speech_final(pool: SpeechWorkers) -> None:
    detector = TableDetector({"book for um": 0.03, "book for um tuesday": 0.9})
    async with DeepgramFake(VOCAB, timing=LATENCY) as fake:
        # Deepgram's speech_final (300 ms) and UtteranceEnd (600 ms) both fall in the 700 ms pause
        rec = recognizer(fake, pool, detector, endpointing_ms=300, utterance_end_ms=600)
        audio = word_audio(["book", "for", "um"], VOCAB, tail_ms=700) + word_audio(["tuesday"], VOCAB, tail_ms=1500)
        events = await run_call(rec.stream(), audio)
    finals = [e for _, e in events if isinstance(e, Final)]
    assert [(words_of(f.text), f.speech_final) for f in finals] == [
        (["book", "for", "um"], False),  # Deepgram said speech_final inside the hold
        (["tuesday"], True),
    ]
    starts = [a for _, a in turns_of(events) if isinstance(a, StartTurn)]
    assert [words_of(s.text) for s in starts] == [["book", "for", "um", "tuesday"]]  # one turn
    assert detector.asked == ["book for um", "book for um tuesday"]
    assert not any(isinstance(e, UtteranceEnd) for t, e in events if t < 0)  # none went out in the hold


async def test_held_turn_ends_after_max_wait_of_silence(pool: SpeechWorkers) -> None:
    detector = TableDetector({"book for um": 0.03})
    async with DeepgramFake(VOCAB, timing=LATENCY) as fake:
        rec = recognizer(fake, pool, detector, endpointing_ms=300, utterance_end_ms=1000)
        audio = word_audio(["book", "for", "um"], VOCAB, tail_ms=2000)
        events = await run_call(rec.stream(), audio)
    (turn_at, turn), *rest = [(t, a) for t, a in turns_of(events) if isinstance(a, StartTurn)]
    assert words_of(turn.text) == ["book", "for", "um"] and not rest
    assert 1.15 < turn_at < 1.8, events  # max_wait_ms (1200) from the pause's start, not Deepgram's 300 ms
    assert isinstance(next(e for t, e in events if t == turn_at), UtteranceEnd)
    assert not any(isinstance(e, Interim) and e.stable for _, e in events)  # a held pause offers nothing


async def test_detector_off_leaves_deepgrams_results_alone(pool: SpeechWorkers) -> None:
    detector = TableDetector({}, default=0.99)
    async with DeepgramFake(VOCAB) as fake:
        rec = recognizer(fake, pool, detector, endpointing_ms=300, turn=TurnSettings(detector="off"))
        stream = rec.stream()
        assert stream.turns is None
        audio = word_audio(["book", "for", "um"], VOCAB, tail_ms=600)
        stream.push(audio)
        await stream.end_input()
        async with asyncio.timeout(10):
            events = [e async for e in stream]
        await stream.aclose()
    assert [type(e).__name__ for e in events if not isinstance(e, Interim)] == ["SpeechStarted", "Final"]
    assert [c["type"] for c in fake.connections[0].controls] == ["Finalize", "CloseStream"]
    assert not detector.asked and not any(isinstance(e, Interim) and e.stable for e in events)


async def test_a_flows_turn_settings_reach_its_stream(pool: SpeechWorkers) -> None:
    from dialgraph.server.core.settings import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        turn=TurnSettings(detector="smart_turn"),
        flows={"hinglish": {"turn": {"hold_below": 0.2, "max_wait_ms": 900}}, "plain": {}},
        default_flow="plain",
    )
    assert settings.turn_for("plain") == settings.turn
    flow_turn = settings.turn_for("hinglish")
    assert (flow_turn.detector, flow_turn.hold_below, flow_turn.max_wait_ms) == ("smart_turn", 0.2, 900)
    async with DeepgramFake(VOCAB) as fake:
        rec = recognizer(fake, pool, TableDetector({}), turn=settings.turn)
        own, default = rec.stream(turn=flow_turn), rec.stream()
        assert own.turns is not None and default.turns is not None
        assert own.turns._rule == CloudTurnRule.of(flow_turn) and own.turns._rule.hold_frames == 45
        assert default.turns._rule.hold_below == 0.5
        await own.aclose()
        await default.aclose()


@pytest.mark.parametrize(
    ("turn", "field"),
    [
        ({"hold_below": 1.5}, "flows.x.turn.hold_below"),
        ({"detector": "vad"}, "flows.x.turn.detector"),
        ({"pause_ms": 10}, "flows.x.turn.pause_ms"),
        ({"end_above": 0.3}, "flows.x.turn.end_above"),
        ({"max_wait_ms": 300, "pause_ms": 400}, "flows.x.turn.max_wait_ms"),
        ({"hold": 0.2}, "flows.x.turn.hold"),
    ],
)
def test_a_bad_flow_turn_names_the_field(turn: dict[str, object], field: str) -> None:
    from pydantic import ValidationError

    from dialgraph.server.core.settings import Settings

    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        Settings(_env_file=None, flows={"x": {"turn": turn}}, default_flow="x")  # type: ignore[call-arg]


async def test_the_same_interim_twice_in_a_pause_is_stable(pool: SpeechWorkers) -> None:
    """Without a verdict that ends the turn (here: a middle score with ``end_above`` set),
    an interim repeated while the caller stays silent is offered as stable, once; one
    repeated across speech, or in a held pause, is not."""
    events: list[RecognitionEvent] = []
    turn = TurnSettings(detector="smart_turn", end_above=0.95, endpoint_ms=2000, max_wait_ms=2500)
    detector = TableDetector({"for um": 0.02}, default=0.7)
    turns = CloudTurns(CloudTurnRule.of(turn), detector, pool, emit=events.append, finalize=lambda: None)

    async def push(audio: bytes) -> None:
        for i in range(0, len(audio), FRAME_BYTES):
            turns.hear(audio[i : i + FRAME_BYTES])
        await asyncio.sleep(0.05)  # the verdict comes back

    def stable() -> list[str]:
        return [e.text for e in events if isinstance(e, Interim) and e.stable]

    await push(word_audio(["book", "an"], VOCAB))
    turns.interim(Interim("Book an", 0.0, 0.5))
    await push(word_audio(["appointment"], VOCAB, tail_ms=300))  # speech between the two
    turns.interim(Interim("Book an", 0.0, 0.5))
    assert stable() == [] and detector.asked == ["book an appointment"]  # scored: 0.7, no end
    turns.interim(Interim("Book an appointment", 0.0, 0.8))
    turns.interim(Interim("Book an appointment", 0.0, 0.8))
    turns.interim(Interim("Book an appointment", 0.0, 0.8))
    assert stable() == ["Book an appointment"]
    turns.final(Final("Book an appointment", 0.0, 0.9))  # Deepgram's speech_final: the turn ends
    events.clear()
    await push(word_audio(["for", "um"], VOCAB, tail_ms=300))
    turns.interim(Interim("For um", 0.9, 1.3))  # the pause is scored now that text came
    await asyncio.sleep(0.05)
    turns.interim(Interim("For um", 0.9, 1.3))
    assert detector.asked[-1] == "for um" and stable() == []  # held: nothing offered
    await turns.aclose()


def test_energy_check_tells_words_from_silence() -> None:
    audio = word_audio(["book"], VOCAB, tail_ms=100)
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    assert [frame_voiced(f) for f in frames] == [True] * 10 + [False] * 5
    assert not frame_voiced(bytes([0xFE, 0x7E]) * (FRAME_BYTES // 2))  # +-16 of 32768: line hiss


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")
async def test_providers_load_smart_turn_for_deepgram_when_a_flow_asks(tmp_path: Path) -> None:
    from dialgraph.server.core.settings import Settings
    from dialgraph.telephony.speech.fallback import FallbackRecognizer
    from dialgraph.telephony.speech.providers import build_recognizer
    from dialgraph.telephony.speech.turn_detector import SmartTurnDetector

    async with DeepgramFake(VOCAB, api_key="dg-key-0123456789") as fake:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=tmp_path,
            deepgram_api_key="dg-key-0123456789",
            deepgram_url=fake.url,
            asr="deepgram",
            flows={"hinglish": {"turn": {"detector": "smart_turn", "hold_below": 0.2}}, "plain": {}},
            default_flow="plain",
        )
        async with contextlib.AsyncExitStack() as stack:
            rec = await build_recognizer(settings, stack)
            assert isinstance(rec, FallbackRecognizer)
            deepgram = rec.recognizers[0]
            assert isinstance(deepgram, DeepgramRecognizer)
            assert isinstance(deepgram.turn_detector, SmartTurnDetector) and deepgram.workers is not None
            plain, flow = deepgram.stream(), deepgram.stream(turn=settings.turn_for("hinglish"))
            assert plain.turns is None  # [turn] is off: Deepgram's results as they come
            assert flow.turns is not None and flow.turns._rule.hold_below == 0.2
            await plain.aclose()
            await flow.aclose()


class GatedDetector(TableDetector):
    """``TableDetector`` whose verdict waits for ``gate`` (set by the test), or raises
    ``fail`` when set: the test decides what comes first, the answer or the verdict."""

    def __init__(self, table: dict[str, float], **kw: object) -> None:
        super().__init__(table, **kw)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.fail: Exception | None = None

    def probability_complete(self, audio_window: bytes, text: str) -> float:
        assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        return super().probability_complete(audio_window, text)


class Turns:
    """A ``CloudTurns`` fed by hand: frames pushed, the frames its ``Finalize``s were asked
    at, its events."""

    def __init__(self, turn: TurnSettings, detector: TableDetector, pool: SpeechWorkers) -> None:
        self.frames = 0
        self.finalized: list[int] = []
        self.events: list[RecognitionEvent] = []
        self.turns = CloudTurns(
            CloudTurnRule.of(turn),
            detector,
            pool,
            emit=self.events.append,
            finalize=lambda: self.finalized.append(self.frames),
        )

    def push(self, audio: bytes) -> float:
        """Push ``audio``; returns the stream time after it (s)."""
        for i in range(0, len(audio), FRAME_BYTES):
            self.frames += 1
            self.turns.hear(audio[i : i + FRAME_BYTES])
        return self.frames * 0.02

    def kinds(self) -> list[str]:
        return [
            f"{type(e).__name__}{'+sf' if isinstance(e, Final) and e.speech_final else ''}"
            for e in self.events
            if not (isinstance(e, Interim) and not e.stable)
        ]


async def _verdicts(turns: CloudTurns, n: int) -> None:
    async with asyncio.timeout(5):
        while len(turns.verdicts) < n:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0)  # the verdict's done callback


async def test_finalize_goes_out_at_the_pause_and_an_early_answer_ends_the_turn_with_the_verdict(
    pool: SpeechWorkers,
) -> None:
    detector = GatedDetector({"book an appointment": 0.92})
    t = Turns(ON, detector, pool)
    end = t.push(word_audio(["book", "an", "appointment"], VOCAB))
    t.turns.interim(Interim("Book an", 0.0, 0.5))
    t.push(word_audio([], VOCAB, tail_ms=160))
    assert t.finalized == [t.frames] and not detector.asked  # with the pause, before any verdict
    t.turns.final(Final("Book an appointment", 0.0, end), from_finalize=True)
    assert t.kinds() == ["Final"]  # the words, not the turn's end: the detector decides that
    detector.gate.set()
    await _verdicts(t.turns, 1)
    assert t.kinds() == ["Final", "UtteranceEnd"]  # at once: nothing left to ask Deepgram
    assert len(t.finalized) == 1
    await t.turns.aclose()


async def test_a_verdict_before_the_answer_waits_for_it_without_a_second_finalize(pool: SpeechWorkers) -> None:
    detector = GatedDetector({"book an appointment": 0.92})
    detector.gate.set()
    t = Turns(ON, detector, pool)
    end = t.push(word_audio(["book", "an", "appointment"], VOCAB))
    t.turns.interim(Interim("Book an appointment", 0.0, end))
    t.push(word_audio([], VOCAB, tail_ms=160))
    await _verdicts(t.turns, 1)
    assert t.kinds() == ["Interim"]  # stable: the session may start its reply
    t.push(word_audio([], VOCAB, tail_ms=100))
    t.turns.final(Final("Book an appointment", 0.0, end), from_finalize=True)
    assert t.kinds() == ["Interim", "Final+sf"] and len(t.finalized) == 1
    await t.turns.aclose()


async def test_an_answer_to_a_pause_the_caller_spoke_after_does_not_end_the_next_one(pool: SpeechWorkers) -> None:
    detector = GatedDetector({"book for": 0.9, "book for tuesday": 0.9})
    t = Turns(ON, detector, pool)
    first = t.push(word_audio(["book", "for"], VOCAB))
    t.turns.interim(Interim("Book for", 0.0, first))
    t.push(word_audio([], VOCAB, tail_ms=160))
    assert len(t.finalized) == 1
    t.push(word_audio(["tuesday"], VOCAB))  # speaks again before the verdict: it is void
    t.push(word_audio([], VOCAB, tail_ms=160))
    assert len(t.finalized) == 2  # the new pause's own Finalize
    detector.gate.set()
    await _verdicts(t.turns, 1)
    t.turns.final(Final("Book for", 0.0, first + 0.14), from_finalize=True)  # the first pause's answer, late
    assert t.kinds() == ["Final"]  # a plain final: the turn goes on
    t.turns.final(Final("Tuesday", first + 0.3, t.frames * 0.02), from_finalize=True)
    assert t.kinds() == ["Final", "Final+sf"]
    await t.turns.aclose()


async def test_a_detector_failure_after_the_pauses_finalize_leaves_the_turn_to_endpoint_ms(
    pool: SpeechWorkers,
) -> None:
    detector = GatedDetector({})
    detector.fail = RuntimeError("onnx")
    t = Turns(TurnSettings(detector="smart_turn", endpoint_ms=400), detector, pool)
    end = t.push(word_audio(["book", "an", "appointment"], VOCAB))
    t.turns.interim(Interim("Book an", 0.0, 0.5))
    t.push(word_audio([], VOCAB, tail_ms=160))
    t.turns.final(Final("Book an appointment", 0.0, end), from_finalize=True)
    detector.gate.set()
    async with asyncio.timeout(5):
        while t.turns._verdict is not None:
            await asyncio.sleep(0.005)
    t.push(word_audio([], VOCAB, tail_ms=200))
    assert t.kinds() == ["Final"]  # 360 ms of silence: not yet
    t.push(word_audio([], VOCAB, tail_ms=40))
    assert t.kinds() == ["Final", "UtteranceEnd"]  # Deepgram has nothing left to end it with
    await t.turns.aclose()
