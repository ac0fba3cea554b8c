"""Fallback chains over in-process providers, with an injected clock: failover, a failed
provider remembered for its cool-down, its return after a probe, and the probe's end."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable

import pytest

from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake
from dialgraph.telephony.speech.base import AudioChunk, ProviderError, RecognitionStream, RecognizerCapabilities
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
from dialgraph.telephony.speech.elevenlabs import ElevenLabsSynthesizer
from dialgraph.telephony.speech.fallback import (
    FallbackRecognizer,
    FallbackSynthesizer,
    probe_recognizer,
    probe_synthesizer,
)
from dialgraph.telephony.speech.stream import QueuedRecognitionStream
from tests.fakes.speech import ToneSynthesizer, tone_audio
from tests.speech.conftest import VOCAB, phrase_source


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


class _RefusedStream(QueuedRecognitionStream):
    def __init__(self) -> None:
        super().__init__()
        self._fail(ProviderError("refused", provider="flaky"))


class _HangingStream(QueuedRecognitionStream):
    """Never connects and never ends, until closed."""

    def __init__(self) -> None:
        super().__init__(ready=False)

    def _flush(self) -> None:
        pass


class FlakyRecognizer:
    """Its streams work (hear nothing, end at ``end_input``), hang, or are refused, as
    ``mode`` says when they open. ``opened`` holds every stream, probes' too."""

    capabilities = RecognizerCapabilities(interim_results=False)

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.opened: list[QueuedRecognitionStream] = []

    def stream(self, *, language: str | None = None) -> QueuedRecognitionStream:
        kinds = {"up": QueuedRecognitionStream, "hanging": _HangingStream, "refused": _RefusedStream}
        stream = kinds[self.mode]()
        self.opened.append(stream)
        return stream

    async def aclose(self) -> None:
        pass


async def run_to_end(stream: RecognitionStream) -> None:
    try:
        await stream.end_input()
        async with asyncio.timeout(5):
            async for _ in stream:
                pass
    finally:
        await stream.aclose()


# --- recognition -----------------------------------------------------------------------------
async def test_a_hanging_recognizer_is_remembered_for_its_cooldown() -> None:
    clock = ManualClock()
    primary, backup = FlakyRecognizer("hanging"), FlakyRecognizer("up")
    chain = FallbackRecognizer(
        [primary, backup], connect_timeout_s=0.2, cooldown_s=60, probe_interval_s=3600, clock=clock
    )
    async with contextlib.aclosing(chain):
        first = chain.stream()
        started = time.monotonic()
        await run_to_end(first)
        assert time.monotonic() - started >= 0.2  # waited out the primary's connect timeout once
        assert first.switched and first.active is backup.opened[0]

        clock.now += 59
        second = chain.stream()  # straight to the backup: no second wait
        assert second.active is backup.opened[1] and len(primary.opened) == 1
        async with asyncio.timeout(0.15):
            await run_to_end(second)
        assert not second.switched

        clock.now += 2  # the cool-down is over: the primary is tried first again
        third = chain.stream()
        assert third.active is primary.opened[1]
        await third.aclose()


async def test_a_recovered_recognizer_returns_after_a_probe() -> None:
    clock = ManualClock()
    primary, backup = FlakyRecognizer("refused"), FlakyRecognizer("up")
    chain = FallbackRecognizer([primary, backup], cooldown_s=60, probe_interval_s=0.01, clock=clock)
    async with contextlib.aclosing(chain):
        await run_to_end(chain.stream())
        await until(lambda: len(primary.opened) >= 3)  # the stream's, then probes that failed
        assert chain.health.order() == [backup, primary]
        primary.mode = "up"
        await until(lambda: chain.health.order()[0] is primary)
        stream = chain.stream()
        assert stream.active is primary.opened[-1]
        await run_to_end(stream)
        assert not stream.switched


async def test_a_failed_probe_renews_the_cooldown() -> None:
    clock = ManualClock()
    primary, backup = FlakyRecognizer("refused"), FlakyRecognizer("up")
    chain = FallbackRecognizer([primary, backup], cooldown_s=60, probe_interval_s=0.01, clock=clock)
    async with contextlib.aclosing(chain):
        await run_to_end(chain.stream())
        clock.now += 30
        probed = len(primary.opened)
        await until(lambda: len(primary.opened) > probed)  # a probe at +30 s failed
        await asyncio.sleep(0.02)
        clock.now += 40  # 70 s after the first failure, 40 after the probe's
        assert chain.health.order() == [backup, primary]


async def test_every_recognizer_down_the_last_error_comes_out() -> None:
    first, second = FlakyRecognizer("refused"), FlakyRecognizer("refused")
    chain = FallbackRecognizer([first, second], probe_interval_s=3600)
    async with contextlib.aclosing(chain):
        stream = chain.stream()
        with pytest.raises(ProviderError, match="refused"):
            await run_to_end(stream)
        assert stream.switched and stream.ready.is_set()
        # Both remembered: both still tried, in chain order (a late ear beats none).
        assert chain.health.order() == [first, second]


async def test_aclose_cancels_a_probe_in_flight() -> None:
    primary, backup = FlakyRecognizer("hanging"), FlakyRecognizer("up")
    chain = FallbackRecognizer([primary, backup], connect_timeout_s=0.05, probe_interval_s=0, probe_timeout_s=3600)
    await run_to_end(chain.stream())
    await until(lambda: len(primary.opened) == 2)  # the probe's stream, which never ends
    async with asyncio.timeout(1):
        await chain.aclose()
    assert primary.opened[1].closed  # the probe was cancelled and closed its stream
    await chain.aclose()  # idempotent


# --- synthesis -------------------------------------------------------------------------------
class FlakySynthesizer:
    """Speaks ``tone_audio`` reversed when ``up``; else never answers (``silent``) or
    fails at once (``refused``). ``replies`` counts calls, probes' too."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.replies = 0

    async def synthesize(
        self,
        phrases: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> AsyncIterator[AudioChunk]:
        self.replies += 1
        index = 0
        async for phrase in phrases:
            if self.mode == "refused":
                raise ProviderError("refused", provider="flaky")
            if self.mode == "silent":
                await asyncio.Event().wait()
            yield AudioChunk(tone_audio(phrase)[::-1], index, last=True)
            index += 1

    async def aclose(self) -> None:
        pass


async def speak(synth: FallbackSynthesizer, phrases: list[str]) -> bytes:
    async with asyncio.timeout(5):
        return b"".join([c.audio async for c in synth.synthesize(phrase_source(phrases))])


async def test_a_silent_synthesizer_is_remembered_for_the_next_reply() -> None:
    clock = ManualClock()
    primary, backup = FlakySynthesizer("silent"), ToneSynthesizer()
    chain = FallbackSynthesizer(
        [primary, backup], first_audio_timeout_s=0.2, cooldown_s=60, probe_interval_s=3600, clock=clock
    )
    async with contextlib.aclosing(chain):
        started = time.monotonic()
        assert await speak(chain, ["Hello there."]) == tone_audio("Hello there.")
        assert time.monotonic() - started >= 0.2
        clock.now += 59
        async with asyncio.timeout(0.15):  # no second wait for the silent primary
            assert await speak(chain, ["How can I help?"]) == tone_audio("How can I help?")
        assert primary.replies == 1 and backup.spoken == ["Hello there.", "How can I help?"]


async def test_a_recovered_synthesizer_speaks_again_after_a_probe() -> None:
    clock = ManualClock()
    primary, backup = FlakySynthesizer("refused"), ToneSynthesizer()
    chain = FallbackSynthesizer([primary, backup], cooldown_s=60, probe_interval_s=0.01, clock=clock)
    async with contextlib.aclosing(chain):
        assert await speak(chain, ["Hello there."]) == tone_audio("Hello there.")
        primary.mode = "up"
        await until(lambda: chain.health.order()[0] is primary)
        assert await speak(chain, ["Goodbye."]) == tone_audio("Goodbye.")[::-1]
        assert backup.spoken == ["Hello there."]


async def test_synthesizer_aclose_cancels_a_probe_in_flight() -> None:
    primary = FlakySynthesizer("silent")
    chain = FallbackSynthesizer(
        [primary, ToneSynthesizer()], first_audio_timeout_s=0.05, probe_interval_s=0, probe_timeout_s=3600
    )
    await speak(chain, ["Hello there."])
    await until(lambda: primary.replies == 2)  # the probe, waiting for audio that never comes
    async with asyncio.timeout(1):
        await chain.aclose()


# --- the default probes, against the vendor stand-ins ------------------------------------------
async def test_the_probes_tell_a_working_vendor_from_a_refusing_one() -> None:
    async with DeepgramFake(VOCAB) as dg, ElevenLabsFake() as el:
        recognizer = DeepgramRecognizer("dg-test-key", url=dg.url, max_reconnects=0)
        synthesizer = ElevenLabsSynthesizer("el-test-key", url=el.url)
        async with asyncio.timeout(10):
            await probe_recognizer(recognizer)
            await probe_synthesizer(synthesizer)
            dg.refuse = el.refuse = True
            with pytest.raises(ProviderError):
                await probe_recognizer(recognizer)
            with pytest.raises(ProviderError):
                await probe_synthesizer(synthesizer)
    assert [c.controls for c in dg.connections] == [[{"type": "Finalize"}, {"type": "CloseStream"}]]
    assert [s.flushes for s in el.sockets] == [[("p0", "Hello.")]]
