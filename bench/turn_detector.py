"""Smart Turn v3.2 (telephony/speech/turn_detector.py): CPU per call, and accuracy on a
rendered set of complete and incomplete caller turns, per language.

Every utterance is rendered by the shipped piper voice (joe, US English) as the phone path
carries it (8 kHz mu-law), framed as the session would hand it over at a pause: 300 ms of
line silence before, the speech, then ``--pause-ms`` of silence (the pause that triggered the
check); ``--line-noise-dbfs`` adds white noise at that level under it all (a phone line is
rarely digital silence). Categories:

* ``complete``: whole sentences a caller says ("I'd like to book ... Thursday at ten.").
* ``cut``: the same audio cut after a word in its middle (word ends from whisper tiny.en's
  word timestamps): the speaker stops mid-sentence, with mid-sentence prosody.
* ``um``: a sentence start trailing off into a filler ("My number is, um").
* ``fragment``: an unfinished sentence rendered on its own ("my number is"). piper reads any
  text as a whole sentence (falling pitch at its end), so this audio carries no acoustic sign
  of being unfinished: it measures how far the words alone move an audio-only model.

Accuracy counts ``complete`` right at probability >= ``--threshold`` and the others right
below it; ``balanced`` is the mean of the complete and incomplete (cut + um) rates; AUC is the
chance that a complete turn outscores an incomplete one (cut + um). The threshold sweep
shows what a flow's threshold would do: complete turns answered at once (p >= t) against
incomplete ones held open (p < t).

``hi-en`` rows are romanised Hinglish read by the ENGLISH voice (no Hindi voice ships in a
PyPI package, espeak-ng is not installed here): an American accent on Hindi words, not a
Hinglish caller. They show whether the model's verdicts survive unfamiliar words, not how it
does on real code-mixed speech (reported much worse by third parties: measure on recordings
before a hi-en flow relies on it).

Latency: ``probability_complete`` on a full 8 s window, CPU time of the calling thread
(onnxruntime runs with one intra-op thread, in that thread), split into features (mu-law ->
16 kHz -> log-mel) and the model; wall time beside it. The machine's cores are shared: read
CPU time, and expect a few ms of noise.

    .venv/bin/python -m bench.turn_detector [--calls 200] [--pause-ms 200] [--line-noise-dbfs -60]
                                            [--threshold 0.5] [--show]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from dialgraph.telephony.audio import audioop, silence
from dialgraph.telephony.speech.base import SAMPLE_RATE
from dialgraph.telephony.speech.turn_detector import WINDOW_S, SmartTurnDetector, model_input

EN_COMPLETE = [
    "I'd like to book an appointment for Thursday at ten.",
    "Can you help me reschedule?",
    "Yes, that works for me.",
    "My number is five five five, zero one two three.",
    "I need to cancel my appointment.",
    "Do you have anything open on Monday morning?",
    "That's all, thank you.",
    "No, I think that's everything.",
    "Could I speak to a person please?",
    "My name is John Smith.",
    "What time do you close today?",
    "I'll take the three o'clock slot.",
    "Sorry, can you repeat that?",
    "I want to change my booking to next week.",
    "I have a toothache and it hurts a lot.",
    "Is Doctor Miller available on Friday?",
    "I was wondering if you have anything open next week.",
    "Can I move my cleaning to Friday afternoon?",
    "I need to cancel my visit because I'm travelling.",
    "Please book it for the earliest slot you have.",
]
EN_UM = [
    "I'd like to book an appointment for, um",
    "My number is, uh",
    "Can I move my appointment to, um",
    "I was wondering if, um",
    "The reason I'm calling is, uh",
    "Do you have anything on, um",
    "I'd like to, uh",
    "So, um",
    "Let me think, um",
    "Well, I was going to say, um",
]
EN_FRAGMENT = [
    "I'd like to book an appointment for",
    "My number is",
    "Can I move my appointment to",
    "I was wondering if",
    "My name is",
    "I need to",
    "Do you have anything on",
    "The reason I'm calling is",
    "Could you tell me the",
    "I want to change my booking to the",
    "Is there a slot with",
    "And also I wanted to ask about",
]
HI_EN_COMPLETE = [
    "Mujhe Thursday ko appointment chahiye.",
    "Kya aap kal subah das baje free hain?",
    "Haan, yeh time theek hai.",
    "Mera naam Rahul Sharma hai.",
    "Mujhe apni booking cancel karni hai.",
    "Doctor sahab Friday ko available hain kya?",
    "Bas itna hi, thank you.",
    "Please next week ka slot de dijiye.",
]
HI_EN_UM = [
    "Mujhe appointment chahiye, um",
    "Mera number hai, uh",
    "Main soch raha tha ki, matlab",
    "Kya aap, um",
    "Woh, matlab, uh",
    "Booking ke liye, um",
]
HI_EN_FRAGMENT = [
    "Mera number hai",
    "Mujhe appointment chahiye for",
    "Main soch raha tha ki",
    "Kya aap mujhe",
]


@dataclass
class Utterance:
    language: str
    category: str
    text: str
    audio: bytes  # 8 kHz mu-law, the speech only


def _word_ends(whisper: Any, audio: bytes) -> list[float]:
    pcm = np.frombuffer(audioop.ulaw2lin(audio, 2), dtype="<i2").astype(np.float32) / 32768
    segments, _ = whisper.transcribe(
        soxr.resample(pcm, SAMPLE_RATE, 16_000), language="en", word_timestamps=True, beam_size=1, temperature=0.0
    )  # temperature 0 only: whisper's fallback samples at random on the Hinglish, moving the cuts
    return [w.end for s in segments for w in s.words]


def render_set(voice: Any, whisper: Any) -> list[Utterance]:
    from dialgraph.telephony.speech.offline_tts import render_piper

    out: list[Utterance] = []
    for language, complete, um, fragment in (
        ("en", EN_COMPLETE, EN_UM, EN_FRAGMENT),
        ("hi-en*", HI_EN_COMPLETE, HI_EN_UM, HI_EN_FRAGMENT),
    ):
        for text in complete:
            audio = render_piper(voice, text, variation=False)
            out.append(Utterance(language, "complete", text, audio))
            ends = _word_ends(whisper, audio)
            if len(ends) >= 4:  # cut after the middle word: at least two words on either side
                k = len(ends) // 2 - 1
                words = text.split()
                shown = " ".join(words[: k + 1]) if len(words) == len(ends) else f"{text} [{k + 1} words]"
                out.append(Utterance(language, "cut", shown + " ...", audio[: int(ends[k] * SAMPLE_RATE)]))
        out += [Utterance(language, "um", t, render_piper(voice, t, variation=False)) for t in um]
        out += [Utterance(language, "fragment", t, render_piper(voice, t, variation=False)) for t in fragment]
    return out


def with_line_noise(audio: bytes, dbfs: float | None, rng: np.random.Generator) -> bytes:
    if dbfs is None:
        return audio
    pcm = np.frombuffer(audioop.ulaw2lin(audio, 2), dtype="<i2").astype(np.float32) / 32768
    pcm = pcm + rng.standard_normal(pcm.size).astype(np.float32) * 10 ** (dbfs / 20)
    return audioop.lin2ulaw((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes(), 2)


def auc(complete: list[float], incomplete: list[float]) -> float:
    """The chance a complete turn outscores an incomplete one (ties half)."""
    a, b = np.array(complete)[:, None], np.array(incomplete)[None, :]
    return float(np.mean(a > b) + 0.5 * np.mean(a == b))


SWEEP = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def accuracy(scored: list[tuple[Utterance, float]], threshold: float, show: bool) -> None:
    languages = list(dict.fromkeys(u.language for u, _ in scored))
    print(f"\naccuracy at p >= {threshold} (complete) / < {threshold} (incomplete)")
    print(f"{'lang':7s} {'category':9s} {'n':>3s} {'right':>6s} {'median p':>9s}")
    for lang in languages:
        rows = [(u, p) for u, p in scored if u.language == lang]
        by: dict[str, list[float]] = {}
        for u, p in rows:
            by.setdefault(u.category, []).append(p)
        rates = {}
        for category, ps in by.items():
            right = [p >= threshold if category == "complete" else p < threshold for p in ps]
            rates[category] = sum(right) / len(right)
            print(f"{lang:7s} {category:9s} {len(ps):3d} {rates[category]:6.0%} {statistics.median(ps):9.2f}")
        incomplete = by.get("cut", []) + by.get("um", [])
        n_inc = len(incomplete)
        inc_rate = sum(p < threshold for p in incomplete) / n_inc
        print(
            f"{lang:7s} balanced (complete vs cut+um): {(rates['complete'] + inc_rate) / 2:.0%}   "
            f"AUC {auc(by['complete'], incomplete):.2f}   AUC vs cut {auc(by['complete'], by['cut']):.2f}   "
            f"AUC vs fragment {auc(by['complete'], by['fragment']):.2f}"
        )
        sweep = "  ".join(
            f"{t:g}: {np.mean(np.array(by['complete']) >= t):.0%}/{np.mean(np.array(incomplete) < t):.0%}"
            for t in SWEEP
        )
        print(f"{lang:7s} by threshold, complete kept / incomplete held: {sweep}")
        if show:
            for u, p in rows:
                print(f"    {p:.2f}  {u.category:9s} {u.text}")
    print("hi-en*: romanised Hinglish read by the English voice (see the docstring), not Hinglish speech")


def _percentiles(samples: list[float]) -> str:
    q = np.percentile(samples, [50, 99])
    return f"p50 {q[0]:6.1f}  p99 {q[1]:6.1f}"


def latency(detector: SmartTurnDetector, audio: bytes, calls: int) -> None:
    window = (audio * (WINDOW_S * SAMPLE_RATE // len(audio) + 1))[-WINDOW_S * SAMPLE_RATE :]
    detector.probability_complete(window, "")  # first run: onnxruntime's allocations

    def timed(fn: Callable[[], object]) -> tuple[list[float], list[float]]:
        cpu, wall = [], []
        for _ in range(calls):
            c, w = time.thread_time(), time.perf_counter()
            fn()
            cpu.append((time.thread_time() - c) * 1000)
            wall.append((time.perf_counter() - w) * 1000)
        return cpu, wall

    print(f"\nlatency per call, 8 s window, one thread, {calls} calls (ms)")
    for name, fn in (
        ("features", lambda: model_input(window)),
        ("whole call", lambda: detector.probability_complete(window, "")),
    ):
        cpu, wall = timed(fn)
        print(f"{name:10s} CPU {_percentiles(cpu)}   wall {_percentiles(wall)}")


def main(calls: int, pause_ms: int, noise_dbfs: float | None, threshold: float, show: bool) -> None:
    from dialgraph.telephony.speech.offline_asr import load_whisper
    from dialgraph.telephony.speech.offline_tts import load_piper

    t = time.perf_counter()
    detector = SmartTurnDetector()
    detector.preload()
    print(f"model load (hash check + session): {(time.perf_counter() - t) * 1000:.0f} ms")
    voice, whisper = load_piper(), load_whisper(workers=1)
    utterances = render_set(voice, whisper)
    lead, pause, rng = silence(300), silence(pause_ms), np.random.default_rng(0)
    scored = [
        (u, detector.probability_complete(with_line_noise(lead + u.audio + pause, noise_dbfs, rng), u.text))
        for u in utterances
    ]
    noise = "digital silence" if noise_dbfs is None else f"line noise at {noise_dbfs} dBFS"
    print(f"{len(utterances)} utterances, {pause_ms} ms pause after the speech, {noise}")
    accuracy(scored, threshold, show)
    latency(detector, b"".join(u.audio for u in utterances if u.category == "complete"), calls)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="timed calls for the latency figures")
    parser.add_argument("--pause-ms", type=int, default=200, help="silence after the speech (the pause)")
    parser.add_argument("--line-noise-dbfs", type=float, default=None, help="white noise under the audio")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--show", action="store_true", help="print every utterance's probability")
    args = parser.parse_args()
    main(args.calls, args.pause_ms, args.line_noise_dbfs, args.threshold, args.show)
