"""Post-call analysis: once a call has ended, its flow's model writes a short summary and
fills the fields the flow declares (``graphs/analysis.py``), stored redacted on the call row
(``calls.analysis``: ``{"summary", "fields", "model", "at"}``).

Off the audio path: ``/twilio/status`` with a final status schedules ``PostCallAnalysis.schedule``
(a background task of the instance that got the callback, after ``[analysis] delay_s``); the
media session never waits for it. Every instance also runs a sweeper that, every
``sweep_interval_s``, analyses ended calls still without analysis after ``sweep_after_s``
(their instance died, or restarted, before it got to them).

One instance per call, across instances: an instance first *claims* the call with
``UPDATE calls SET analysis = {"claim": ..., "claimed_at": ..., "attempts": n} WHERE sid = ?
AND analysis IS NULL`` (one winner), then replaces its own claim (compared by its exact text)
with the result. A claim older than ``claim_ttl_s`` belongs to an instance that died: it is
taken over the same way (compare-and-set on the old claim's text); after ``max_attempts``
the call is marked failed and left alone.

Calls in progress come first. An analysis is CPU work in the process that holds live calls
(reading the thread's checkpoint, the offline extraction), and a burst of calls ending
together queued dozens of them: measured at 150 whole calls on one core, replies waited
seconds behind them (the offline extraction shared asyncio's default executor with the
offline model's reply, FIFO). So an instance runs ``[analysis] max_concurrent`` analyses at
once (1), the offline extraction in a thread of its own, and a background analysis (scheduled
or swept; not one asked for through the API) first waits while the event loop's lag p99 is
above ``busy_lag_ms``, for ``max_defer_s`` at most: the sweeper is the safety net either way.

The model: ``[analysis] model``, else the flows' model (``settings.model_spec``). A hosted
model answers one structured-output request; if it fails or times out, the offline
extraction answers instead (and says so in ``model``). The offline model reads the thread's
final checkpoint (tool calls and results), the call row and the transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import structlog
from fastapi import Depends, Request
from langchain_core.language_models import BaseChatModel
from sqlalchemy import Text, and_, cast, or_, select, update

from dialgraph.graphs.analysis import OFFLINE, Analysis, AnalysisSpec, CallRecord, hosted_analysis, offline_analysis
from dialgraph.graphs.registry import flow_spec
from dialgraph.server.core.db import Database
from dialgraph.server.core.enums import TERMINAL_STATUSES
from dialgraph.server.core.models import Call, CallEvent
from dialgraph.server.core.overload import LoopLagMonitor
from dialgraph.server.core.redaction import Redactor, redactor_for
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import TurnRunner

log = structlog.get_logger(__name__)

CLAIM = "claim"
Listener = Callable[[str, dict[str, Any]], Awaitable[None]]
StateReader = Callable[[Call], Awaitable[Mapping[str, Any] | None]]


@dataclass
class AnalysisParts:
    """What an analysis needs besides the database."""

    settings: Settings
    instance_id: str
    model: BaseChatModel | None = None  # a hosted model; None: the offline extraction
    states: StateReader | None = None  # the thread's final checkpoint values of a call
    redactor: Redactor = field(default_factory=Redactor)


def build_parts(
    settings: Settings, runners: Mapping[str, TurnRunner], instance_id: str, *, model: BaseChatModel | None = None
) -> AnalysisParts:
    """The parts from the app's settings and runners (the hosted model built here, if any)."""
    spec = settings.analysis.model or settings.model_spec
    if model is None and spec != OFFLINE:
        from dialgraph.graphs.model import build_chat_model

        model = build_chat_model(spec, settings=settings)
    return AnalysisParts(
        settings=settings,
        instance_id=instance_id,
        model=model,
        states=checkpoint_reader(runners),
        redactor=redactor_for(settings.redaction),
    )


def checkpoint_reader(runners: Mapping[str, TurnRunner]) -> StateReader:
    """Reads a call's final graph state through its flow's runner (its checkpointer)."""
    from dialgraph.graphs.graph_loop import GraphReader

    async def read(call: Call) -> Mapping[str, Any] | None:
        runner = runners.get(call.flow)
        if not isinstance(runner, GraphReader) or not call.thread_id:
            return None
        snapshot = await runner.read_state(call.thread_id)
        return snapshot.values if isinstance(snapshot.values, Mapping) else None

    return read


# --- what the API shows ----------------------------------------------------------------------
def finished(value: object) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("summary"), str) and CLAIM not in value


def analysis_of(call: Call) -> dict[str, Any] | None:
    """``{"summary", "fields"}`` of the call's finished analysis; None while there is none
    (not analysed yet, being analysed, or failed)."""
    value = call.analysis
    if not finished(value):
        return None
    assert isinstance(value, Mapping)
    fields = value.get("fields")
    return {"summary": value["summary"], "fields": dict(fields) if isinstance(fields, Mapping) else {}}


# --- one call --------------------------------------------------------------------------------
def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _unset() -> Any:
    return or_(Call.analysis.is_(None), cast(Call.analysis, Text) == "null")


async def claim(db: Database, parts: AnalysisParts, sid: str, *, now: dt.datetime | None = None) -> str | None:
    """Claim ``sid`` for this instance: the stored claim's exact text, or None when the call
    is analysed, being analysed by a live claim, not ended, unknown, or out of attempts."""
    cfg = parts.settings.analysis
    now = now or _now()
    async with db.sessionmaker() as s, s.begin():
        row = (
            await s.execute(select(Call.ended_at, Call.status, cast(Call.analysis, Text)).where(Call.sid == sid))
        ).one_or_none()
        if row is None:
            return None
        ended_at, status, raw = row
        if ended_at is None and status not in TERMINAL_STATUSES:
            return None
        attempts = 0
        if raw is None or raw == "null":
            condition = _unset()
        else:
            held = json.loads(raw)
            if not isinstance(held, dict) or CLAIM not in held:
                return None  # done (or failed)
            claimed_at = dt.datetime.fromisoformat(str(held.get("claimed_at")))
            if (now - claimed_at).total_seconds() < cfg.claim_ttl_s:
                return None  # a live instance is on it
            attempts = int(held.get("attempts") or 1)
            condition = cast(Call.analysis, Text) == raw
            if attempts >= cfg.max_attempts:
                failed = {"failed": True, "attempts": attempts, "at": now.isoformat()}
                await s.execute(update(Call).where(Call.sid == sid, condition).values(analysis=failed))
                log.warning("call analysis given up", call_sid=sid, attempts=attempts)
                return None
        mine = {CLAIM: parts.instance_id, "claimed_at": now.isoformat(), "attempts": attempts + 1}
        won = await s.execute(update(Call).where(Call.sid == sid, condition).values(analysis=mine))
        if won.rowcount != 1:  # type: ignore[attr-defined]
            return None
        stored = await s.scalar(select(cast(Call.analysis, Text)).where(Call.sid == sid))
    return stored


async def call_record(db: Database, parts: AnalysisParts, call: Call) -> CallRecord:
    """The facts an analysis reads: the call row, its transcript (as stored: redacted), and
    its thread's final checkpoint."""
    async with db.sessionmaker() as s:
        events = list(
            await s.scalars(
                select(CallEvent).where(CallEvent.call_sid == call.sid, CallEvent.kind == "turn").order_by(CallEvent.id)
            )
        )
    state = await parts.states(call) if parts.states is not None else None
    flow = parts.settings.flows.get(call.flow)
    context = call.context if isinstance(call.context, Mapping) else {}
    name = context.get("name")
    return CallRecord(
        flow=call.flow,
        direction=call.direction,
        zone=flow.zone if flow is not None else ZoneInfo("UTC"),
        started_at=call.started_at,
        status=call.status,
        outcome=call.outcome,
        transfer_target=call.transfer_target,
        transfer_status=call.transfer_status,
        contact_name=name if isinstance(name, str) else None,
        targets={k: t.description for k, t in flow.transfer_targets.items() if t.description} if flow else {},
        transcript=tuple((e.role or "", e.text or "") for e in events if e.role in ("caller", "agent")),
        state=state or {},
    )


def _spec(settings: Settings, flow: str) -> AnalysisSpec | None:
    flow_settings = settings.flows.get(flow)
    spec = flow_spec((flow_settings.graph if flow_settings is not None else None) or flow)
    return spec.analysis if spec is not None else None


async def run_analysis(parts: AnalysisParts, record: CallRecord, *, executor: Executor | None = None) -> Analysis:
    """The hosted model's analysis (offline when there is none, nothing was said, or it
    fails). The offline extraction runs in ``executor`` (None: asyncio's default one)."""
    spec = _spec(parts.settings, record.flow)
    talked = bool(record.caller_turns or record.steps)
    if parts.model is not None and talked:
        try:
            return await asyncio.wait_for(
                hosted_analysis(parts.model, spec, record), timeout=parts.settings.analysis.timeout_s
            )
        except Exception as exc:  # any failure of the hosted model: the offline rules answer
            log.warning("hosted call analysis failed, using offline", flow=record.flow, error=type(exc).__name__)
    return await asyncio.get_running_loop().run_in_executor(executor, offline_analysis, spec, record)


async def _analyse(
    db: Database, parts: AnalysisParts, sid: str, *, executor: Executor | None = None
) -> tuple[dict[str, Any] | None, bool]:
    """(the call's stored analysis, whether this call made it)."""
    held = await claim(db, parts, sid)
    if held is None:
        async with db.sessionmaker() as s:
            current = await s.scalar(select(Call.analysis).where(Call.sid == sid))
        return (dict(current) if finished(current) else None), False  # type: ignore[arg-type]
    async with db.sessionmaker() as s:
        call = await s.get(Call, sid)
    assert call is not None
    record = await call_record(db, parts, call)
    result = await run_analysis(parts, record, executor=executor)
    stored: dict[str, Any] = {
        "summary": parts.redactor.redact(result.summary),
        "fields": parts.redactor.redact_data(result.fields),
        "model": result.model,
        "at": _now().isoformat(),
    }
    async with db.sessionmaker() as s, s.begin():
        done = await s.execute(
            update(Call).where(Call.sid == sid, cast(Call.analysis, Text) == held).values(analysis=stored)
        )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        log.warning("call analysis claim was taken over", call_sid=sid)
        return None, False
    log.info("call analysed", call_sid=sid, flow=call.flow, model=result.model)
    return stored, True


async def analyse_call(db: Database, parts: AnalysisParts, sid: str) -> dict[str, Any] | None:
    """Analyse call ``sid`` unless that is done or under way: the stored analysis
    (``{"summary", "fields", "model", "at"}``, redacted), or None (not ended, unknown,
    another instance is on it)."""
    stored, _ = await _analyse(db, parts, sid)
    return stored


async def wait_for_analysis(db: Database, sid: str, *, timeout_s: float = 30.0) -> dict[str, Any] | None:
    """The call's ``{"summary", "fields"}`` once some instance has stored it; None on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        async with db.sessionmaker() as s:
            call = await s.get(Call, sid)
        found = analysis_of(call) if call is not None else None
        if found is not None or loop.time() >= deadline:
            return found
        await asyncio.sleep(0.25)


async def unanalysed(db: Database, settings: Settings, *, now: dt.datetime | None = None, limit: int = 20) -> list[str]:
    """Ended calls the sweeper should look at: no analysis (or a claim) although they ended
    ``sweep_after_s`` ago, within the last ``horizon_hours``, oldest first."""
    cfg = settings.analysis
    now = now or _now()
    text = cast(Call.analysis, Text)
    query = (
        select(Call.sid)
        .where(
            Call.ended_at.is_not(None),
            Call.ended_at <= now - dt.timedelta(seconds=cfg.sweep_after_s),
            Call.ended_at >= now - dt.timedelta(hours=cfg.horizon_hours),
            or_(_unset(), and_(text.like('%"claim"%'), ~text.like('%"summary"%'), ~text.like('%"failed"%'))),
        )
        .order_by(Call.ended_at)
        .limit(limit)
    )
    async with db.sessionmaker() as s:
        return list(await s.scalars(query))


# --- the per-app service ---------------------------------------------------------------------
class PostCallAnalysis:
    """This instance's analyses: scheduled ones (a call ended here) and the sweeper, at most
    ``max_concurrent`` at once, after calls in progress (module docstring). ``lag``: the
    process's loop-lag probe (the overload one); without it nothing waits for a quiet loop."""

    QUIET_POLL_S = 0.5

    def __init__(self, db: Database, parts: AnalysisParts, *, lag: LoopLagMonitor | None = None) -> None:
        self.db = db
        self.parts = parts
        self.lag = lag
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: list[Listener] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(parts.settings.analysis.max_concurrent)
        self._executor = ThreadPoolExecutor(
            max_workers=parts.settings.analysis.max_concurrent, thread_name_prefix="analysis"
        )
        self.deferred_s = 0.0  # time background analyses spent waiting for a quiet loop

    @property
    def settings(self) -> Settings:
        return self.parts.settings

    def add_listener(self, listener: Listener) -> None:
        """``await listener(sid, analysis)`` after this instance stored a call's analysis."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def schedule(self, sid: str) -> None:
        """Analyse ``sid`` in the background after ``delay_s`` (returns at once)."""
        if not self.settings.analysis.enabled or not sid:
            return
        task = asyncio.create_task(self._one(sid, self.settings.analysis.delay_s), name=f"analysis:{sid[:40]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def analyse(self, sid: str) -> dict[str, Any] | None:
        """Analyse ``sid`` now, in its turn among this instance's analyses (listeners told
        when this call stored it). Does not wait for a quiet loop: someone asked."""
        async with self._slots:
            stored, fresh = await _analyse(self.db, self.parts, sid, executor=self._executor)
        if fresh and stored is not None:
            for listener in list(self._listeners):
                try:
                    await listener(sid, stored)
                except Exception as exc:  # a listener's failure is its own
                    log.warning("analysis listener failed", call_sid=sid, error=type(exc).__name__)
        return stored

    async def _quiet(self) -> None:
        """Wait while the loop is busier than ``busy_lag_ms`` (``max_defer_s`` at most)."""
        cfg = self.settings.analysis
        if self.lag is None or not cfg.busy_lag_ms:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + cfg.max_defer_s
        # polling a measurement, not waiting for an event: the probe has no 'quiet' signal
        while self.lag.p99_ms() > cfg.busy_lag_ms and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(self.QUIET_POLL_S)
        self.deferred_s += loop.time() - start

    async def _background(self, sid: str) -> dict[str, Any] | None:
        await self._quiet()
        return await self.analyse(sid)

    async def _one(self, sid: str, delay_s: float) -> None:
        try:
            if delay_s:
                await asyncio.sleep(delay_s)
            await self._background(sid)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the sweeper retries once the claim is stale
            log.error("call analysis failed", call_sid=sid, error=type(exc).__name__)

    async def sweep_once(self, *, now: dt.datetime | None = None) -> list[str]:
        """Analyse what the sweeper finds now; the sids this instance analysed."""
        done: list[str] = []
        for sid in await unanalysed(self.db, self.settings, now=now):
            try:
                if await self._background(sid) is not None:
                    done.append(sid)
            except Exception as exc:
                log.error("swept call analysis failed", call_sid=sid, error=type(exc).__name__)
        return done

    def start(self) -> None:
        if self.settings.analysis.enabled and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="analysis-sweeper")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.analysis.sweep_interval_s)
            try:
                swept = await self.sweep_once()
            except Exception as exc:  # the database is away: try again next round
                log.warning("analysis sweep failed", error=type(exc).__name__)
                continue
            if swept:
                log.info("analysis sweep", calls=len(swept))

    async def aclose(self) -> None:
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sweeper = None
        self._executor.shutdown(wait=False, cancel_futures=True)


def get_analysis(request: Request) -> PostCallAnalysis | None:
    """The app's ``PostCallAnalysis`` (None before the lifespan built it)."""
    found = getattr(request.app.state, "analysis", None)
    return found if isinstance(found, PostCallAnalysis) else None


AnalysisDep = Annotated[PostCallAnalysis | None, Depends(get_analysis)]
