"""``GET /metrics``: the bearer token, the SQL gauges on SQLite and PostgreSQL, the hub-fed
counters, and the counters after two whole simulated calls, parsed with prometheus_client's
own text parser and checked against what the calls stored."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import select

from dialgraph.server.app import create_app
from dialgraph.server.core import call_store
from dialgraph.server.core.db import Database
from dialgraph.server.core.limits import LimitDecision, record_refusal
from dialgraph.server.core.live import Recorded, SessionEnded, SessionStarted, hub
from dialgraph.server.core.models import Call, CallEvent
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides, Services
from dialgraph.telephony.speech.vad import EnergyVad
from tests.fakes.speech import NullRecognizer, NullSynthesizer

ADMIN = {"Authorization": "Bearer dev-admin-token"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels (the official parser: it refuses bad text)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and want <= have)


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    overrides = Overrides(recognizer=NullRecognizer(), synthesizer=NullSynthesizer(), vad_factory=EnergyVad, runners={})
    app = create_app(settings, overrides=overrides)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield client, app.state.services


async def scrape(client: httpx.AsyncClient, headers: dict[str, str] = ADMIN) -> Samples:
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


async def test_metrics_token_and_sql_gauges(settings: Settings) -> None:
    async with api(settings) as (client, services):
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        samples = await scrape(client)
        assert value(samples, "dialgraph_calls_live") == 0

        now = dt.datetime.now(dt.UTC)
        db = services.db
        for sid, status in (("CA1", "in-progress"), ("CA2", "ringing"), ("CA3", "completed")):
            await call_store.record_call(
                db,
                sid=sid,
                direction="inbound",
                from_number="+15550001111",
                to_number="+15550002222",
                flow="support",
                thread_id=sid,
            )
            await call_store.update_call(db, sid, status=status, cost_total=0.25)
        refusal = LimitDecision(False, "limits.caller_calls_per_hour", 60)
        await record_refusal(
            db,
            refusal,
            sid="CA4",
            from_number="+15550001111",
            to_number="+15550002222",
            flow="support",
            status="ringing",
        )
        await record_refusal(
            db,
            refusal,
            sid="CA5",
            from_number="+15550001111",
            to_number="+15550002222",
            flow="support",
            status="ringing",
        )
        await call_store.update_call(db, "CA5", started_at=now - dt.timedelta(hours=2))  # out of the hour
        samples = await scrape(client)
        assert value(samples, "dialgraph_calls_live") == 2  # not the ended one, not the refused ones
        assert value(samples, "dialgraph_calls_rate_limited_last_hour") == 1
        assert value(samples, "dialgraph_calls_cost_last_day") == 0.75


async def test_metrics_token_of_its_own_and_loopback(tmp_path: Path, settings: Settings) -> None:
    own = settings.model_copy(update={"metrics_token": SecretStr("scrape-me-please-0123")})
    async with api(own) as (client, _):
        await scrape(client, {"Authorization": "Bearer scrape-me-please-0123"})
        await scrape(client)  # the admin token still works
        assert (await client.get("/metrics")).status_code == 401
    open_dev = settings.model_copy(update={"metrics_open_on_loopback": True})
    async with api(open_dev) as (client, _):
        await scrape(client, {})  # ASGITransport's client is 127.0.0.1


async def test_hub_events_move_the_counters(settings: Settings) -> None:
    listeners = hub.listeners
    async with api(settings) as (client, _):
        assert hub.listeners == listeners + 1
        before = await scrape(client)
        hub.publish(SessionStarted("CAh", "support", "inbound", resumed=False))
        hub.publish(Recorded("CAh", CallEvent(call_sid="CAh", kind="turn", role="caller", text="hi")))
        timings = {"asr_final_ms": 150.0, "first_token_ms": 380.0, "first_audio_ms": 610.0}
        agent = CallEvent(
            call_sid="CAh",
            kind="turn",
            role="agent",
            text="hello",
            latency_ms=610.0,
            data={"trigger": "caller", "timings": timings},
        )
        hub.publish(Recorded("CAh", agent))
        hub.publish(Recorded("CAh", CallEvent(call_sid="CAh", kind="error", role="system", data={"stage": "tts"})))
        hub.publish(
            Recorded("CAh", CallEvent(call_sid="CAh", kind="end_call", role="system", data={"reason": "opted_out"}))
        )
        hub.publish(
            SessionEnded("CAh", "support", "inbound", "ended by agent", barge_ins=2, preempted=3, preempts_discarded=1)
        )
        hub.publish(SessionStarted("CAh", "support", "inbound", resumed=True))
        hub.publish(SessionEnded("CAh", "support", "inbound", "socket closed", barge_ins=0))
        after = await scrape(client)
    assert hub.listeners == listeners  # the app's metrics stopped listening with it

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    flow = {"flow": "support"}
    assert moved("dialgraph_calls_started_total", direction="inbound", **flow) == 1
    assert moved("dialgraph_sessions_resumed_total", direction="inbound", **flow) == 1
    assert moved("dialgraph_calls_ended_total", direction="inbound", outcome="opted_out", **flow) == 1
    assert moved("dialgraph_calls_ended_total", direction="inbound", outcome="dropped", **flow) == 1
    assert moved("dialgraph_turns_total", role="caller", **flow) == 1
    assert moved("dialgraph_turns_total", role="agent", **flow) == 1
    assert moved("dialgraph_turn_latency_seconds_count", trigger="caller", **flow) == 1
    assert moved("dialgraph_turn_latency_seconds_sum", trigger="caller", **flow) == 0.61
    assert moved("dialgraph_turn_latency_seconds_bucket", trigger="caller", le="0.6", **flow) == 0
    assert moved("dialgraph_turn_latency_seconds_bucket", trigger="caller", le="0.8", **flow) == 1
    for stage, seconds in (("asr_final_ms", 0.15), ("first_token_ms", 0.38), ("first_audio_ms", 0.61)):
        assert moved("dialgraph_turn_stage_seconds_sum", stage=stage, **flow) == seconds
    assert moved("dialgraph_reply_errors_total", stage="tts", **flow) == 1
    assert moved("dialgraph_barge_ins_total", **flow) == 2
    assert moved("dialgraph_preemptive_replies_total", outcome="confirmed", **flow) == 3
    assert moved("dialgraph_preemptive_replies_total", outcome="discarded", **flow) == 1


async def test_counters_after_two_whole_calls(tmp_path: Path) -> None:
    from dialgraph.telephony.simulator.cli import simulate
    from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer
    from tests.fakes.sim_server import live_server

    async with live_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as client:
        before = await scrape(client)

        async def call(name: str) -> str:
            result = await simulate(
                name,
                url=server.url,
                admin_token="dev-admin-token",
                synthesizer=TextSynthesizer(),
                recognizer=TextRecognizer(),
                database_url=server.database_url,
                record=False,
            )
            assert result.ok, (result.checks, result.failures)
            return result.call_sid

        support_sid, sales_sid = await asyncio.gather(call("support_basic"), call("sales_basic"))
        after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    db = Database(server.database_url)
    try:
        async with db.sessionmaker() as s:
            calls = {c.sid: c for c in await s.scalars(select(Call).where(Call.sid.in_([support_sid, sales_sid])))}
            events = list(await s.scalars(select(CallEvent).where(CallEvent.call_sid.in_([support_sid, sales_sid]))))
    finally:
        await db.aclose()
    assert calls[support_sid].outcome == "transferred" and calls[sales_sid].outcome == "ended_by_agent"

    inbound = {"direction": "inbound"}
    for flow in ("support", "sales"):
        assert moved("dialgraph_calls_started_total", flow=flow, **inbound) == 1
        assert moved("dialgraph_sessions_resumed_total", flow=flow, **inbound) == 0
    assert moved("dialgraph_calls_ended_total", flow="support", outcome="transfer_requested", **inbound) == 1
    assert moved("dialgraph_calls_ended_total", flow="sales", outcome="ended_by_agent", **inbound) == 1
    assert moved("dialgraph_barge_ins_total", flow="support") == 1
    assert moved("dialgraph_barge_ins_total", flow="sales") == 0
    for sid, flow in ((support_sid, "support"), (sales_sid, "sales")):
        mine = [e for e in events if e.call_sid == sid and e.kind == "turn"]
        for role in ("caller", "agent"):
            assert moved("dialgraph_turns_total", flow=flow, role=role) == len([e for e in mine if e.role == role])
        timed = [e for e in mine if e.role == "agent" and e.latency_ms is not None and not e.interrupted]
        assert timed
        count = total(after, "dialgraph_turn_latency_seconds_count", flow=flow)
        assert count - total(before, "dialgraph_turn_latency_seconds_count", flow=flow) == len(timed)
        seconds = total(after, "dialgraph_turn_latency_seconds_sum", flow=flow)
        seconds -= total(before, "dialgraph_turn_latency_seconds_sum", flow=flow)
        assert abs(seconds - sum(e.latency_ms or 0 for e in timed) / 1000) < 1e-6
    assert value(after, "dialgraph_calls_live") == 0
    assert moved("dialgraph_event_loop_lag_seconds_count") >= 10  # the calls took well over 5 s
    assert moved("dialgraph_transfers_requested_total", flow="support") == 1
    for op in ("put", "put_writes"):  # the graph's checkpoints, timed by the savers
        assert moved("dialgraph_checkpoint_write_seconds_count", op=op) >= 2
    for sid, flow in ((support_sid, "support"), (sales_sid, "sales")):  # the session's usage, priced
        cost = calls[sid].cost or {}
        assert 0 < moved("dialgraph_cost_usd_total", component="telephony", flow=flow) <= cost["telephony"] + 1e-9
