"""The composition root: ``create_app(settings)`` builds the FastAPI app and its services."""

from __future__ import annotations

import gc
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI

from dialgraph.server.core.call_events import CallEventWriter
from dialgraph.server.core.db import Database
from dialgraph.server.core.logging import configure_logging
from dialgraph.server.core.redaction import redactor_for
from dialgraph.server.core.reply_heard import ReplyProgressWriter
from dialgraph.server.core.settings import Settings
from dialgraph.server.routes import health
from dialgraph.server.services import Overrides, Services

log = structlog.get_logger(__name__)


async def build_services(settings: Settings, stack: AsyncExitStack, overrides: Overrides) -> Services:
    """Build every long-lived resource; each one's closing is pushed onto ``stack``."""
    db = overrides.db
    if db is None:
        db = Database(settings.effective_database_url)
        stack.push_async_callback(db.aclose)
        if settings.env == "dev":
            await db.upgrade()

    # One batched writer of heard progress for every call; closed (flushed) before the db.
    redactor = redactor_for(settings.redaction)
    reply_progress = await stack.enter_async_context(ReplyProgressWriter(db, interval_s=0.5, redactor=redactor))
    # One batched writer of every call's transcript and events; likewise closed before the db.
    call_events = await stack.enter_async_context(CallEventWriter(db, interval_s=1.0, redactor=redactor))

    recognizer = overrides.recognizer
    synthesizer = overrides.synthesizer
    vad_factory = overrides.vad_factory
    if recognizer is None or synthesizer is None or vad_factory is None:
        from dialgraph.telephony.speech import providers

        if recognizer is None:
            recognizer = await providers.build_recognizer(settings, stack)
        if synthesizer is None:
            synthesizer = await providers.build_synthesizer(settings, stack)
        if vad_factory is None:
            vad_factory = providers.build_vad_factory(settings)

    runners = overrides.runners
    if runners is None:
        from dialgraph.graphs.runtime import serve_runners

        runners = await serve_runners(settings, db, stack)

    call_control = overrides.call_control
    if call_control is None:
        from dialgraph.telephony.twilio.call_control import build_call_control

        call_control = build_call_control(settings)
        stack.push_async_callback(call_control.aclose)

    # [overload]: this process's load (its live sessions, event-loop lag); past the limit
    # /twilio/voice refuses new calls, /healthz answers 503 and no outbound call is placed.
    from dialgraph.server.core.overload import Overload
    from dialgraph.server.outbound.placer import OutboundPlacer
    from dialgraph.server.outbound.voicemail import VoicemailCache

    active_calls: dict[str, Any] = {}  # CallSid -> CallSession, kept by routes/media.py
    overload = Overload(settings.overload, active_calls)
    placer = OutboundPlacer(db, settings, call_control, overload=overload)
    if settings.outbound.dispatcher:
        from dialgraph.server.outbound.dispatcher import CampaignDispatcher

        dispatcher = CampaignDispatcher(
            db, settings, placer, call_control, instance_id=instance_id(), overload=overload
        )
        dispatcher.start()
        stack.push_async_callback(dispatcher.aclose)  # stops before the client and the db close

    # Prometheus metrics of this process, fed by the call sessions through the live hub.
    from dialgraph.server.core.live import hub
    from dialgraph.server.routes.metrics import Metrics

    metrics = Metrics(settings.metrics_multiproc_dir)  # set by `dialgraph serve --workers N`
    hub.add_listener(metrics.observe)
    stack.callback(hub.remove_listener, metrics.observe)
    hub.add_signal_listener(metrics.signal)  # provider failures, refusals, checkpoint writes, cost
    stack.callback(hub.remove_signal_listener, metrics.signal)
    metrics.follow(metrics.events_refused, lambda: call_events.refused)
    metrics.follow(metrics.events_dropped, lambda: call_events.dropped)
    metrics.follow(metrics.ready, lambda: float(overload.state().ready))
    overload.lag.listen(metrics.observe_lag)  # one event-loop lag probe feeds both
    stack.push_async_callback(metrics.aclose)
    if settings.tracing.enabled:  # [tracing]: OpenTelemetry spans per call and turn (opt-in)
        from dialgraph.server.core.tracing import CallTracer

        tracer = CallTracer.from_settings(settings.tracing)
        tracer.attach(hub)
        stack.push_async_callback(tracer.aclose)

    log.info(
        "services ready",
        env=settings.env,
        asr=settings.asr_provider if overrides.recognizer is None else type(recognizer).__name__,
        tts=settings.tts_provider if overrides.synthesizer is None else type(synthesizer).__name__,
        model=settings.model_spec,
        database=db.engine.url.get_backend_name(),
        flows=sorted(runners),
    )
    return Services(
        settings=settings,
        db=db,
        recognizer=recognizer,
        synthesizer=synthesizer,
        vad_factory=vad_factory,
        runners=runners,
        call_control=call_control,
        reply_progress=reply_progress,
        call_events=call_events,
        placer=placer,
        voicemail_cache=VoicemailCache(),
        metrics=metrics,
        overload=overload,
        active_calls=active_calls,
    )


def instance_id() -> str:
    """This process among the instances sharing the database (host, pid, a random part)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(3)}"


def create_app(settings: Settings, *, overrides: Overrides | None = None) -> FastAPI:
    """The dialgraph ASGI app. Long-lived resources live exactly as long as its lifespan."""
    configure_logging(settings.log_level, redactor=redactor_for(settings.redaction))
    if not settings.validate_signatures:
        log.warning("TWILIO SIGNATURE VALIDATION IS OFF: any client can drive this server (dev only)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.services = await build_services(settings, stack, overrides or Overrides())
            app.state.active_calls = app.state.services.active_calls
            app.state.overload = app.state.services.overload
            # [retention]: every instance prunes on a schedule (one at a time on PostgreSQL);
            # stopped before the services close.
            from dialgraph.server.privacy.retention import RetentionTask

            app.state.retention = RetentionTask(settings, app.state.services.db)
            app.state.retention.start()
            stack.push_async_callback(app.state.retention.aclose)
            # Post-call analysis: background tasks of calls that end here, and a sweeper for
            # ended calls nobody analysed (their instance died); stopped before the services.
            from dialgraph.server.analysis import PostCallAnalysis, build_parts

            services = app.state.services
            lag = services.overload.lag if services.overload is not None else None
            parts = build_parts(settings, services.runners, instance_id())
            app.state.analysis = PostCallAnalysis(services.db, parts, lag=lag)
            app.state.analysis.start()
            stack.push_async_callback(app.state.analysis.aclose)
            # [webhooks]: every instance delivers due webhook POSTs from the shared queue;
            # stopped before the services close.
            if settings.webhooks.worker and settings.webhook_endpoints():
                from dialgraph.server.webhooks.worker import WebhookWorker

                app.state.webhooks = WebhookWorker(app.state.services.db, settings, instance_id=instance_id())
                app.state.webhooks.start()
                stack.push_async_callback(app.state.webhooks.aclose)
            # Models, graphs and SDK modules are loaded for good: move them out of the
            # collector's sight so full collections stop pausing the audio path (~80 ms).
            gc.collect()
            gc.freeze()
            # Every frame, message and token allocates, so with Python's 700 the collector
            # ran ~12 young collections a second at 150 calls and full ones that walk every
            # live call's objects on the loop: ~4 % of the CPU (20000: ~0.5 %; issue 16's
            # note). Calls make little cyclic garbage; refcounting frees the rest at once.
            if settings.gc_threshold:
                gc.set_threshold(settings.gc_threshold, *gc.get_threshold()[1:])
            app.state.overload.start()  # the lag probe: started after the loads above, stopped first
            stack.push_async_callback(app.state.overload.aclose)
            try:
                yield
            finally:
                from dialgraph.server.routes.media import close_active_calls

                await close_active_calls(app)

    app = FastAPI(title="dialgraph", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    from dialgraph.server.routes import admin, calls_api, costs, media, metrics, outbound, people, twilio

    app.include_router(health.router)
    app.include_router(twilio.router)
    app.include_router(media.router)
    app.include_router(outbound.router)
    app.include_router(calls_api.router)  # before admin: /api/calls/live is not a call's sid
    app.include_router(admin.router)
    app.include_router(costs.router)
    app.include_router(metrics.router)
    app.include_router(people.router)
    from dialgraph.server.routes import webhooks

    app.include_router(webhooks.router)
    from dialgraph.server.routes import recordings

    app.include_router(recordings.api_router)
    app.include_router(recordings.dashboard_router)
    from fastapi.staticfiles import StaticFiles

    from dialgraph.server.dashboard import views as dashboard

    app.mount("/dashboard/static", StaticFiles(directory=dashboard.HERE / "static"), name="dashboard-static")
    app.include_router(dashboard.router)
    return app


def create_app_from_env() -> FastAPI:
    """``create_app`` with settings from the environment (and ``DIALGRAPH_CONFIG``): the
    factory each worker process calls under ``dialgraph serve --workers N``
    (``uvicorn dialgraph.server.app:create_app_from_env --factory``). Workers share nothing in
    memory: a call's state lives in the process that holds its socket, anything across
    calls is in the database."""
    return create_app(Settings())
