"""Turn taking on the offline path: whisper's fixed endpoint against the Smart Turn detector.

A caller's turn ends, on the embedded recognizer, after ``endpointing_ms`` (500) of silence;
with a turn detector (telephony/speech/offline_asr.py, module docstring) a pause is scored
and the turn ends at once, is held open, or keeps an endpoint. This prints, per setting,
what it does to callers rendered by the shipped piper voice (``bench/callers.py``: joe,
``variation=False``, 8 kHz mu-law, digital silence between words):

* ``complete``: whole sentences, then silence.
* ``paused``: the same kind of sentence rendered whole and cut after its middle word (word
  ends from whisper's word timestamps), a pause of 300-700 ms inserted there: mid-sentence
  prosody, then the rest.
* ``um``: a start trailing off into "um"/"uh", a pause of 300-700 ms, then the rest
  rendered on its own.

Each utterance (300 ms of silence, the speech, 2 s of silence) goes through its own
``WhisperRecognizer`` stream frame by frame on the audio clock, and after every 20 ms frame
the pool is left to finish (decode, detector, callbacks) before the next one: the outcome
depends on the audio only, not on how fast or busy the machine is. So the latency figure
is in audio time, end of speech -> the frame at which the turn's ``Final`` came out, and
does not include compute; the compute is printed beside it (decode and detector, per job,
wall ms: the machine's 2 cores are shared, read them as rough). In a live call the Final
comes out at that point plus whatever of the decode is still running (the speculative
decode starts 160 ms into the pause), and a detector verdict arrives its compute time
(~50 ms CPU) after the pause that asked for it, not in the same frame: until it is back
the plain endpoint applies, and a verdict that finds the silence already past its
endpoint closes the turn on arrival.

* ``false cut-offs``: utterances with a ``Final`` emitted before the end of their speech
  (the caller was mid-sentence: before the continuation, or in a comma pause).
* ``wasted``: decodes whose text became no Final (dropped speculative guesses) and
  detector runs, per utterance.

Jobs are memoised on their input (the same audio gives the same text and probability):
every setting after the first runs in seconds, and the compute figures come from the first
computation of each input.

``--live`` instead pushes each utterance at the phone's pace (a frame every 20 ms of wall
time, nothing memoised) for the detector off and on: the Final's time then includes the
verdict and the decode as this machine runs them (noisy on shared cores; ~4 min).

    .venv/bin/python -m bench.turn_taking [--no-sweep] [--show] [--live]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.callers import Utterance, render_set
from dialgraph.telephony.speech.base import FRAME_BYTES, FRAME_MS, Final, RecognitionEvent
from dialgraph.telephony.speech.workers import SpeechWorkers


class BenchWorkers(SpeechWorkers):
    """The real pool, memoising jobs on their input, counting them, timing first runs, and
    telling the bench when no job of ours is in flight on the event loop."""

    def __init__(self, size: int, *, memo: bool = True) -> None:
        super().__init__(size)
        self.memo = memo
        self.inflight = 0
        self.idle = asyncio.Event()
        self.clock_ms = 0  # the audio clock of the utterance being pushed
        self.scores: list[tuple[int, float]] = []  # (audio ms the detector was asked at, p)
        self.jobs: dict[str, int] = {}
        self.wall_ms: dict[str, list[float]] = {}
        self.cpu_ms: dict[str, list[float]] = {}
        self._memo: dict[tuple[Any, ...], Any] = {}

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kind = "detector" if getattr(fn, "__name__", "") == "probability_complete" else "decode"
        self.jobs[kind] = self.jobs.get(kind, 0) + 1
        key = (kind, *(a if isinstance(a, bytes | str) else id(a) for a in args), *sorted(kwargs.items()))
        self.inflight += 1
        self.idle.clear()
        started = self.clock_ms
        try:
            if key in self._memo:
                result = self._memo[key]
            else:

                def timed() -> tuple[Any, float]:
                    cpu = time.thread_time()
                    return fn(*args, **kwargs), time.thread_time() - cpu

                wall = time.perf_counter()
                result, cpu = await super().run(timed)
                self.wall_ms.setdefault(kind, []).append((time.perf_counter() - wall) * 1000)
                self.cpu_ms.setdefault(kind, []).append(cpu * 1000)
                if self.memo:
                    self._memo[key] = result
            if kind == "detector":
                self.scores.append((started, result))
            return result
        finally:
            self.inflight -= 1
            if not self.inflight:
                self.idle.set()

    def reset_counts(self) -> None:
        self.jobs = {}


async def settle(pool: BenchWorkers) -> None:
    """Run the loop until every job started so far, and what it set off, is done."""
    async with asyncio.timeout(60):
        while True:
            for _ in range(8):
                await asyncio.sleep(0)
            if not pool.inflight:
                return
            await pool.idle.wait()


@dataclass
class Outcome:
    utterance: Utterance
    finals: list[tuple[int, Final]] = field(default_factory=list)  # (audio ms emitted at, event)
    scores: list[tuple[int, float]] = field(default_factory=list)  # (audio ms asked at, detector p)

    @property
    def cut(self) -> bool:
        return any(at < self.utterance.speech_end_ms for at, _ in self.finals)

    @property
    def latency_ms(self) -> int | None:
        after = [at for at, _ in self.finals if at >= self.utterance.speech_end_ms]
        return after[0] - self.utterance.speech_end_ms if after else None


async def run_live(asr: Any, pool: BenchWorkers, utterance: Utterance) -> Outcome:
    """Push at the phone's pace (a frame every 20 ms of wall time) with nothing memoised:
    the Final's time includes the verdict and decode compute, on this machine's cores."""
    stream = asr.stream()
    outcome = Outcome(utterance)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def collect() -> None:
        async for event in stream:
            if isinstance(event, Final):
                outcome.finals.append((round((loop.time() - start) * 1000), event))

    reader = asyncio.create_task(collect())
    audio = utterance.audio
    for k, i in enumerate(range(0, len(audio), FRAME_BYTES)):
        await asyncio.sleep(max(0.0, start + (k + 1) * FRAME_MS / 1000 - loop.time()))  # the frame has been heard
        pool.clock_ms = (k + 1) * FRAME_MS
        stream.push(audio[i : i + FRAME_BYTES])
    await stream.end_input()
    async with asyncio.timeout(60):
        await reader
    await stream.aclose()
    return outcome


async def run_one(asr: Any, pool: BenchWorkers, utterance: Utterance) -> Outcome:
    stream = asr.stream()
    outcome = Outcome(utterance)
    clock = [0]
    pool.scores = outcome.scores

    async def collect() -> None:
        event: RecognitionEvent
        async for event in stream:
            if isinstance(event, Final):
                outcome.finals.append((clock[0], event))

    reader = asyncio.create_task(collect())
    audio = utterance.audio
    for i in range(0, len(audio), FRAME_BYTES):
        stream.push(audio[i : i + FRAME_BYTES])
        clock[0] = pool.clock_ms = (i // FRAME_BYTES + 1) * FRAME_MS
        await settle(pool)
    await stream.end_input()
    async with asyncio.timeout(60):
        await reader
    await stream.aclose()
    return outcome


@dataclass(frozen=True)
class Setting:
    name: str
    kwargs: dict[str, Any]


def _q(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(setting: Setting, outcomes: list[Outcome], jobs: dict[str, int], show: bool) -> dict[str, float]:
    lat = [o.latency_ms for o in outcomes if o.latency_ms is not None]
    row: dict[str, float] = {"p50": _q(lat, 50), "p90": _q(lat, 90), "cuts": sum(o.cut for o in outcomes)}
    per = []
    for category in ("complete", "paused", "um"):
        rows = [o for o in outcomes if o.utterance.category == category]
        cl = [o.latency_ms for o in rows if o.latency_ms is not None]
        per.append(f"{category} {_q(cl, 50):4.0f}/{_q(cl, 90):4.0f} cut {sum(o.cut for o in rows):2d}/{len(rows)}")
    finals = sum(len(o.finals) for o in outcomes)
    n = len(outcomes)
    missing = sum(o.latency_ms is None for o in outcomes)
    print(
        f"{setting.name:40s} all p50 {row['p50']:4.0f} p90 {row['p90']:4.0f}  cut {row['cuts']:2.0f}/{n}  | "
        + "  ".join(per)
        + f"  | wasted decodes {(jobs.get('decode', 0) - finals) / n:.2f}/utt, detector {jobs.get('detector', 0) / n:.2f}/utt"
        + (f"  NO FINAL {missing}" if missing else "")
    )
    if show:
        for o in outcomes:
            end = o.utterance.speech_end_ms
            heard = " | ".join(f"{at - end:+5d} ms: {f.text}" for at, f in o.finals)
            heard += "".join(f"  [p {p:.2f} at {at - end:+d}]" for at, p in o.scores)
            print(
                f"      {o.utterance.category:8s} pause {o.utterance.pause_ms:3d}  {o.utterance.text}\n          {heard}"
            )
    return row


def _on(name: str, **kw: Any) -> Setting:
    return Setting(name, {"endpointing_ms": 500, "turn_detector": True, **kw})


def settings(sweep: bool) -> list[Setting]:
    """Detector off at today's 500 ms, on with the recognizer's defaults, and the sweep:
    plain endpoints; ending turns at the pause (``end_above``) over a pause/threshold
    grid; hold-only (no ``end_above``: a confident "complete" only shortens the endpoint)."""
    out = [Setting("off, endpoint 500 (today)", {"endpointing_ms": 500}), _on("on, defaults")]
    if not sweep:
        return out
    out += [Setting(f"off, endpoint {ms}", {"endpointing_ms": ms}) for ms in (300, 400, 700)]
    for pause in (160, 200, 250, 300):
        for end_above in (0.8, 0.9, 0.95):
            for hold_below in (0.1, 0.3):
                kw = dict(turn_pause_ms=pause, turn_end_above=end_above, turn_hold_below=hold_below)
                out.append(
                    _on(f"end, pause {pause} end>={end_above} hold<{hold_below} ep 500", turn_endpoint_ms=500, **kw)
                )
    for hold_below in (0.1, 0.3, 0.5):
        for endpoint in (300, 350, 400, 450, 500):
            kw = dict(turn_hold_below=hold_below, turn_endpoint_ms=endpoint)
            out.append(_on(f"hold only, hold<{hold_below} ep {endpoint}", **kw))
    for pause in (200, 250, 300):
        out.append(_on(f"hold only, pause {pause} hold<0.5 ep 350", turn_pause_ms=pause))
    out.append(_on("defaults, max wait 900", turn_max_wait_ms=900))
    out.append(_on("defaults + end, end>=0.97", turn_end_above=0.97))
    return out


async def main(sweep: bool, show: bool, live: bool) -> None:
    from dialgraph.telephony.speech.offline_asr import WhisperRecognizer, load_whisper
    from dialgraph.telephony.speech.offline_tts import load_piper
    from dialgraph.telephony.speech.turn_detector import SmartTurnDetector
    from dialgraph.telephony.speech.vad import SileroVad

    detector = SmartTurnDetector()
    detector.preload()
    voice, whisper = load_piper(), load_whisper(workers=2)
    utterances = render_set(voice, whisper)
    counts = {c: sum(u.category == c for u in utterances) for c in ("complete", "paused", "um")}
    print(f"{len(utterances)} utterances {counts}; latency = end of speech -> Final, audio ms p50/p90")
    pool = BenchWorkers(2, memo=not live)
    if live:
        print("LIVE: real-time pacing, wall ms (includes compute; noisy on shared cores)")
    try:
        for setting in settings(sweep and not live):
            kwargs = dict(setting.kwargs)
            if kwargs.pop("turn_detector", False):
                kwargs["turn_detector"] = detector
            asr = WhisperRecognizer(whisper, workers=pool, vad_factory=SileroVad, **kwargs)
            pool.reset_counts()
            outcomes = [await (run_live if live else run_one)(asr, pool, u) for u in utterances]
            report(setting, outcomes, pool.jobs, show)
    finally:
        pool.shutdown()
    for kind in ("decode", "detector"):
        wall, cpu = pool.wall_ms.get(kind, []), pool.cpu_ms.get(kind, [])
        if wall:
            print(
                f"{kind:8s} per job ({len(wall)} computed): wall p50 {statistics.median(wall):.0f} ms "
                f"p90 {_q(wall, 90):.0f} ms; CPU of the calling thread p50 {statistics.median(cpu):.0f} ms"
                + (" (CTranslate2 computes in its own threads: not counted)" if kind == "decode" else "")
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-sweep", action="store_true", help="detector off and on (defaults) only")
    parser.add_argument("--show", action="store_true", help="print every utterance's Finals")
    parser.add_argument("--live", action="store_true", help="off and defaults at real-time pace, wall clock")
    args = parser.parse_args()
    asyncio.run(main(not args.no_sweep, args.show, args.live))
