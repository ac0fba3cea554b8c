"""``GET /metrics``: Prometheus text format (``prometheus-client``), behind a bearer token.

Auth: ``Authorization: Bearer <metrics_token>`` when ``metrics_token`` is set, or the admin
token (always). With ``env = "dev"`` and ``metrics_open_on_loopback = true`` a scrape from
127.0.0.1 / ::1 needs none.

Where the numbers come from:

* **This process** (counters and histograms; each instance, each ``--workers`` process,
  exposes its own, so sum them in PromQL): the call sessions of this process publish to
  ``server.core.live.hub``; ``Metrics.observe`` listens (a few dict operations per event, on
  the event loop, never I/O). Turn latency is the ``latency_ms`` the session stores on each
  agent turn (from the caller's turn, or the trigger, to the reply's first audio frame sent);
  a turn event whose ``data["timings"]`` holds per-stage figures (ms) feeds the stage
  histogram too. Event-loop lag: the overload's probe (``server/core/overload.py``: one task
  sleeping 0.1 s) hands each wakeup's lateness to ``observe_lag``, which also refreshes the
  gauges; ``dialgraph_ready`` is 1 while this process takes new calls (``/healthz``), else 0. The event writer's counters (rows refused, dropped) are read at scrape.
* **Process signals** (``hub.notify``, see ``server/core/live.py``): a speech provider that
  failed and whether its chain fell back to the next one (``telephony/speech/fallback.py``),
  a call refused by a limit (``routes/twilio.py``), each checkpoint write's time (the savers
  of ``graphs/checkpoint.py``: two ``perf_counter`` calls and a listener call per write), and
  the cost each usage record adds to a call, by component (``core/costs.py record_usage``;
  only amounts in USD, the price table's default currency, count in ``dialgraph_cost_usd``).
* **Several worker processes** (``dialgraph serve --workers N``): the serve command makes a
  fresh directory and sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start
  (``Settings.metrics_multiproc_dir``); prometheus_client then keeps every value in a file
  per process there, and a scrape (whichever worker takes it) sums them all with
  ``MultiProcessCollector`` (read in a worker thread: files, not the event loop). The
  per-process gauges use ``livesum`` (sessions here, writer counters, ``dialgraph_processes``:
  the workers alive) and are refreshed by the loop-lag task; a worker that exits marks
  itself dead (``mark_process_dead``), and a scrape marks any worker whose pid is gone.
  The counters of a dead worker still count.
* **The database, at scrape time** (gauges, the same on every instance: use ``max``): calls
  in progress (``limits.LIVE_SQL``, the partial index ``ix_calls_live``) and calls refused by
  a rate limit in the last hour, and the cost of the last day's calls (``calls.cost_total``).
  Three reads of indexed ranges (``ix_calls_live``, ``ix_calls_started``) per scrape.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select, text

from dialgraph.server.core.enums import CallOutcome
from dialgraph.server.core.limits import LIVE_HORIZON, LIVE_SQL
from dialgraph.server.core.live import (
    CheckpointWrite,
    CostRecorded,
    LiveEvent,
    ProviderFailed,
    RateLimited,
    Recorded,
    SessionEnded,
    SessionStarted,
    Signal,
)
from dialgraph.server.core.models import Call, utcnow
from dialgraph.server.core.settings import Settings

router = APIRouter(tags=["metrics"])

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
# How a session that recorded no ending of its own ended (CallSession.state.end_reason).
_SESSION_ENDS = {
    "stop": "stream_stopped",  # Twilio stopped the stream: the caller hung up, or a <Dial>/hang-up took over
    "socket closed": "dropped",  # Twilio may reconnect the call (a resumed session follows)
    "inbound timeout": "dropped",
    "error": "error",
    "server closing": "server_closing",
    "closed": "closed",
}
_NAMED_ENDS = {CallOutcome.OPTED_OUT, CallOutcome.NOT_INTERESTED, CallOutcome.MAX_CALL_LENGTH}


class _SqlGauges:
    """The gauges read from SQL at scrape time (the same on every instance and worker): a
    collector of the last values read, so a multiprocess scrape adds them once."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, float]] = {
            "dialgraph_calls_live": ("Calls in progress, every instance (from SQL at scrape time)", 0.0),
            "dialgraph_calls_rate_limited_last_hour": (
                "Calls refused by a rate limit in the last hour, every instance (from SQL at scrape time)",
                0.0,
            ),
            "dialgraph_calls_cost_last_day": (
                "Cost of the calls started in the last 24 hours (calls.cost_total, the price table's currency), "
                "every instance",
                0.0,
            ),
        }

    def set(self, name: str, value: float) -> None:
        self.values[name] = (self.values[name][0], value)

    def collect(self) -> Iterator[Metric]:
        for name, (doc, value) in self.values.items():
            yield GaugeMetricFamily(name, doc, value=value)


class Metrics:
    """This process's metrics, in a registry of its own (one per app); with
    ``multiproc_dir`` (``dialgraph serve --workers N``), every worker's, summed at scrape."""

    def __init__(self, multiproc_dir: Path | None = None) -> None:
        if multiproc_dir is not None and values.ValueClass is values.MutexValue:
            raise RuntimeError(
                "metrics_multiproc_dir is set but prometheus_client is not in multiprocess mode: "
                "PROMETHEUS_MULTIPROC_DIR must be in the environment before the process starts (dialgraph serve sets it)"
            )
        self.multiproc_dir = multiproc_dir
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.sql = _SqlGauges()
        r.register(self.sql)
        self.calls_started = Counter(
            "dialgraph_calls_started",
            "Calls whose media session began on this process",
            ["flow", "direction"],
            registry=r,
        )
        self.sessions_resumed = Counter(
            "dialgraph_sessions_resumed",
            "Media sessions of a call that resumed on this process (reconnect, failed transfer)",
            ["flow", "direction"],
            registry=r,
        )
        self.calls_ended = Counter(
            "dialgraph_calls_ended",
            "Media sessions that ended on this process, by outcome (the agent's ending, a transfer, or how the stream ended)",
            ["flow", "direction", "outcome"],
            registry=r,
        )
        self.turn_latency = Histogram(
            "dialgraph_turn_latency_seconds",
            "Agent reply latency: caller's turn (or trigger) to the reply's first audio sent",
            ["flow", "trigger"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turn_stage = Histogram(
            "dialgraph_turn_stage_seconds",
            "Per-stage turn timings stored with an agent turn (data.timings), from the caller's end of speech",
            ["flow", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turns = Counter("dialgraph_turns", "Transcript turns recorded", ["flow", "role"], registry=r)
        self.barge_ins = Counter("dialgraph_barge_ins", "Agent replies cut by the caller", ["flow"], registry=r)
        self.preemptive_replies = Counter(
            "dialgraph_preemptive_replies",
            "Replies started at the caller's pause: confirmed (sent) or discarded (other words; tokens spent)",
            ["flow", "outcome"],
            registry=r,
        )
        self.reply_errors = Counter(
            "dialgraph_reply_errors", "Replies that failed, by stage (graph, tts...)", ["flow", "stage"], registry=r
        )
        self.transfers = Counter("dialgraph_transfers_requested", "Transfers the agent started", ["flow"], registry=r)
        live: Literal["livesum"] = "livesum"  # per-process gauges: summed over the workers alive
        self.sessions_here = Gauge(
            "dialgraph_sessions_active",
            "Media sessions in progress (this process; summed over workers)",
            registry=r,
            multiprocess_mode=live,
        )
        self.events_refused = Gauge(
            "dialgraph_call_events_refused",
            "Call events refused by the writer (backlog full), summed over workers",
            registry=r,
            multiprocess_mode=live,
        )
        self.events_dropped = Gauge(
            "dialgraph_call_events_dropped",
            "Call events the database refused, summed over workers",
            registry=r,
            multiprocess_mode=live,
        )
        self.processes = Gauge(
            "dialgraph_processes",
            "Server processes whose metrics this scrape holds (workers alive)",
            registry=r,
            multiprocess_mode=live,
        )
        self.processes.set(1)
        self.ready = Gauge(
            "dialgraph_ready",
            "1 while this process takes new calls (GET /healthz 200), 0 past [overload]'s limit; summed over workers",
            registry=r,
            multiprocess_mode=live,
        )
        self.provider_errors = Counter(
            "dialgraph_provider_errors",
            "Speech provider failures in a fallback chain, by kind (asr, tts) and provider",
            ["kind", "provider"],
            registry=r,
        )
        self.provider_fallbacks = Counter(
            "dialgraph_provider_fallbacks",
            "Fallback activations: a chain moved past the failed provider to the next one",
            ["kind", "provider"],
            registry=r,
        )
        self.rate_limited = Counter(
            "dialgraph_calls_rate_limited",
            "Calls refused by a limit on this process (rule: the limit's key)",
            ["flow", "rule"],
            registry=r,
        )
        self.checkpoint_write = Histogram(
            "dialgraph_checkpoint_write_seconds",
            "Checkpoint saver writes (op: put, put_writes), wall time including the database round trip",
            ["op"],
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        self.cost_usd = Counter(
            "dialgraph_cost_usd",
            "Cost of calls in USD by component (telephony, asr, llm, tts), as usage is recorded",
            ["component", "flow"],
            registry=r,
        )
        self._follow: list[tuple[Gauge, Callable[[], float]]] = []
        self.loop_lag = Histogram(
            "dialgraph_event_loop_lag_seconds",
            "How late the overload probe's 0.1 s sleep on this process's event loop woke up",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._calls: dict[str, tuple[str, str, str | None]] = {}  # live session -> (flow, direction, ending)

    # --- the event loop's lag (the overload probe's samples) ---------------------------------
    def observe_lag(self, lag_s: float) -> None:
        """One wakeup of the lag probe, ``lag_s`` late; the followed gauges refresh with it."""
        self.loop_lag.observe(max(0.0, lag_s))
        self.refresh()

    def follow(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Keep ``gauge`` at ``read()`` (refreshed by the loop-lag task and at scrape)."""
        self._follow.append((gauge, read))
        gauge.set(read())

    def refresh(self) -> None:
        for gauge, read in self._follow:
            gauge.set(read())

    async def aclose(self) -> None:
        if self.multiproc_dir is not None:  # this worker's live gauges stop counting
            multiprocess.mark_process_dead(os.getpid(), str(self.multiproc_dir))

    # --- exposition ---------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The text format: this registry, or (multiprocess) every worker's files plus the SQL
        gauges. The multiprocess form reads files: call it off the event loop."""
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        path = str(self.multiproc_dir)
        _mark_gone_workers(path)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        registry.register(self.sql)
        return generate_latest(registry)

    # --- process signals (hub.notify) ---------------------------------------------------------
    def signal(self, item: Signal) -> None:
        if isinstance(item, CheckpointWrite):
            self.checkpoint_write.labels(item.op).observe(item.seconds)
        elif isinstance(item, ProviderFailed):
            self.provider_errors.labels(item.kind, item.provider).inc()
            if item.fell_back:
                self.provider_fallbacks.labels(item.kind, item.provider).inc()
        elif isinstance(item, RateLimited):
            self.rate_limited.labels(item.flow, item.rule).inc()
        elif isinstance(item, CostRecorded) and item.currency.upper() == "USD":
            for component, amount in item.added:
                if amount > 0:
                    self.cost_usd.labels(component, item.flow).inc(amount)

    # --- fed by the live hub (on the event loop; cheap; never raises past the hub) -----------
    def observe(self, item: LiveEvent) -> None:
        if isinstance(item, Recorded):
            self._recorded(item)
        elif isinstance(item, SessionStarted):
            self.sessions_here.inc()
            self._calls[item.call_sid] = (item.flow, item.direction, None)
            counter = self.sessions_resumed if item.resumed else self.calls_started
            counter.labels(item.flow, item.direction).inc()
        elif isinstance(item, SessionEnded):
            self.sessions_here.dec()
            _, _, ending = self._calls.pop(item.call_sid, (item.flow, item.direction, None))
            outcome = ending or _SESSION_ENDS.get(item.reason, "other")
            self.calls_ended.labels(item.flow, item.direction, outcome).inc()
            if item.barge_ins:
                self.barge_ins.labels(item.flow).inc(item.barge_ins)
            if item.preempted:
                self.preemptive_replies.labels(item.flow, "confirmed").inc(item.preempted)
            if item.preempts_discarded:
                self.preemptive_replies.labels(item.flow, "discarded").inc(item.preempts_discarded)

    def _recorded(self, item: Recorded) -> None:
        event = item.event
        flow, direction, _ = self._calls.get(item.call_sid, ("", "", None))
        kind, data = event.kind or "turn", event.data or {}
        if kind == "turn":
            role = event.role or ""
            self.turns.labels(flow, role).inc()
            if role == "agent" and event.latency_ms is not None and not event.interrupted:
                self.turn_latency.labels(flow, str(data.get("trigger", ""))).observe(event.latency_ms / 1000)
            timings = data.get("timings")
            if role == "agent" and isinstance(timings, Mapping):
                for stage, ms in timings.items():
                    if isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0:
                        self.turn_stage.labels(flow, str(stage)).observe(ms / 1000)
        elif kind == "error":
            self.reply_errors.labels(flow, str(data.get("stage", ""))).inc()
        elif kind == "transfer":
            self.transfers.labels(flow).inc()
            self._calls[item.call_sid] = (flow, direction, CallOutcome.TRANSFER_REQUESTED.value)
        elif kind == "end_call" and item.call_sid in self._calls:
            reason = str(data.get("reason", ""))
            ending = reason if reason in _NAMED_ENDS else CallOutcome.ENDED_BY_AGENT.value
            self._calls[item.call_sid] = (flow, direction, ending)


def _authorised(request: Request, settings: Settings) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        token = given.strip().encode("utf-8")
        for secret in (settings.metrics_token, settings.admin_token):
            expected = secret.get_secret_value().encode("utf-8")
            if expected and hmac.compare_digest(token, expected):
                return True
    if settings.env == "dev" and settings.metrics_open_on_loopback and request.client is not None:
        try:
            return ipaddress.ip_address(request.client.host).is_loopback
        except ValueError:
            return False
    return False


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    services = request.app.state.services
    settings: Settings = services.settings
    if not _authorised(request, settings):
        raise HTTPException(status_code=401, detail="metrics token required", headers={"WWW-Authenticate": "Bearer"})
    m: Metrics = services.metrics
    now = utcnow()
    live = select(func.count()).select_from(Call).where(text(LIVE_SQL), Call.started_at > now - LIVE_HORIZON)
    refused = (
        select(func.count())
        .select_from(Call)
        .where(Call.started_at > now - dt.timedelta(hours=1), Call.outcome == CallOutcome.RATE_LIMITED.value)
    )
    cost = select(func.coalesce(func.sum(Call.cost_total), 0.0)).where(Call.started_at > now - dt.timedelta(days=1))
    async with services.db.engine.connect() as conn:
        m.sql.set("dialgraph_calls_live", int((await conn.execute(live)).scalar_one()))
        m.sql.set("dialgraph_calls_rate_limited_last_hour", int((await conn.execute(refused)).scalar_one()))
        m.sql.set("dialgraph_calls_cost_last_day", float((await conn.execute(cost)).scalar_one()))
    m.refresh()
    body = m.exposition() if m.multiproc_dir is None else await asyncio.to_thread(m.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


_LIVE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def _mark_gone_workers(path: str) -> None:
    """Mark dead the workers whose live-gauge files remain but whose process is gone (one
    that crashed never ran its ``aclose``)."""
    pids = {int(m.group(1)) for name in os.listdir(path) if (m := _LIVE_FILE.match(name))}
    for pid in pids - {os.getpid()}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:  # alive, someone else's
            pass
