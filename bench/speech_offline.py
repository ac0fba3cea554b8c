"""Offline speech figures: whisper latency after end of speech, piper time to first audio
and real-time factor, silero cost per frame.

    .venv/bin/python bench/speech_offline.py [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator

from telephony.audio import silence
from telephony.offline_asr import WhisperRecognizer, decode_segment, load_whisper
from telephony.offline_tts import OfflineSynthesizer, load_piper, render_piper
from telephony.speech import FRAME_BYTES, Final
from telephony.speech_workers import SpeechWorkers
from telephony.vad import SileroVad

PHRASES = [
    "Hello, thanks for calling Acme Dental.",
    "I would like to book an appointment for next Tuesday.",
    "Can you tell me your opening hours on Saturday?",
    "Sure, I have booked you in for ten thirty on Tuesday morning.",
    "Please transfer me to the billing team.",
]


async def one(text: str) -> AsyncIterator[str]:
    yield text


async def main(workers: int) -> None:
    pool = SpeechWorkers(workers)
    t = time.perf_counter()
    voice = await asyncio.to_thread(load_piper)
    print(f"piper load (hash check included): {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    model = await asyncio.to_thread(load_whisper, workers=workers)
    print(f"whisper load (hash check included): {time.perf_counter() - t:.2f} s")

    tts = OfflineSynthesizer(voice=voice, workers=pool)
    await tts.render("Warm up.")
    firsts, rtfs, rendered = [], [], []
    for text in PHRASES:
        t0 = time.perf_counter()
        first = None
        audio = b""
        async for chunk in tts.synthesize(one(text)):
            first = first or time.perf_counter() - t0
            audio += chunk.audio
        total = time.perf_counter() - t0
        firsts.append(first or 0.0)
        rtfs.append(total / (len(audio) / 8000))
        rendered.append(audio)
    print(
        f"piper time to first audio: median {statistics.median(firsts) * 1000:.0f} ms, max {max(firsts) * 1000:.0f} ms"
    )
    print(f"piper real-time factor: median {statistics.median(rtfs):.3f}")

    for text in ["Hi.", "Hello there."]:
        t0 = time.perf_counter()
        await asyncio.to_thread(render_piper, voice, text)
        print(f"piper short phrase {text!r}: {(time.perf_counter() - t0) * 1000:.0f} ms")

    # Whisper decode per segment, sequential and with `workers` segments at once.
    seg = [silence(200) + a + silence(300) for a in rendered]
    decode_segment(model, seg[0], "en")
    times = []
    for s in seg:
        t0 = time.perf_counter()
        decode_segment(model, s, "en")
        times.append(time.perf_counter() - t0)
    print(
        f"whisper decode per segment (one at a time): median {statistics.median(times):.2f} s, "
        f"segments {statistics.median(len(s) / 8000 for s in seg):.1f} s long"
    )
    t0 = time.perf_counter()
    await asyncio.gather(*(pool.run(decode_segment, model, s, "en") for s in seg))
    print(f"whisper {len(seg)} segments through the pool ({workers} workers): {time.perf_counter() - t0:.2f} s")

    # Latency after end of speech: audio pushed up to the endpoint, then time to the Final.
    asr = WhisperRecognizer(model, workers=pool, vad_factory=SileroVad, endpointing_ms=600)
    lat = []
    for a in rendered:
        stream = asr.stream()
        audio = silence(300) + a + silence(600)
        t_end = 0.0
        for i in range(0, len(audio), FRAME_BYTES):
            stream.push(audio[i : i + FRAME_BYTES])
        t_end = time.perf_counter()
        async for event in stream:
            if isinstance(event, Final):
                lat.append(time.perf_counter() - t_end)
                break
        await stream.aclose()
    print(
        f"whisper latency after the endpoint: median {statistics.median(lat) * 1000:.0f} ms "
        f"(+600 ms endpointing silence = {statistics.median(lat) * 1000 + 600:.0f} ms after end of speech)"
    )

    vad = SileroVad()
    frames = [a[i : i + FRAME_BYTES] for a in rendered for i in range(0, len(a) - FRAME_BYTES + 1, FRAME_BYTES)]
    t0 = time.perf_counter()
    for f in frames:
        vad.speech_probability(f)
    speech_cost = (time.perf_counter() - t0) / len(frames)
    quiet = silence(20) * 1000
    t0 = time.perf_counter()
    for _ in range(1000):
        vad.speech_probability(quiet[:FRAME_BYTES])
    print(
        f"silero per 20 ms frame: {speech_cost * 1e6:.0f} us on speech, {(time.perf_counter() - t0) * 1e3:.0f} us on silence (gated)"
    )
    pool.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    asyncio.run(main(parser.parse_args().workers))
