"""``/metrics`` from process signals (``hub.notify``): provider failures and fallback
activations of the real vendor clients against their refusing loopback fakes, a call
refused by a limit at ``/twilio/voice``, checkpoint writes of the real savers and the cost
of a call's recorded usage by component, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack

from langgraph.checkpoint.base import empty_checkpoint

from dialgraph.graphs.checkpoint import checkpointer
from dialgraph.server.core import call_store, costs
from dialgraph.server.core.settings import LimitsSettings, Settings
from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake
from dialgraph.telephony.simulator.webhooks import TwilioWebhookClient, call_params
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
from dialgraph.telephony.speech.elevenlabs import ElevenLabsSynthesizer
from dialgraph.telephony.speech.fallback import FallbackRecognizer, FallbackSynthesizer
from tests.fakes.speech import ToneSynthesizer, tone_audio
from tests.server.test_metrics import api, scrape, total, value
from tests.speech.conftest import VOCAB, phrase_source
from tests.speech.test_fallback import FlakyRecognizer, run_to_end


async def test_provider_errors_and_fallbacks(settings: Settings) -> None:
    async with api(settings) as (client, _), DeepgramFake(VOCAB) as dg, ElevenLabsFake() as el:
        before = await scrape(client)
        dg.refuse = el.refuse = True
        asr = FallbackRecognizer(
            [DeepgramRecognizer("dg-test-key", url=dg.url, max_reconnects=0), FlakyRecognizer("up")],
            connect_timeout_s=5,
            probe_interval_s=3600,
        )
        tts = FallbackSynthesizer(
            [ElevenLabsSynthesizer("el-test-key", url=el.url), ToneSynthesizer()], probe_interval_s=3600
        )
        async with contextlib.aclosing(asr), contextlib.aclosing(tts), asyncio.timeout(20):
            stream = asr.stream()
            await run_to_end(stream)
            assert stream.switched
            audio = b"".join([c.audio async for c in tts.synthesize(phrase_source(["Hello there."]))])
            assert audio == tone_audio("Hello there.")
        after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    asr_labels = {"kind": "asr", "provider": "DeepgramRecognizer"}
    tts_labels = {"kind": "tts", "provider": "ElevenLabsSynthesizer"}
    for labels in (asr_labels, tts_labels):
        assert moved("dialgraph_provider_errors_total", **labels) == 1
        assert moved("dialgraph_provider_fallbacks_total", **labels) == 1
    assert total(after, "dialgraph_provider_errors_total", provider="FlakyRecognizer") == 0


async def test_rate_limited_checkpoint_writes_and_cost(settings: Settings) -> None:
    limited = settings.model_copy(update={"limits": LimitsSettings(caller_calls_per_hour=1)})
    async with api(limited) as (client, services):
        before = await scrape(client)
        twilio = TwilioWebhookClient(client, public_url=settings.public_url, auth_token="dev-auth-token")
        for n in range(3):
            params = call_params(f"CA{n:032d}", from_number="+14155550123", status="ringing")
            assert (await twilio.post("/twilio/voice", params)).status_code == 200

        # a real saver for the app's database: one put, one put_writes
        async with AsyncExitStack() as stack:
            saver = await checkpointer(settings.effective_database_url, stack=stack)
            config = {"configurable": {"thread_id": "CAsaver", "checkpoint_ns": ""}}
            stored = await saver.aput(config, empty_checkpoint(), {"source": "input", "step": 0}, {})  # type: ignore[arg-type]
            await saver.aput_writes(stored, [("messages", "hi")], "task-1")

        # a call's usage, recorded twice (a reconnected stream adds to the first)
        await call_store.record_call(
            services.db,
            sid="CAcost",
            direction="inbound",
            from_number="+14155550124",
            to_number="+15550002222",
            flow="support",
            thread_id="CAcost",
        )
        usage = {"stream_s": 61.0, "asr": {"deepgram": 61.0}, "tts": {"elevenlabs": 400}}
        usage["llm"] = {"openai:gpt-4o-mini": {"input": 2000, "output": 300}}
        first = await costs.record_usage(services.db, "CAcost", settings.prices, add=usage)
        second = await costs.record_usage(services.db, "CAcost", settings.prices, add=usage)
        after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    rule = {"flow": settings.default_flow, "rule": "limits.caller_calls_per_hour"}
    assert moved("dialgraph_calls_rate_limited_total", **rule) == 2  # the first call was admitted
    for op in ("put", "put_writes"):
        assert moved("dialgraph_checkpoint_write_seconds_count", op=op) == 1
        assert moved("dialgraph_checkpoint_write_seconds_sum", op=op) > 0
    assert first is not None and second is not None and second["currency"] == "USD"
    for component in costs.COMPONENTS:
        assert second[component] > 0
        got = moved("dialgraph_cost_usd_total", component=component, flow="support")
        assert abs(got - second[component]) < 1e-9, component  # the call's whole cost, counted once
