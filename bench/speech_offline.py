"""Offline speech figures: whisper decode time per segment, latency from the end of speech to
the Final (audio paced in real time after the speech ends), piper time to first audio, silero
cost per frame. "legacy" rows reproduce the previous pipeline (faster-whisper ``transcribe``
in a 30 s window, 600 ms endpoint, no speculation) for comparison.

    .venv/bin/python -m bench.speech_offline [--workers 2] [--repeat 3]

Other work on the machine inflates every figure: run it a few times, read the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import soxr

from dialgraph.telephony.audio import (
    audioop,
    silence,
)
from dialgraph.telephony.speech.base import FRAME_BYTES, FRAME_MS, Final
from dialgraph.telephony.speech.offline_asr import WhisperRecognizer, decode_segment, load_whisper
from dialgraph.telephony.speech.offline_tts import OfflineSynthesizer, load_piper, pipelined, render_piper, split_head
from dialgraph.telephony.speech.vad import SileroVad
from dialgraph.telephony.speech.workers import SpeechWorkers

PHRASES = [
    "Hello, thanks for calling Acme Dental.",
    "I would like to book an appointment for next Tuesday.",
    "Can you tell me your opening hours on Saturday?",
    "Sure, I have booked you in for ten thirty on Tuesday morning.",
    "Please transfer me to the billing team.",
]


def legacy_decode(model: Any, ulaw: bytes, language: str = "en") -> tuple[str, float | None]:
    """The previous decode: faster-whisper's transcribe, padded to its 30 s window."""
    pcm = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16).astype(np.float32) / 32768
    audio = soxr.resample(pcm, 8000, 16000, quality="HQ").astype(np.float32)
    segments, _ = model.transcribe(
        audio,
        language=language,
        beam_size=1,
        vad_filter=False,
        condition_on_previous_text=False,
        without_timestamps=True,
    )
    return " ".join(s.text.strip() for s in segments), None


class LegacyRecognizer(WhisperRecognizer):
    async def decode(self, ulaw: bytes, language: str = "en") -> tuple[str, float | None]:
        return await self._workers.run(legacy_decode, self._model, ulaw, language)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def speech_end(audio: bytes) -> int:
    """Byte offset just after the last frame louder than -40 dBFS."""
    last = 0
    for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES):
        if audioop.rms(audioop.ulaw2lin(audio[i : i + FRAME_BYTES], 2), 2) > 328:
            last = i + FRAME_BYTES
    return last


async def latency_after_speech(asr: WhisperRecognizer, speech: bytes) -> float:
    """Push the speech at once, then the rest in real time; seconds from the end of speech
    (last loud frame) to the Final."""
    stream = asr.stream()
    audio = silence(300) + speech + silence(2000)
    cut = 2400 + speech_end(speech)
    stream.push(audio[:cut])
    got: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def consume() -> None:
        async for event in stream:
            if isinstance(event, Final) and not got.done():
                got.set_result(time.perf_counter())

    consumer_task = asyncio.create_task(consume())
    t_end = time.perf_counter()
    for k, i in enumerate(range(cut, len(audio), FRAME_BYTES)):
        if got.done():
            break
        await asyncio.sleep(max(0.0, t_end + (k + 1) * FRAME_MS / 1000 - time.perf_counter()))
        stream.push(audio[i : i + FRAME_BYTES])
    async with asyncio.timeout(10):
        t_final = await got
    await stream.aclose()
    await consumer_task
    return t_final - t_end


async def one(text: str) -> AsyncIterator[str]:
    yield text


async def piper_figures(pool: SpeechWorkers, repeat: int) -> list[bytes]:
    t = time.perf_counter()
    cold = await asyncio.to_thread(load_piper, warm_up=False)
    print(f"piper load (hash check included): {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    await asyncio.to_thread(render_piper, cold, PHRASES[3])
    print(f"piper first synthesis after load, not warmed: {(time.perf_counter() - t) * 1000:.0f} ms")
    voice = await asyncio.to_thread(load_piper)  # warmed, as the server loads it
    tts = OfflineSynthesizer(voice=voice, workers=pool, variation=False)  # the same audio every run
    rendered = [await tts.render(p) for p in PHRASES]
    # Only phrases with an early clause boundary are split; the others are timed as before.
    splittable = [p for p in PHRASES if len(split_head(p)) == 2]
    for split in (False, True):
        firsts: list[float] = []
        heads: list[float] = []
        rtfs: list[float] = []
        for _ in range(repeat):
            for text in PHRASES:
                t0 = time.perf_counter()
                first, size = 0.0, 0
                async for chunk in pipelined(one(text), tts.render, split_first=split):
                    first = first or time.perf_counter() - t0
                    size += len(chunk.audio)
                (heads if text in splittable else firsts).append(first)
                rtfs.append((time.perf_counter() - t0) / (size / 8000))
        label = "first phrase split at an early clause" if split else "whole first phrase (legacy)"
        print(
            f"piper time to first audio, {label}: phrases with an early clause ({len(splittable)}) "
            f"p50 {pct(heads, 50):.0f} ms p90 {pct(heads, 90):.0f} ms; others p50 {pct(firsts, 50):.0f} ms"
            f" (real-time factor {statistics.median(rtfs):.3f})"
        )
    return rendered


async def whisper_figures(pool: SpeechWorkers, workers: int, threads: int, rendered: list[bytes], repeat: int) -> None:
    t = time.perf_counter()
    model = await asyncio.to_thread(load_whisper, workers=workers, threads=threads)
    print(f"whisper load (hash check and warm-up included): {time.perf_counter() - t:.2f} s, {threads} thread(s)")
    segments = [silence(200) + a + silence(300) for a in rendered]
    length = statistics.median(len(s) / 8000 for s in segments)
    short = functools.partial(decode_segment, short_window=True)
    for name, fn in (
        ("legacy transcribe", legacy_decode),
        ("direct, 30 s window", decode_segment),
        ("short window", short),
    ):
        fn(model, segments[0])
        times = []
        for _ in range(repeat):
            for s in segments:
                t0 = time.perf_counter()
                fn(model, s)
                times.append(time.perf_counter() - t0)
        print(
            f"whisper decode per segment ({length:.1f} s), {name}: p50 {pct(times, 50):.0f} ms, p90 {pct(times, 90):.0f} ms"
        )
    t0 = time.perf_counter()
    await asyncio.gather(*(pool.run(decode_segment, model, s) for s in segments))
    print(f"whisper {len(segments)} segments through the pool ({workers} workers): {time.perf_counter() - t0:.2f} s")

    def make(**kw: Any) -> WhisperRecognizer:
        return WhisperRecognizer(model, workers=pool, vad_factory=SileroVad, **kw)

    configs: list[tuple[str, WhisperRecognizer]] = [
        ("legacy: transcribe, 600 ms endpoint", LegacyRecognizer(model, workers=pool, vad_factory=SileroVad, endpointing_ms=600, speculate_ms=None)),
        ("500 ms endpoint, no speculation", make(speculate_ms=None)),
        ("500 ms endpoint, speculative decode at 240 ms", make(speculate_ms=240)),
        ("default: 500 ms endpoint, speculative decode at 160 ms", make()),
        ("default + short_window", make(short_window=True)),
    ]  # fmt: skip
    for name, asr in configs:
        lat = [await latency_after_speech(asr, a) for _ in range(repeat) for a in rendered]
        print(f"end of speech -> Final, {name}: p50 {pct(lat, 50):.0f} ms, p90 {pct(lat, 90):.0f} ms")


def silero_figures(rendered: list[bytes]) -> None:
    vad = SileroVad()
    frames = [a[i : i + FRAME_BYTES] for a in rendered for i in range(0, len(a) - FRAME_BYTES + 1, FRAME_BYTES)]
    t0 = time.perf_counter()
    for f in frames:
        vad.speech_probability(f)
    speech_cost = (time.perf_counter() - t0) / len(frames)
    quiet = silence(20)
    t0 = time.perf_counter()
    for _ in range(1000):
        vad.speech_probability(quiet)
    print(
        f"silero per 20 ms frame: {speech_cost * 1e6:.0f} us on speech, "
        f"{(time.perf_counter() - t0) * 1e3:.0f} us on silence (gated)"
    )


async def main(workers: int, threads: int, repeat: int) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    pool = SpeechWorkers(workers)
    try:
        rendered = await piper_figures(pool, repeat)
        await whisper_figures(pool, workers, threads, rendered, repeat)
        silero_figures(rendered)
    finally:
        pool.shutdown()
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="whisper threads per decode (0: cores / workers)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.workers, args.threads or max(1, (os.cpu_count() or 2) // args.workers), args.repeat))
