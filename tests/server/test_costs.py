"""Cost per call (server/core/costs.py) and spend caps at admission (server/core/limits.py), on
real SQLite and PostgreSQL: the price table and its overrides, the breakdown, usage that
accumulates over a call's streams, spend today, the budgets at the door (one statement),
daily totals and the CLI verb."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import event, insert

from dialgraph.server.cli import main as cli_main
from dialgraph.server.core import costs
from dialgraph.server.core.costs import (
    CallMeter,
    PriceTable,
    SpendCap,
    billed_minutes,
    compute_cost,
    country_of,
    daily_totals,
    merge_usage,
    record_usage,
    spent_today,
)
from dialgraph.server.core.db import Database
from dialgraph.server.core.limits import LimitDecision, LimitOverrides, Limits, admit
from dialgraph.server.core.models import Call
from dialgraph.server.core.settings import Settings

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
ME = "+14155550100"
OTHER = "+14155550177"
_n = 0


async def add_call(
    db: Database,
    from_number: str = ME,
    *,
    ago: dt.timedelta = dt.timedelta(minutes=5),
    cost: float | None = None,
    flow: str = "support",
    to_number: str = "+15550009999",
    direction: str = "inbound",
) -> str:
    global _n
    _n += 1
    sid = f"CA{_n:032d}"
    values = {
        "sid": sid,
        "direction": direction,
        "from_number": from_number,
        "to_number": to_number,
        "flow": flow,
        "thread_id": sid,
        "status": "completed",
        "started_at": NOW - ago,
        "cost_total": cost,
    }
    async with db.engine.begin() as conn:
        await conn.execute(insert(Call).values(**values))
    return sid


# --- the price table --------------------------------------------------------------------------------
def test_defaults_are_list_prices_and_offline_is_free() -> None:
    p = PriceTable()
    assert p.currency == "USD"
    assert p.telephony_per_minute("inbound", "US") == 0.0085 and p.telephony_per_minute("outbound", "US") == 0.013
    assert p.telephony_per_minute("outbound", "IN") > 0 and p.telephony_per_minute("inbound", "ZZ") == 0.0085
    assert p.asr_per_minute("deepgram:nova-3") == 0.0077 and p.asr_per_minute("offline") == 0.0
    assert p.asr_per_minute("deepgram:nova-9") == 0.0077  # the provider's entry
    assert (p.llm_per_1m("gpt-4o-mini").input, p.llm_per_1m("gpt-4o-mini").output) == (0.15, 0.60)
    assert p.llm_per_1m("gpt-4o-mini-2024-07-18") == p.llm_per_1m("gpt-4o-mini")  # dated snapshot
    assert p.llm_per_1m("gpt-4o").input == 2.50 and p.llm_per_1m("gpt-4.1-mini").input == 0.40
    assert p.llm_per_1m("offline").input == 0.0 and p.llm_per_1m("llama3").input == p.llm["default"].input
    assert p.tts_per_1k_chars("elevenlabs:eleven_flash_v2_5") == 0.05
    assert p.tts_per_1k_chars("elevenlabs:eleven_multilingual_v2") == 0.10
    assert p.tts_per_1k_chars("offline") == 0.0


def test_config_overrides_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "dialgraph.toml"
    config.write_text(
        "[prices]\nmedia_streams_per_minute = 0.004\n"
        "[prices.llm.gpt-4o-mini]\ninput = 0.1\noutput = 0.5\n"
        "[prices.telephony.IN]\ninbound = 0.02\noutbound = 0.03\n"
    )
    settings = Settings(config_file=config, _env_file=None)  # type: ignore[call-arg]
    p = settings.prices
    assert p.llm_per_1m("gpt-4o-mini").input == 0.1 and p.llm_per_1m("gpt-4o").input == 2.50  # others kept
    assert p.telephony_per_minute("inbound", "IN") == 0.02 and p.telephony_per_minute("inbound", "US") == 0.0085
    assert p.media_streams_per_minute == 0.004
    monkeypatch.setenv("DIALGRAPH_PRICES", json.dumps({"tts": {"elevenlabs:eleven_flash_v2_5": 0.03}}))
    from_env = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_env.prices.tts_per_1k_chars("elevenlabs:eleven_flash_v2_5") == 0.03
    assert from_env.prices.tts_per_1k_chars("elevenlabs:eleven_multilingual_v2") == 0.10
    with pytest.raises(ValidationError):
        Settings(prices={"llm": {"x": {"input": -1, "output": 0}}}, _env_file=None)  # type: ignore[arg-type, call-arg]
    with pytest.raises(ValidationError):
        Settings(prices={"currency": "EUR"}, _env_file=None)  # type: ignore[arg-type, call-arg]


def test_countries_and_minutes() -> None:
    assert country_of("+15550009999") == "US" and country_of("+919812345678") == "IN"
    assert country_of("+390612345678") == "default"
    assert [billed_minutes(s) for s in (None, 0, 1, 60, 60.2, 78, 120)] == [0, 0, 1, 1, 2, 2, 2]


def test_the_breakdown_is_the_table_applied_to_the_usage() -> None:
    usage = {
        "direction": "outbound",
        "country": "IN",
        "stream_s": 70.0,
        "call_s": None,
        "asr": {"deepgram:nova-3": 30.0, "offline": 40.0},
        "llm": {"gpt-4o-mini": {"input": 2_000, "output": 300}, "offline": {"input": 999, "output": 99}},
        "tts": {"elevenlabs:eleven_flash_v2_5": 400, "offline": 100},
    }
    p = PriceTable()
    cost = compute_cost(usage, p)
    assert cost["telephony"] == pytest.approx(2 * p.telephony_per_minute("outbound", "IN"))
    assert cost["asr"] == pytest.approx(0.5 * 0.0077)
    assert cost["llm"] == pytest.approx(2_000 * 0.15 / 1e6 + 300 * 0.60 / 1e6)
    assert cost["tts"] == pytest.approx(0.4 * 0.05)
    assert cost["total"] == pytest.approx(sum(cost[k] for k in ("telephony", "asr", "llm", "tts")))
    assert cost["currency"] == "USD"
    # Twilio's duration, once known, prices the minutes
    assert compute_cost({**usage, "call_s": 181}, p)["telephony"] == pytest.approx(4 * 0.0447)


def test_usage_accumulates_and_the_meter_counts() -> None:
    t = [100.0]
    meter = CallMeter(
        PriceTable(),
        direction="inbound",
        country="US",
        asr_key="deepgram:nova-3",
        tts_key="offline",
        clock=lambda: t[0],
    )
    meter.start()
    meter.add_tts(120)
    meter.add_tokens("gpt-4o-mini", 100, 20)
    meter.add_tokens("gpt-4o-mini", 50, 5)
    t[0] += 42.5
    first = meter.usage(asr_seconds=40.0)
    assert first["stream_s"] == 42.5 and first["llm"] == {"gpt-4o-mini": {"input": 150, "output": 25}}
    assert first["tts"] == {"offline": 120} and first["asr"] == {"deepgram:nova-3": 40.0}
    both = merge_usage(first, first)
    assert both["streams"] == 2 and both["stream_s"] == 85.0 and both["llm"]["gpt-4o-mini"]["input"] == 300
    assert both["asr"]["deepgram:nova-3"] == 80.0 and first["llm"]["gpt-4o-mini"]["input"] == 150  # not mutated
    assert meter.running_total(asr_seconds=40.0) == compute_cost(first, PriceTable())["total"]


def test_a_spend_cap_trips_once_and_stays() -> None:
    cap = SpendCap(caller_budget=1.0, deployment_budget=10.0, caller_spent=0.7, deployment_spent=2.0)
    assert cap.check(0.2) is None
    assert cap.check(0.3) == "limits.caller_daily_budget"
    assert cap.check(0.0) == "limits.caller_daily_budget"
    deployment = SpendCap(deployment_budget=10.0, deployment_spent=9.99)
    assert deployment.check(0.01) == "limits.deployment_daily_budget"
    assert SpendCap().check(1e9) is None  # no budgets: never


# --- the call row -----------------------------------------------------------------------------------
async def test_streams_and_the_status_callback_accumulate_on_the_row(db: Database) -> None:
    sid = await add_call(db, to_number="+919812345678", direction="outbound")
    p = PriceTable()
    stream = {"streams": 1, "stream_s": 30.0, "asr": {"deepgram:nova-3": 30.0}, "llm": {}, "tts": {"offline": 10}}
    # a dropped stream, its reconnection and the final status race each other: nothing is lost
    await asyncio.gather(
        record_usage(db, sid, p, add=stream), record_usage(db, sid, p, add=stream), record_usage(db, sid, p, call_s=95)
    )
    async with db.sessionmaker() as s:
        call = await s.get(Call, sid)
    assert call is not None and call.usage is not None and call.cost is not None
    assert call.usage["streams"] == 2 and call.usage["stream_s"] == 60.0 and call.usage["call_s"] == 95.0
    assert (call.usage["direction"], call.usage["country"]) == ("outbound", "IN")
    assert call.cost == compute_cost(call.usage, p) and call.cost_total == call.cost["total"]
    assert call.cost["telephony"] == pytest.approx(2 * p.telephony_per_minute("outbound", "IN"))
    assert await record_usage(db, "CAunknown", p, call_s=3) is None


async def test_spent_today_is_the_utc_day(db: Database) -> None:
    await add_call(db, cost=0.5)
    await add_call(db, cost=0.25, ago=dt.timedelta(hours=11))  # 01:00 today
    await add_call(db, cost=7.0, ago=dt.timedelta(hours=13))  # yesterday
    await add_call(db, OTHER, cost=1.0)
    await add_call(db, OTHER)  # in progress, no cost yet
    assert await spent_today(db, caller=ME, now=NOW) == (pytest.approx(0.75), pytest.approx(1.75))
    assert await spent_today(db, caller=None, now=NOW) == (0.0, pytest.approx(1.75))


# --- budgets at the door ---------------------------------------------------------------------------
async def test_a_caller_over_the_daily_budget_is_refused(db: Database) -> None:
    limits = Limits(caller_daily_budget=1.0)
    assert limits.active and limits.budgets
    await add_call(db, cost=0.6)
    await add_call(db, cost=5.0, ago=dt.timedelta(hours=13))  # yesterday's calls do not count
    assert (await admit(db, limits, caller=ME, now=NOW, call_sid="CAnew")).allowed
    await add_call(db, cost=0.4)
    refused = await admit(db, limits, caller=ME, now=NOW, call_sid="CAnew")
    assert refused == LimitDecision(False, "limits.caller_daily_budget", 12 * 3600)  # until midnight UTC
    assert (await admit(db, limits, caller=OTHER, now=NOW, call_sid="CAnew")).allowed
    assert (await admit(db, limits.model_copy(update={"allow": [ME]}), caller=ME, now=NOW)).rule == "limits.allow"


async def test_the_deployment_budget_and_per_flow_overrides(db: Database) -> None:
    await add_call(db, OTHER, cost=3.0)
    await add_call(db, cost=1.0)
    limits = Limits(deployment_daily_budget=5.0)
    assert (await admit(db, limits, caller=ME, now=NOW, call_sid="CAnew")).allowed
    await add_call(db, "+14155550199", cost=1.0)
    decision = await admit(db, limits, caller="+14155550188", now=NOW, call_sid="CAnew")
    assert (decision.allowed, decision.rule) == (False, "limits.deployment_daily_budget")
    withheld = await admit(db, limits, caller="anonymous", now=NOW, call_sid="CAnew")
    assert withheld.rule == "limits.deployment_daily_budget"
    raised = limits.merged(LimitOverrides(deployment_daily_budget=50.0))
    assert (await admit(db, raised, caller="+14155550188", now=NOW, call_sid="CAnew")).allowed


async def test_budgets_keep_admission_to_one_statement(db: Database) -> None:
    await add_call(db, cost=0.1)
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        rules = Limits(
            caller_calls_per_hour=5,
            caller_concurrent=2,
            deployment_concurrent=10,
            caller_daily_budget=1.0,
            deployment_daily_budget=10.0,
        )
        assert (await admit(db, rules, caller=ME, now=NOW, call_sid="CAnew")).allowed
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)
    assert len(statements) == 1


# --- daily totals ------------------------------------------------------------------------------------
async def test_daily_totals_by_flow_and_the_cli(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    p = PriceTable()
    for flow, ago, call_s in (("support", 1, 61), ("support", 2, 30), ("sales", 1, 200), ("support", 30, 10)):
        sid = await add_call(db, flow=flow, ago=dt.timedelta(hours=ago))
        await record_usage(db, sid, p, call_s=call_s)
    await add_call(db, flow="support")  # no cost yet: not counted
    rows = await daily_totals(db, start=NOW.date(), end=NOW.date())
    assert [(r.day, r.flow, r.calls, r.minutes) for r in rows] == [
        ("2026-03-02", "sales", 1, 4.0),
        ("2026-03-02", "support", 2, 3.0),
    ]
    support = rows[1]
    assert support.telephony == pytest.approx(3 * 0.0085) and support.total == pytest.approx(support.telephony)
    assert [r.flow for r in await daily_totals(db, start=NOW.date(), end=NOW.date(), flow="sales")] == ["sales"]
    earlier = await daily_totals(db, start=NOW.date() - dt.timedelta(days=3), end=NOW.date())
    assert [(r.day, r.flow, r.calls) for r in earlier] == [
        ("2026-03-01", "support", 1),
        ("2026-03-02", "sales", 1),
        ("2026-03-02", "support", 2),
    ]

    monkeypatch.setenv("DATABASE_URL", database_url)
    argv = ["costs", "daily", "--from", "2026-03-02", "--to", "2026-03-02", "--flow", "support"]
    assert await asyncio.to_thread(cli_main, argv) == 0  # the CLI runs its own event loop
    out = json.loads(capsys.readouterr().out)
    assert out["flow"] == "support" and [d["calls"] for d in out["days"]] == [2]
    assert out["total"] == pytest.approx(support.total) and out["days"][0]["currency"] == "USD"
    assert await asyncio.to_thread(cli_main, ["costs", "daily", "--from", "March"]) == 2


def test_the_day_starts_at_utc_midnight() -> None:
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert costs.day_start(dt.datetime(2026, 3, 2, 3, 0, tzinfo=india)) == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
