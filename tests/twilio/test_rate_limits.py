"""Rate limits at /twilio/voice: a refused call gets short TwiML and no stream, its row says
``rate_limited`` and which rule; the limits hold across instances sharing one database."""

from __future__ import annotations

import asyncio
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from dialgraph.graphs.checkpoint import checkpointer
from dialgraph.server.core.call_store import get_call, transcript
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.limits import DEFAULT_REFUSE_MESSAGE, LimitOverrides
from dialgraph.server.core.settings import LimitsSettings
from dialgraph.telephony.simulator.leg import TwilioLeg
from dialgraph.telephony.simulator.process import ServerProcess, server_env
from dialgraph.telephony.simulator.twiml import stream_parameters
from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake
from dialgraph.telephony.simulator.webhooks import TwilioWebhookClient, call_params, new_call_sid
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.twilio.conftest import CALLER, PUBLIC_URL, SALES_NUMBER, SUPPORT_NUMBER, TwilioApp, make_settings, start_app


async def voice(tw: TwilioApp, sid: str, **kw: str) -> ET.Element:
    response = await tw.twilio.post("/twilio/voice", call_params(sid, status="ringing", **kw))
    assert response.status_code == 200, response.text
    return ET.fromstring(response.text)


def tags(root: ET.Element) -> list[str]:
    return [c.tag for c in root]


async def refusal_of(db: Database, sid: str) -> tuple[str | None, list[dict[str, object]]]:
    call = await get_call(db, sid)
    assert call is not None
    return call.outcome, [e.data or {} for e in await transcript(db, sid) if e.kind == "rate_limited"]


@pytest.fixture
async def limited(tmp_path: Path, database_url: str, db: Database, rest: FakeTwilioRest) -> AsyncIterator[TwilioApp]:
    """One call an hour per caller; the sales flow rejects instead, in Hindi."""
    flows = make_settings(tmp_path, database_url, rest.url).flows
    flows["sales"] = flows["sales"].model_copy(
        update={"language": "hi", "limits": LimitOverrides(caller_calls_per_hour=2)}
    )
    settings = make_settings(
        tmp_path,
        database_url,
        rest.url,
        limits=LimitsSettings(caller_calls_per_hour=1, allow=["+14155550111"]),
        flows=flows,
    )
    async for running in start_app(settings, db, rest):
        yield running


async def test_a_caller_over_the_hourly_limit_hears_a_refusal(limited: TwilioApp) -> None:
    first, second = new_call_sid(), new_call_sid()
    assert tags(await voice(limited, first, to_number=SUPPORT_NUMBER)) == ["Connect", "Hangup"]
    answer = await voice(limited, second, to_number=SUPPORT_NUMBER)
    assert tags(answer) == ["Say", "Hangup"]  # no <Connect><Stream>: no model, ASR or TTS
    assert answer[0].text == DEFAULT_REFUSE_MESSAGE and answer[0].attrib == {"language": "en-US"}
    outcome, events = await refusal_of(limited.db, second)
    assert outcome == "rate_limited"
    assert len(events) == 1 and events[0]["rule"] == "limits.caller_calls_per_hour"
    assert 3500 <= int(str(events[0]["retry_after_s"])) <= 3600
    assert (await get_call(limited.db, first)).outcome is None  # type: ignore[union-attr]
    # Twilio retries the refused webhook: the same answer, still one row and one event.
    assert tags(await voice(limited, second, to_number=SUPPORT_NUMBER)) == ["Say", "Hangup"]
    assert len((await refusal_of(limited.db, second))[1]) == 1
    # ... and the admitted call's retry is still admitted.
    assert tags(await voice(limited, first, to_number=SUPPORT_NUMBER)) == ["Connect", "Hangup"]


async def test_allow_listed_and_other_callers_pass(limited: TwilioApp) -> None:
    for _ in range(3):
        assert tags(await voice(limited, new_call_sid(), from_number="+14155550111")) == ["Connect", "Hangup"]
    assert tags(await voice(limited, new_call_sid(), from_number="+14155550122")) == ["Connect", "Hangup"]


async def test_outbound_answers_are_not_limited(limited: TwilioApp) -> None:
    for _ in range(2):
        root = await voice(
            limited, new_call_sid(), from_number=SUPPORT_NUMBER, to_number=CALLER, direction="outbound-api"
        )
        assert tags(root) == ["Connect", "Hangup"]


async def test_flow_override_and_reject_mode(
    tmp_path: Path, database_url: str, db: Database, rest: FakeTwilioRest
) -> None:
    settings = make_settings(tmp_path, database_url, rest.url, limits=LimitsSettings(caller_calls_per_hour=1))
    flows = dict(settings.flows)
    flows["sales"] = FlowSettings(language="hi", limits=LimitOverrides(caller_calls_per_hour=2, refuse_with="reject"))
    flows["support"] = FlowSettings(language="hi")
    settings = settings.model_copy(update={"flows": flows})
    async with asynccontextmanager(start_app)(settings, db, rest) as tw:
        # The sales flow allows two an hour (the first support call counts: the caller's calls).
        assert tags(await voice(tw, new_call_sid(), to_number=SALES_NUMBER)) == ["Connect", "Hangup"]
        assert tags(await voice(tw, new_call_sid(), to_number=SALES_NUMBER)) == ["Connect", "Hangup"]
        sid = new_call_sid()
        rejected = await voice(tw, sid, to_number=SALES_NUMBER)
        assert tags(rejected) == ["Reject"] and rejected[0].attrib == {"reason": "busy"}
        assert (await refusal_of(tw.db, sid))[0] == "rate_limited"
        # The support flow keeps the global rule and speaks the flow's language.
        said = await voice(tw, new_call_sid(), to_number=SUPPORT_NUMBER)
        assert tags(said) == ["Say", "Hangup"] and said[0].attrib == {"language": "hi-IN"}


async def test_two_apps_on_one_postgres_share_the_limits(tmp_path: Path, pg_dsn: str, rest: FakeTwilioRest) -> None:
    """Two instances, each with its own engine, on one PostgreSQL: the count is the table."""
    url = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    settings = make_settings(
        tmp_path, url, rest.url, limits=LimitsSettings(caller_calls_per_hour=1, deployment_concurrent=2)
    )
    db_a, db_b = Database(url), Database(url)
    await db_a.upgrade()
    try:
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(asynccontextmanager(start_app)(settings, db_a, rest))
            b = await stack.enter_async_context(asynccontextmanager(start_app)(settings, db_b, rest))
            assert tags(await voice(a, new_call_sid())) == ["Connect", "Hangup"]
            refused = new_call_sid()
            assert tags(await voice(b, refused)) == ["Say", "Hangup"]
            assert (await refusal_of(db_a, refused))[1][0]["rule"] == "limits.caller_calls_per_hour"
            assert tags(await voice(b, new_call_sid(), from_number="+14155550122")) == ["Connect", "Hangup"]
            full = new_call_sid()  # two live calls now, whoever calls
            assert tags(await voice(a, full, from_number="+14155550133")) == ["Say", "Hangup"]
            assert (await refusal_of(db_b, full))[1][0]["rule"] == "limits.deployment_concurrent"
    finally:
        await db_a.aclose()
        await db_b.aclose()


# --- two real `dialgraph serve` processes -----------------------------------------------------------
AUTH_TOKEN = "twilio-auth-token-for-limit-tests"
OUR_NUMBER = "+15550001001"


@pytest.mark.slow
@pytest.mark.postgres
async def test_concurrent_limit_across_two_servers_touches_no_provider(tmp_path: Path, pg_dsn: str) -> None:
    """caller_concurrent = 1: a call is live on instance A (greeted through the Deepgram and
    ElevenLabs stand-ins); the same caller's second call, on instance B, is refused, and
    neither stand-in nor the model (no checkpoint) saw anything of it."""
    url = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    db = Database(url)
    await db.upgrade()
    async with AsyncExitStack() as stack:
        await checkpointer(url, stack=stack, pool_size=1)  # the checkpoint tables, before the race
    try:
        async with DeepgramFake(["hello"]) as deepgram, ElevenLabsFake() as elevenlabs:
            env = server_env(
                os.environ,
                DATABASE_URL=url,
                DIALGRAPH_PUBLIC_URL=PUBLIC_URL,
                DIALGRAPH_DATA_DIR=str(tmp_path),
                DIALGRAPH_MODEL="offline",
                DIALGRAPH_LIMITS=json.dumps({"caller_concurrent": 1}),
                TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                DIALGRAPH_STREAM_TOKEN_SECRET="stream-secret-shared-by-instances",
                **deepgram.env(),
                **elevenlabs.env(),
            )
            proc_a, proc_b = ServerProcess("a", env, tmp_path), ServerProcess("b", env, tmp_path)
            try:
                await asyncio.gather(proc_a.start(), proc_b.start())
                async with (
                    httpx.AsyncClient(base_url=proc_a.url, timeout=30) as http_a,
                    httpx.AsyncClient(base_url=proc_b.url, timeout=30) as http_b,
                ):
                    a = TwilioWebhookClient(http_a, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN)
                    b = TwilioWebhookClient(http_b, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN)
                    await _live_then_refused(a, b, proc_a.url, db, deepgram, elevenlabs)
            finally:
                await proc_a.aclose()
                await proc_b.aclose()
    finally:
        await db.aclose()


async def _live_then_refused(
    a: TwilioWebhookClient,
    b: TwilioWebhookClient,
    a_url: str,
    db: Database,
    deepgram: DeepgramFake,
    elevenlabs: ElevenLabsFake,
) -> None:
    def params(sid: str, **kw: str) -> dict[str, str]:
        return call_params(sid, from_number=CALLER, to_number=OUR_NUMBER, status="ringing", **kw)

    live = new_call_sid()
    answer = await a.post("/twilio/voice", params(live))
    assert answer.status_code == 200 and "<Stream" in answer.text
    leg = TwilioLeg(
        a_url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, call_sid=live, parameters=stream_parameters(answer.text)
    )
    async with leg:
        await leg.until_audio()  # the agent greets: ASR and TTS stand-ins are in use
        await leg.until_quiet()
        seen = (len(deepgram.connections), len(elevenlabs.sockets), len(elevenlabs.http_requests))
        assert seen[0] == 1 and seen[1] + seen[2] >= 1

        refused = new_call_sid()
        answer = await b.post("/twilio/voice", params(refused))
        assert answer.status_code == 200
        root = ET.fromstring(answer.text)
        assert tags(root) == ["Say", "Hangup"], answer.text
        outcome, events = await refusal_of(db, refused)
        assert outcome == "rate_limited" and events == [{"rule": "limits.caller_concurrent"}]
        assert (len(deepgram.connections), len(elevenlabs.sockets), len(elevenlabs.http_requests)) == seen
        async with db.engine.connect() as conn:
            threads = await conn.scalar(text("SELECT count(*) FROM checkpoints WHERE thread_id = :t"), {"t": refused})
        assert threads == 0  # the model never ran for it
    # The live call ends (Twilio's status callback, to either instance): the caller may call again.
    done = await b.post(
        "/twilio/status", call_params(live, from_number=CALLER, to_number=OUR_NUMBER, status="completed")
    )
    assert done.status_code == 204
    again = await b.post("/twilio/voice", params(new_call_sid()))
    assert "<Stream" in again.text
