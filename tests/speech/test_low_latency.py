"""While the agent holds the floor, the Deepgram stream sends every Twilio frame at once (a
40 ms batch would hold a word's end, and so an interruption, back by a frame); while the
caller holds it, frames are batched again (fewer messages per call-second)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake
from dialgraph.telephony.speech.base import FRAME_BYTES, prefer_low_latency
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer

DG_KEY = "dg-test-key"
FRAME = b"\xff" * FRAME_BYTES  # mu-law silence


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def test_low_latency_sends_each_frame_and_batching_comes_back() -> None:
    async with DeepgramFake(["wait"], api_key=DG_KEY) as fake:
        stream = DeepgramRecognizer(DG_KEY, url=fake.url).stream(language="en")  # 40 ms batches
        async with asyncio.timeout(10):
            await stream.ready.wait()
        await until(lambda: len(fake.connections) == 1)
        conn = fake.connections[0]
        stream.push(FRAME + FRAME)  # a whole batch: sent
        await until(lambda: len(conn.audio) == 2 * FRAME_BYTES)
        stream.push(FRAME)
        await asyncio.sleep(0.2)
        assert len(conn.audio) == 2 * FRAME_BYTES  # half a batch waits for its second frame
        prefer_low_latency(stream, True)  # the agent starts talking: the held frame goes now
        await until(lambda: len(conn.audio) == 3 * FRAME_BYTES)
        stream.push(FRAME)
        await until(lambda: len(conn.audio) == 4 * FRAME_BYTES)
        prefer_low_latency(stream, False)  # the caller has the floor again
        stream.push(FRAME)
        await asyncio.sleep(0.2)
        assert len(conn.audio) == 4 * FRAME_BYTES
        stream.push(FRAME)
        await until(lambda: len(conn.audio) == 6 * FRAME_BYTES)
        await stream.end_input()
        async with asyncio.timeout(10):
            _ = [e async for e in stream]
        await stream.aclose()


def test_streams_that_do_not_batch_ignore_the_hint() -> None:
    prefer_low_latency(object(), True)  # no attribute: nothing to do, no error
