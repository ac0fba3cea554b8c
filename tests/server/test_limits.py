"""Rate-limit rules (server/core/limits.py) on real SQLite and PostgreSQL: each limit, the
allow-list, withheld caller IDs, per-flow overrides, webhook retries, and the settings."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select

from dialgraph.server.core import limits
from dialgraph.server.core.call_store import transcript
from dialgraph.server.core.db import Database
from dialgraph.server.core.enums import CallOutcome
from dialgraph.server.core.limits import (
    ADMITTED,
    EXEMPT,
    LIVE_HORIZON,
    WITHHELD_FROM,
    LimitDecision,
    LimitOverrides,
    Limits,
    admit,
    is_withheld,
    record_refusal,
)
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
    status: str = "completed",
    outcome: str | None = None,
    direction: str = "inbound",
    sid: str | None = None,
) -> str:
    global _n
    _n += 1
    sid = sid or f"CA{_n:032d}"
    values = {
        "sid": sid,
        "direction": direction,
        "from_number": from_number,
        "to_number": "+15550009999",
        "flow": "support",
        "thread_id": sid,
        "status": status,
        "outcome": outcome,
        "started_at": NOW - ago,
    }
    async with db.engine.begin() as conn:
        await conn.execute(insert(Call).values(**values))
    return sid


OFF = {
    "caller_calls_per_hour": 0,
    "caller_calls_per_day": 0,
    "caller_concurrent": 0,
    "max_call_minutes": 0,
    "anonymous_calls_per_hour": 0,
    "caller_daily_budget": 0,
}


def rules(**given: object) -> Limits:
    """Only the rules given (the shipped defaults switched off)."""
    return Limits.model_validate({**OFF, **given})


async def decide(db: Database, limits: Limits, caller: str = ME, sid: str = "CAnew") -> LimitDecision:
    return await admit(db, limits, caller=caller, now=NOW, call_sid=sid)


# --- the rules --------------------------------------------------------------------------------------
def test_guardrails_are_on_by_default() -> None:
    shipped = Limits()
    assert shipped.active and shipped.budgets
    assert (shipped.caller_calls_per_hour, shipped.caller_concurrent, shipped.max_call_minutes) == (20, 3, 30)
    assert shipped.deployment_concurrent == 0 and shipped.deployment_daily_budget == 0  # the deployment's own call


async def test_no_rule_admits_without_asking(db: Database) -> None:
    await add_call(db, status="in-progress")
    assert await decide(db, rules()) == ADMITTED
    # max_call_minutes and callee attempts are not admission rules
    assert not rules(max_call_minutes=5, callee_attempts_per_day=1).active


async def test_calls_per_hour(db: Database) -> None:
    limits = rules(caller_calls_per_hour=2)
    await add_call(db, ago=dt.timedelta(minutes=61))  # aged out
    await add_call(db, OTHER, ago=dt.timedelta(minutes=1))  # someone else
    await add_call(db, ago=dt.timedelta(minutes=50))
    assert await decide(db, limits) == ADMITTED
    await add_call(db, ago=dt.timedelta(minutes=10))
    refused = await decide(db, limits)
    # the oldest counted call (50 min ago) leaves the window in 10 minutes
    assert refused == LimitDecision(False, "limits.caller_calls_per_hour", 600)
    assert await decide(db, limits, OTHER) == ADMITTED


async def test_calls_per_day(db: Database) -> None:
    limits = rules(caller_calls_per_day=2, caller_calls_per_hour=5)
    await add_call(db, ago=dt.timedelta(hours=25))
    await add_call(db, ago=dt.timedelta(hours=20))
    assert await decide(db, limits) == ADMITTED
    await add_call(db, ago=dt.timedelta(hours=2))
    assert await decide(db, limits) == LimitDecision(False, "limits.caller_calls_per_day", 4 * 3600)


async def test_caller_concurrent(db: Database) -> None:
    limits = rules(caller_concurrent=1)
    await add_call(db, status="completed")
    await add_call(db, status="in-progress", ago=LIVE_HORIZON + dt.timedelta(minutes=1))  # status lost: stale
    await add_call(db, OTHER, status="in-progress")
    assert await decide(db, limits) == ADMITTED
    await add_call(db, status="ringing", ago=dt.timedelta(seconds=3))
    assert await decide(db, limits) == LimitDecision(False, "limits.caller_concurrent")
    assert await decide(db, rules(caller_concurrent=2)) == ADMITTED


async def test_deployment_concurrent_counts_every_live_call(db: Database) -> None:
    limits = rules(deployment_concurrent=2)
    await add_call(db, OTHER, status="in-progress")
    await add_call(db, "+15550001000", status="completed")
    assert await decide(db, limits) == ADMITTED
    await add_call(db, "+15550009999", status="queued", direction="outbound")  # our own outbound call too
    assert await decide(db, limits) == LimitDecision(False, "limits.deployment_concurrent")
    assert await decide(db, limits, "anonymous") == LimitDecision(False, "limits.deployment_concurrent")


async def test_refused_calls_do_not_count(db: Database) -> None:
    """Ringing back while refused must not push the wait further out (nor hold a slot)."""
    limits = rules(caller_calls_per_hour=1, caller_concurrent=1, deployment_concurrent=1)
    for _ in range(3):
        await add_call(db, status="ringing", outcome=CallOutcome.RATE_LIMITED)
    assert await decide(db, limits) == ADMITTED


async def test_allow_list_is_exempt(db: Database) -> None:
    limits = rules(caller_calls_per_hour=1, deployment_concurrent=1, allow=[ME])
    await add_call(db, status="in-progress")
    assert await decide(db, limits) == EXEMPT
    assert (await decide(db, limits, OTHER)).rule == "limits.deployment_concurrent"


@pytest.mark.parametrize(
    "spelling",
    ["anonymous", "Anonymous", "ANONYMOUS", "+266696687", "Restricted", "+7378742833", "Unknown", "Private", "", " "],
)
def test_withheld_spellings(spelling: str) -> None:
    assert is_withheld(spelling)
    assert spelling.strip() in WITHHELD_FROM


@pytest.mark.parametrize("number", [ME, "+266696688", "client:alice", "+15550009999"])
def test_numbers_are_not_withheld(number: str) -> None:
    assert not is_withheld(number)


async def test_withheld_ids_share_their_own_rule(db: Database) -> None:
    """Withheld IDs are counted together, under anonymous_calls_per_hour only."""
    limits = rules(anonymous_calls_per_hour=2, caller_calls_per_hour=1, caller_concurrent=1)
    await add_call(db, "anonymous", ago=dt.timedelta(minutes=30), status="in-progress")
    await add_call(db, ME, ago=dt.timedelta(minutes=1))  # a real number: not an anonymous call
    assert await decide(db, limits, "Restricted") == ADMITTED  # the per-number rules do not apply
    await add_call(db, "+266696687", ago=dt.timedelta(minutes=20))
    refused = await decide(db, limits, "Unknown")
    assert refused == LimitDecision(False, "limits.anonymous_calls_per_hour", 30 * 60)
    assert await decide(db, rules(caller_calls_per_hour=1), "anonymous") == ADMITTED  # no anonymous rule: open


async def test_a_retried_webhook_gets_the_same_answer(db: Database) -> None:
    """Twilio retries /voice with the same CallSid: the call does not count against itself."""
    limits = rules(caller_calls_per_hour=1, caller_concurrent=1)
    admitted = await add_call(db, status="ringing")
    assert await decide(db, limits, sid=admitted) == ADMITTED
    refused = await add_call(db, status="ringing", outcome=CallOutcome.RATE_LIMITED)
    assert await decide(db, rules(deployment_concurrent=5), sid=refused) == LimitDecision(
        False, "limits.already_refused"
    )


async def test_record_refusal_writes_row_and_rule_once(db: Database) -> None:
    decision = LimitDecision(False, "limits.caller_calls_per_hour", 120)
    for _ in range(2):
        await record_refusal(
            db, decision, sid="CArefused", from_number=ME, to_number="+15550009999", flow="support", status="ringing"
        )
    async with db.sessionmaker() as s:
        call = (await s.scalars(select(Call).where(Call.sid == "CArefused"))).one()
    assert (call.outcome, call.direction, call.from_number, call.flow) == ("rate_limited", "inbound", ME, "support")
    events = await transcript(db, "CArefused")
    assert [(e.kind, e.data) for e in events] == [
        ("rate_limited", {"rule": "limits.caller_calls_per_hour", "retry_after_s": 120})
    ]


# --- configuration ----------------------------------------------------------------------------------
async def test_flow_overrides(db: Database) -> None:
    base = rules(caller_calls_per_hour=1, allow=["+15550000001"], refuse_with="reject")
    strict = base.merged(LimitOverrides(caller_concurrent=1, caller_calls_per_hour=0, allow=[]))
    assert (strict.caller_calls_per_hour, strict.caller_concurrent, strict.allow) == (0, 1, [])
    assert strict.refuse_with == "reject"  # not overridden: inherited
    assert base.merged(None) is base and base.merged(LimitOverrides()) is base
    await add_call(db, ago=dt.timedelta(minutes=5))
    assert (await decide(db, base)).rule == "limits.caller_calls_per_hour"
    assert await decide(db, strict) == ADMITTED  # the flow lifted the hourly limit


def test_refusal_words_follow_the_flow_language() -> None:
    assert rules().message("en") == (rules().message()[0], "en-US")
    text, language = rules().message("hi")
    assert language == "hi-IN" and "कॉल" in text
    assert rules().message("es-MX")[1] == "es-ES"
    assert rules().message("sw")[1] == "en-US"  # no words for it: English
    assert rules(refuse_message="Lines are busy.").message("hi") == ("Lines are busy.", "hi-IN")


def test_settings_from_toml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "dialgraph.toml"
    config.write_text(
        "default_flow = 'support'\n[limits]\ncaller_calls_per_hour = 6\nallow = ['+15550001111']\n"
        "[flows.support.limits]\ncaller_concurrent = 1\nrefuse_message = 'Busy, sorry.'\n"
    )
    settings = Settings(config_file=config, _env_file=None)  # type: ignore[call-arg]
    assert settings.limits.caller_calls_per_hour == 6 and settings.limits.callee_attempts_per_day == 3
    support = settings.limits.merged(settings.flows["support"].limits)
    assert (support.caller_calls_per_hour, support.caller_concurrent, support.allow) == (6, 1, ["+15550001111"])
    assert support.message()[0] == "Busy, sorry."

    monkeypatch.setenv("DIALGRAPH_LIMITS", json.dumps({"deployment_concurrent": 20, "refuse_with": "reject"}))
    from_env = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (from_env.limits.deployment_concurrent, from_env.limits.refuse_with) == (20, "reject")


@pytest.mark.parametrize(
    "bad",
    [{"allow": ["4155550100"]}, {"caller_calls_per_hour": -1}, {"refuse_with": "hangup"}, {"per_minute": 3}],
)
def test_bad_limits_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(limits=bad, _env_file=None)  # type: ignore[arg-type, call-arg]
    with pytest.raises(ValidationError):
        LimitOverrides.model_validate(bad)


def test_the_live_index_predicate_is_the_query_text() -> None:
    """The planner uses ``ix_calls_live`` only when the query's condition is its predicate."""
    path = Path(limits.__file__).parent / "migrations" / "versions" / "0005_calls_live_index.py"
    spec = importlib.util.spec_from_file_location("migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.LIVE == limits.LIVE_SQL
