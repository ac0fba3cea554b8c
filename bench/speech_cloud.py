"""Media-path CPU per call with the cloud providers faked on loopback.

The Deepgram and ElevenLabs fakes run in a child process, so the figure is this process's
CPU only: per call, 20 ms mu-law frames pushed in real time into a DeepgramRecognizer
stream (events consumed), plus an ElevenLabs WebSocket reply of two phrases every 4 s
(audio received and decoded).

    .venv/bin/python -m bench.speech_cloud [--calls 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from collections.abc import AsyncIterator
from typing import Any

from dialgraph.telephony.simulator.vendors import DeepgramFake, ElevenLabsFake, word_audio
from dialgraph.telephony.speech.base import FRAME_BYTES, Final
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
from dialgraph.telephony.speech.elevenlabs import ElevenLabsSynthesizer

VOCAB = ["i", "would", "like", "to", "book", "an", "appointment", "for", "tuesday", "please"]


def serve_fakes(conn: Any) -> None:
    async def run() -> None:
        async with DeepgramFake(VOCAB) as dg, ElevenLabsFake() as el:
            conn.send((dg.url, el.url))
            await asyncio.Future()

    asyncio.run(run())


async def phrases() -> AsyncIterator[str]:
    yield "Sure, I can help you with that."
    yield "Which day would suit you best?"


async def call(dg_url: str, el_url: str, seconds: float, stats: dict[str, int]) -> None:
    rec = DeepgramRecognizer("dg-test-key", url=dg_url)
    tts = ElevenLabsSynthesizer("el-test-key", url=el_url)
    stream = rec.stream()
    audio = word_audio(VOCAB[:6], VOCAB, tail_ms=1500)

    async def consume() -> None:
        async for event in stream:
            if isinstance(event, Final):
                stats["finals"] += 1

    async def speak() -> None:
        while True:
            async for chunk in tts.synthesize(phrases()):
                stats["tts_bytes"] += len(chunk.audio)
            await asyncio.sleep(4)

    async with asyncio.TaskGroup() as tg:
        consumer = tg.create_task(consume())
        speaker = tg.create_task(speak())
        start = time.perf_counter()
        n = 0
        while (elapsed := time.perf_counter() - start) < seconds:
            i = (n * FRAME_BYTES) % len(audio)
            stream.push(audio[i : i + FRAME_BYTES])
            n += 1
            await asyncio.sleep(max(0.0, n * 0.02 - elapsed))
        speaker.cancel()
        await stream.end_input()
        await consumer
    await stream.aclose()
    stats["frames"] += n


async def main(calls: int, seconds: float) -> None:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve_fakes, args=(child,), daemon=True)
    proc.start()
    dg_url, el_url = parent.recv()
    stats = {"finals": 0, "tts_bytes": 0, "frames": 0}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(call(dg_url, el_url, seconds, stats) for _ in range(calls)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    proc.terminate()
    per_call = cpu / calls / wall
    print(
        f"{calls} calls x {wall:.1f} s: process CPU {cpu:.2f} s -> {per_call * 100:.2f} % of a core per call "
        f"({per_call * 1000 / 50:.3f} ms CPU per 20 ms frame incl. TTS receive)"
    )
    print(
        f"frames pushed {stats['frames']}, finals {stats['finals']}, TTS audio received {stats['tts_bytes'] / 8000:.0f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.seconds))
