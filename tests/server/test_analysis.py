"""Post-call analysis on real SQLite and PostgreSQL: claims across instances, the sweeper
that picks up calls whose instance died, the hosted model's failure falling back to the
offline rules, and the app's lifespan running the sweeper by itself."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

from dialgraph.server.analysis import (
    PostCallAnalysis,
    analyse_call,
    analysis_of,
    build_parts,
    unanalysed,
    wait_for_analysis,
)
from dialgraph.server.app import create_app
from dialgraph.server.core.call_store import add_events, get_call, record_call, update_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.overload import LoopLagMonitor
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.vendors.openai import FakeOpenAIServer, ScriptedReply, strict_schema_problem
from dialgraph.telephony.speech.vad import EnergyVad
from tests.fakes.speech import NullRecognizer, NullSynthesizer


def make_settings(tmp_path: Path, database_url: str, **analysis: Any) -> Settings:
    return Settings(data_dir=tmp_path, database_url=database_url, analysis=analysis, _env_file=None)  # type: ignore[call-arg]


async def ended_call(
    db: Database,
    sid: str,
    *,
    ago_s: float,
    flow: str = "support",
    turns: tuple[str, ...] = ("My invoice charged me twice.",),
    status: str = "completed",
    **values: Any,
) -> None:
    """A call row as an instance leaves it when the call ends (transcript included)."""
    await record_call(
        db, sid=sid, direction="inbound", from_number="+14155550100", to_number="+15550001002", flow=flow, thread_id=sid
    )
    ended = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ago_s) if status == "completed" else None
    await update_call(db, sid, status=status, ended_at=ended, outcome="ended_by_agent", **values)
    events = [CallEvent(call_sid=sid, kind="turn", role="agent", text="Thank you for calling. How can I help?")]
    events += [CallEvent(call_sid=sid, kind="turn", role="caller", text=t) for t in turns]
    await add_events(db, events)


def claim_of(instance: str, ago_s: float, attempts: int = 1) -> dict[str, Any]:
    claimed_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ago_s)
    return {"claim": instance, "claimed_at": claimed_at.isoformat(), "attempts": attempts}


async def test_the_sweeper_analyses_calls_whose_instance_died(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path, db.url)
    done = {"summary": "Already done.", "fields": {}, "model": "offline", "at": dt.datetime.now(dt.UTC).isoformat()}
    live_claim = claim_of("live:1", ago_s=60)
    await ended_call(db, "CA-never", ago_s=600)  # its instance died before the analysis
    await ended_call(db, "CA-stale", ago_s=900, analysis=claim_of("dead:1", ago_s=700))
    await ended_call(db, "CA-live", ago_s=800, analysis=live_claim)  # being analysed
    await ended_call(db, "CA-recent", ago_s=10)  # its own instance still has time
    await ended_call(db, "CA-old", ago_s=3 * 86400)  # beyond the horizon
    await ended_call(db, "CA-talking", ago_s=0, status="in-progress")
    await ended_call(db, "CA-done", ago_s=700, analysis=done)
    await ended_call(db, "CA-hopeless", ago_s=1000, analysis=claim_of("dead:2", ago_s=700, attempts=3))

    service = PostCallAnalysis(db, build_parts(settings, {}, "sweeper:1"))
    heard: list[str] = []

    async def listener(sid: str, analysis: dict[str, Any]) -> None:
        heard.append(sid)

    service.add_listener(listener)
    assert set(await unanalysed(db, settings)) == {"CA-never", "CA-stale", "CA-live", "CA-hopeless"}
    swept = await service.sweep_once()
    assert swept == ["CA-stale", "CA-never"]  # oldest first
    assert heard == swept

    never = await get_call(db, "CA-never")
    assert never is not None and never.analysis is not None
    assert never.analysis["model"] == "offline" and never.analysis["fields"]["issue_category"] == "billing"
    assert analysis_of(never) == {"summary": never.analysis["summary"], "fields": never.analysis["fields"]}
    stale = await get_call(db, "CA-stale")
    assert stale is not None and analysis_of(stale) is not None
    live = await get_call(db, "CA-live")
    assert live is not None and live.analysis == live_claim  # left to its instance
    for sid in ("CA-recent", "CA-old", "CA-talking"):
        row = await get_call(db, sid)
        assert row is not None and row.analysis is None, sid
    done_row = await get_call(db, "CA-done")
    assert done_row is not None and done_row.analysis == done
    hopeless = await get_call(db, "CA-hopeless")
    assert hopeless is not None and hopeless.analysis is not None and hopeless.analysis["failed"] is True
    assert analysis_of(hopeless) is None
    # a second round finds nothing to do but the live instance's claim
    assert await service.sweep_once() == []
    assert set(await unanalysed(db, settings)) == {"CA-live"}
    await service.aclose()


async def test_two_instances_never_analyse_the_same_call(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path, db.url)
    sids = [f"CA-race-{i}" for i in range(6)]
    for sid in sids:
        await ended_call(db, sid, ago_s=5)
    first = PostCallAnalysis(db, build_parts(settings, {}, "host-a:1"))
    second = PostCallAnalysis(db, build_parts(settings, {}, "host-b:2"))
    made: list[tuple[str, str]] = []

    def recorder(name: str) -> Any:
        async def listener(sid: str, analysis: dict[str, Any]) -> None:
            made.append((name, sid))

        return listener

    first.add_listener(recorder("a"))
    second.add_listener(recorder("b"))
    results = await asyncio.gather(*(svc.analyse(sid) for sid in sids for svc in (first, second)))
    assert sorted(sid for _, sid in made) == sorted(sids)  # each call analysed exactly once
    for sid in sids:
        row = await get_call(db, sid)
        assert row is not None and analysis_of(row) is not None
    assert all(r is None or "summary" in r for r in results)
    # asking again returns what is stored, and makes nothing new
    again = await analyse_call(db, first.parts, sids[0])
    row = await get_call(db, sids[0])
    assert row is not None and again == row.analysis and len(made) == len(sids)
    await first.aclose()
    await second.aclose()


async def test_a_failing_hosted_model_falls_back_to_the_offline_rules(tmp_path: Path, db: Database) -> None:
    async with FakeOpenAIServer(lambda body: ScriptedReply(text="I am not JSON")) as fake:
        settings = make_settings(tmp_path, db.url, model=f"openai-compatible:{fake.base_url}/gpt-analysis")
        parts = build_parts(settings, {}, "host:1")
        assert parts.model is not None
        await ended_call(db, "CA-fallback", ago_s=5, turns=("My login is not working.",))
        stored = await analyse_call(db, parts, "CA-fallback")
        assert len(fake.requests) == 1  # the hosted model was asked
    assert stored is not None and stored["model"] == "offline"
    assert stored["fields"]["issue_category"] == "technical"
    row = await get_call(db, "CA-fallback")
    assert row is not None and row.analysis == stored


async def test_a_call_without_a_conversation_needs_no_model(tmp_path: Path, db: Database) -> None:
    async with FakeOpenAIServer(lambda body: ScriptedReply(text="{}")) as fake:
        settings = make_settings(tmp_path, db.url, model=f"openai-compatible:{fake.base_url}/gpt-analysis")
        await ended_call(db, "CA-silent", ago_s=5, turns=())
        await update_call(db, "CA-silent", outcome="caller_hung_up")
        stored = await analyse_call(db, build_parts(settings, {}, "host:1"), "CA-silent")
        assert fake.requests == []
    assert stored is not None and stored["summary"] == "No conversation took place: the call ended (caller hung up)."
    assert stored["fields"] == {
        "issue_category": None,
        "resolved": False,
        "needs_follow_up": False,
        "transferred_to": None,
    }


async def test_the_lifespan_sweeper_picks_up_an_ended_call_by_itself(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path, db.url, sweep_interval_s=0.1, sweep_after_s=0)
    await ended_call(db, "CA-orphan", ago_s=30, turns=("What are your opening hours?",))
    app = create_app(
        settings,
        overrides=Overrides(
            db=db, recognizer=NullRecognizer(), synthesizer=NullSynthesizer(), vad_factory=EnergyVad, runners={}
        ),
    )
    async with app.router.lifespan_context(app):
        found = await wait_for_analysis(db, "CA-orphan", timeout_s=10)
    assert found is not None and found["fields"]["issue_category"] == "hours_location"


async def test_a_background_analysis_waits_for_a_quiet_loop(tmp_path: Path, db: Database) -> None:
    """Calls in progress first: while the loop's lag p99 is above busy_lag_ms a scheduled
    analysis waits; once the loop is quiet it runs. An analysis asked for directly does not wait."""
    settings = make_settings(tmp_path, db.url, delay_s=0, busy_lag_ms=20, max_defer_s=60)
    await ended_call(db, "CA-busy", ago_s=1)
    await ended_call(db, "CA-asked", ago_s=1)
    lag = LoopLagMonitor(window_s=1.0)  # 10 samples; fed by hand, as the probe would
    for _ in range(10):
        lag.record(0.080)  # the loop wakes 80 ms late: calls in progress are suffering
    service = PostCallAnalysis(db, build_parts(settings, {}, "busy:1"), lag=lag)
    service.schedule("CA-busy")
    await asyncio.sleep(1.2)
    row = await get_call(db, "CA-busy")
    assert row is not None and row.analysis is None  # not even claimed
    asked = await service.analyse("CA-asked")
    assert asked is not None and "summary" in asked
    for _ in range(10):
        lag.record(0.002)
    found = await wait_for_analysis(db, "CA-busy", timeout_s=5)
    assert found is not None
    assert service.deferred_s >= 1.0
    await service.aclose()


async def test_a_busy_loop_defers_an_analysis_for_max_defer_s_at_most(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path, db.url, delay_s=0, busy_lag_ms=20, max_defer_s=0.6)
    await ended_call(db, "CA-always-busy", ago_s=1)
    lag = LoopLagMonitor(window_s=1.0)
    for _ in range(10):
        lag.record(0.080)
    service = PostCallAnalysis(db, build_parts(settings, {}, "busy:2"), lag=lag)
    service.schedule("CA-always-busy")
    found = await wait_for_analysis(db, "CA-always-busy", timeout_s=5)
    assert found is not None and lag.p99_ms() > 20  # still busy: it ran after its deferral
    assert 0.5 <= service.deferred_s < 3
    await service.aclose()


def test_the_fake_openai_server_refuses_what_openai_refuses() -> None:
    good = {
        "type": "json_schema",
        "json_schema": {
            "name": "A",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"x": {"type": "string"}},
                "required": ["x"],
                "additionalProperties": False,
            },
        },
    }
    assert strict_schema_problem(good) is None
    loose = json.loads(json.dumps(good))
    del loose["json_schema"]["schema"]["additionalProperties"]
    assert "additionalProperties" in (strict_schema_problem(loose) or "")
    partial = json.loads(json.dumps(good))
    partial["json_schema"]["schema"]["required"] = []
    assert "Missing 'x'" in (strict_schema_problem(partial) or "")
