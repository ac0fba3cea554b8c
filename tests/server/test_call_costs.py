"""Cost per call through the whole stack: a call over the real WebSocket, the real Deepgram and
ElevenLabs SDKs against their local stand-ins and ChatOpenAI against the local OpenAI fake,
on SQLite and PostgreSQL. Its row gets the usage each provider actually saw and a cost
breakdown that matches the price table; the status callback's duration prices the minutes;
``GET /api/calls/{sid}`` and ``GET /api/costs/daily`` show it. A spend cap reached mid-call
turns the next turn into the message/transfer offer, and the model gets no request after it."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from dialgraph.graphs.offline_policy import BUDGET_OFFER
from dialgraph.server.core.call_store import get_call, transcript
from dialgraph.server.core.costs import PriceTable, TokenPrice, compute_cost
from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import LimitsSettings, Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.leg import TwilioLeg
from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake, word_audio
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake
from dialgraph.telephony.simulator.vendors.openai import FakeOpenAIServer, ScriptedReply
from dialgraph.telephony.simulator.webhooks import TwilioWebhookClient, call_params
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
from dialgraph.telephony.speech.elevenlabs import ElevenLabsSynthesizer
from dialgraph.telephony.speech.vad import EnergyVad
from tests.telephony.harness import Served, new_call, new_sids, serve

DG_KEY = "dg-key-0123456789"
EL_KEY = "el-key-0123456789"
ADMIN = "admin-token-for-cost-tests-0123"
VOCAB = ["hello", "opening", "hours", "please", "thanks"]
CALLER = "+14155550100"
OUR_NUMBER = "+15550009999"
# round numbers, so the expected cost is plain arithmetic
PRICES = PriceTable.model_validate(
    {
        "telephony": {"US": {"inbound": 0.01, "outbound": 0.02}},
        "media_streams_per_minute": 0.004,
        "asr": {"deepgram:nova-3": 0.006},
        "llm": {"gpt-4o-mini": {"input": 1.0, "output": 4.0}},
        "tts": {"elevenlabs:eleven_flash_v2_5": 0.05},
    }
)


@dataclass
class Stack:
    served: Served
    settings: Settings
    deepgram: DeepgramFake
    elevenlabs: ElevenLabsFake
    openai: FakeOpenAIServer
    http: httpx.AsyncClient

    @property
    def base(self) -> str:
        return self.served.url.replace("ws://", "http://").removesuffix("/twilio/media")

    def webhooks(self) -> TwilioWebhookClient:
        return TwilioWebhookClient(
            self.http,
            public_url=self.settings.public_url,
            auth_token=self.settings.twilio_auth_token.get_secret_value(),
        )


@asynccontextmanager
async def running(
    tmp_path: Path, database_url: str, replies: list[ScriptedReply], prices: PriceTable = PRICES, **settings: object
) -> AsyncIterator[Stack]:
    async with (
        DeepgramFake(VOCAB, api_key=DG_KEY) as deepgram,
        ElevenLabsFake(api_key=EL_KEY) as elevenlabs,
        FakeOpenAIServer(replies) as openai,
    ):
        config = Settings(  # type: ignore[call-arg]
            data_dir=tmp_path,
            database_url=database_url,
            _env_file=None,
            admin_token=SecretStr(ADMIN),
            deepgram_api_key=SecretStr(DG_KEY),
            deepgram_url=deepgram.url,
            elevenlabs_api_key=SecretStr(EL_KEY),
            elevenlabs_url=elevenlabs.url,
            model=f"openai-compatible:{openai.base_url}/gpt-4o-mini",
            prices=prices,
            **settings,
        )
        overrides = Overrides(
            # the production SDK clients, against the stand-ins (no offline fallback to load)
            recognizer=DeepgramRecognizer(DG_KEY, url=deepgram.url, model="nova-3"),
            synthesizer=ElevenLabsSynthesizer(EL_KEY, url=elevenlabs.url, model="eleven_flash_v2_5"),
            vad_factory=EnergyVad,
            call_control=object(),  # type: ignore[arg-type]
        )
        async with serve(config, overrides) as served:
            base = served.url.replace("ws://", "http://").removesuffix("/twilio/media")
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                yield Stack(served, config, deepgram, elevenlabs, openai, http)


async def open_leg(stack: Stack, call_sid: str) -> TwilioLeg:
    token = await new_call(
        stack.settings, stack.served.app, call_sid=call_sid, from_number=CALLER, to_number=OUR_NUMBER
    )
    return TwilioLeg(
        stack.base,
        public_url=stack.settings.public_url,
        auth_token=stack.settings.twilio_auth_token.get_secret_value(),
        call_sid=call_sid,
        parameters={"token": token},
    )


def words(*spoken: str) -> bytes:
    return word_audio(list(spoken), VOCAB, tail_ms=100)


def tts_chars(fake: ElevenLabsFake) -> int:
    """The characters the ElevenLabs stand-in was asked to speak (what ElevenLabs bills)."""
    return sum(len(text) for s in fake.sockets for _, text in s.flushes) + sum(
        len(r["body"]["text"]) for r in fake.http_requests
    )


async def test_a_call_through_the_fake_providers_has_usage_and_cost(tmp_path: Path, database_url: str) -> None:
    answer = "We are open nine to five, Monday to Friday."
    async with running(tmp_path, database_url, [ScriptedReply(text=answer)]) as stack:
        call_sid, _ = new_sids()
        async with await open_leg(stack, call_sid) as leg:
            await leg.until_audio()
            await leg.until_quiet()  # the greeting (no model call)
            heard = await leg.turn(words("opening", "hours", "please"))
            assert heard
        await stack.served.session_done(call_sid)
        db: Database = stack.served.app.state.services.db
        call = await get_call(db, call_sid)
        assert call is not None and call.usage is not None and call.cost is not None

        usage = call.usage
        assert usage["direction"] == "inbound" and usage["country"] == "US" and usage["streams"] == 1
        # the model: the fake reports 50 prompt tokens and (pieces + 5) completion tokens
        [request] = stack.openai.requests
        llm = usage["llm"]["gpt-4o-mini"]
        assert llm["input"] == 50 and llm["output"] > 5
        # TTS: exactly the characters ElevenLabs was sent (the greeting and the answer)
        assert usage["tts"] == {"elevenlabs:eleven_flash_v2_5": tts_chars(stack.elevenlabs)}
        # ASR: the audio Deepgram received, within the frames in flight when the stream closed
        received_s = sum(len(c.audio) for c in stack.deepgram.connections) / 8000
        asr_s = usage["asr"]["deepgram:nova-3"]
        assert received_s > 1.0 and abs(asr_s - received_s) <= 0.5
        assert usage["stream_s"] >= asr_s - 0.5 and usage["call_s"] is None

        # the breakdown is the price table applied to that usage
        minutes = math.ceil(usage["stream_s"] / 60)
        expected = {
            "telephony": round(minutes * (0.01 + 0.004), 6),
            "asr": round(asr_s / 60 * 0.006, 6),
            "llm": round(llm["input"] / 1e6 * 1.0 + llm["output"] / 1e6 * 4.0, 6),
            "tts": round(usage["tts"]["elevenlabs:eleven_flash_v2_5"] / 1000 * 0.05, 6),
        }
        assert {k: call.cost[k] for k in expected} == pytest.approx(expected, abs=1e-6)
        assert call.cost["total"] == pytest.approx(sum(expected.values()), abs=1e-6)
        assert call.cost_total == call.cost["total"] and call.cost["currency"] == "USD"

        # Twilio's final status: the call lasted 75 s, billed as 2 minutes
        done = await stack.webhooks().post(
            "/twilio/status",
            call_params(call_sid, from_number=CALLER, to_number=OUR_NUMBER, status="completed", CallDuration="75"),
        )
        assert done.status_code == 204
        call = await get_call(db, call_sid)
        assert call is not None and call.usage is not None and call.cost is not None
        assert call.usage["call_s"] == 75.0 and call.usage["llm"]["gpt-4o-mini"] == llm  # nothing counted twice
        assert call.cost["telephony"] == pytest.approx(2 * 0.01 + minutes * 0.004)
        assert call.cost == compute_cost(call.usage, PRICES)

        auth = {"Authorization": f"Bearer {ADMIN}"}
        shown = (await stack.http.get(f"/api/calls/{call_sid}", headers=auth)).json()
        assert shown["cost"] == {k: call.cost[k] for k in ("telephony", "asr", "llm", "tts", "total", "currency")}
        assert shown["usage"]["tts"] == call.usage["tts"]
        day = call.started_at.date().isoformat()
        daily = (await stack.http.get(f"/api/costs/daily?from={day}&to={day}&flow=scheduling", headers=auth)).json()
        [row] = daily["days"]
        assert row["flow"] == "scheduling" and row["calls"] == 1 and row["minutes"] == 2
        assert row["total"] == pytest.approx(call.cost["total"]) and daily["total"] == pytest.approx(row["total"])
        bad = await stack.http.get("/api/costs/daily?from=yesterday", headers=auth)
        assert bad.status_code == 422 and "from" in bad.text
        assert (await stack.http.get(f"/api/costs/daily?from={day}")).status_code == 401


async def test_a_reconnected_call_accumulates_its_streams(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, []) as stack:
        call_sid, _ = new_sids()
        for _ in range(2):  # the greeting, then a new stream of the same call (the first one dropped)
            async with await open_leg(stack, call_sid) as leg:
                await leg.until_audio()
                await leg.until_quiet()
            await stack.served.session_done(call_sid)
            stack.served._events.pop(call_sid)  # wait for the second session next time
        call = await get_call(stack.served.app.state.services.db, call_sid)
        assert call is not None and call.usage is not None
        assert call.usage["streams"] == 2
        assert call.usage["tts"]["elevenlabs:eleven_flash_v2_5"] == tts_chars(stack.elevenlabs)
        assert call.usage["llm"] == {}  # the greetings cost no model call
        assert call.cost == compute_cost(call.usage, PRICES)


async def test_a_spend_cap_mid_call_turns_the_next_turn_into_the_offer(tmp_path: Path, database_url: str) -> None:
    """The caller's daily budget is spent by the first answer: the next turn is the fixed
    offer (the model gets no request), the call goes on and is not cut. A dear model: the
    first answer costs 0.05 (50 input tokens), the greeting and the first minute about 0.02."""
    answer = "We are open nine to five, Monday to Friday."
    dear = PRICES.model_copy(update={"llm": {"gpt-4o-mini": TokenPrice(input=1000.0, output=0.0)}})
    async with running(
        tmp_path,
        database_url,
        [ScriptedReply(text=answer), ScriptedReply(text="never said")],
        prices=dear,
        limits=LimitsSettings(caller_daily_budget=0.04),
    ) as stack:
        call_sid, _ = new_sids()
        async with await open_leg(stack, call_sid) as leg:
            await leg.until_audio()
            await leg.until_quiet()
            await leg.turn(words("opening", "hours"))  # the greeting + this turn spend the budget
            assert len(stack.openai.requests) == 1
            await leg.turn(words("thanks"))
            assert len(stack.openai.requests) == 1  # the offer: no model call
            assert not leg.closed.is_set()  # not hung up
        await stack.served.session_done(call_sid)
        db: Database = stack.served.app.state.services.db
        events = await transcript(db, call_sid)
        agent = [e.text for e in events if e.kind == "turn" and e.role == "agent"]
        assert agent[-1] == BUDGET_OFFER
        [spent] = [e for e in events if e.kind == "budget_spent"]
        assert spent.data == {"rule": "limits.caller_daily_budget"}
        assert len(stack.openai.requests) == 1
        # the next call of this caller today is refused at the door
        refused = await stack.webhooks().post(
            "/twilio/voice", call_params(new_sids()[0], from_number=CALLER, to_number=OUR_NUMBER, status="ringing")
        )
        assert "<Stream" not in refused.text and "<Hangup" in refused.text
