"""OpenTelemetry spans of this process's calls (opt-in: ``[tracing] otlp_endpoint``).

Off by default, and then nothing here imports OpenTelemetry: the packages are the optional
extra ``dialgraph[tracing]`` (``opentelemetry-sdk`` + ``opentelemetry-exporter-otlp-proto-http``),
imported by ``CallTracer.from_settings`` only when an endpoint is configured.

What a trace holds, one per media session (a resumed call has one per stream):

* ``call`` (the root): ``dialgraph.call_sid``, ``dialgraph.flow``, ``dialgraph.direction``,
  ``dialgraph.end_reason``, ``dialgraph.barge_ins``; from the session's start to its end.
* ``turn`` (a child per agent reply): from the caller's end of speech (else the trigger) to
  the reply's end; ``dialgraph.trigger``, ``dialgraph.generation``, ``dialgraph.interrupted``
  and each stage's end in ms from that origin (``dialgraph.asr_final_ms``,
  ``dialgraph.first_token_ms``, ``dialgraph.first_tts_audio_ms``, ``dialgraph.first_frame_ms``).
* the turn's stages, children of it, back to back: ``asr_final`` (end of speech to the
  final transcript, the turn taken), ``graph_run`` (to the graph's first text),
  ``tts_first_audio`` (to the synthesiser's first audio), ``first_frame_sent`` (to the
  first media frame sent). A stage that did not happen has no span.

How it stays off the audio path: the session keeps its timings as it always does (a few
floats per reply) and, when it ends, hands its timeline to the hub (``SessionTraced``,
only while a tracer listens); the tracer builds the spans with their recorded start and
end times, and the SDK's ``BatchSpanProcessor`` exports them from its own thread. No
transcript, number or name goes into a span (the call SID is Twilio's id, not personal).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from dialgraph.server.core.live import LiveHub, SessionTraced, Signal, TurnSpan

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

STAGES = (  # span name, start attribute, end attribute of TurnSpan
    ("asr_final", "origin", "asr_final"),
    ("graph_run", "asr_final", "first_token"),
    ("tts_first_audio", "first_token", "first_tts_audio"),
    ("first_frame_sent", "first_tts_audio", "first_frame"),
)
MARKS = ("asr_final", "first_token", "first_tts_audio", "first_frame")


class TracingSettings(BaseModel):
    """``[tracing]``: OpenTelemetry spans per call and per turn, exported over OTLP/HTTP."""

    model_config = ConfigDict(extra="forbid")

    otlp_endpoint: str = Field(
        default="",
        description="OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces; empty: tracing off",
    )
    service_name: str = Field(default="dialgraph", min_length=1, description="the resource's service.name")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers sent with each export")

    @property
    def enabled(self) -> bool:
        return bool(self.otlp_endpoint)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class CallTracer:
    """Turns each ended session's timeline into spans (``observe``, a hub signal listener)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("dialgraph")
        self._hub: LiveHub | None = None

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> CallTracer:
        """A tracer exporting over OTLP/HTTP through a ``BatchSpanProcessor`` (its own thread)."""
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "[tracing] otlp_endpoint is set but OpenTelemetry is not installed: pip install 'dialgraph[tracing]'"
            ) from exc
        provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, headers=dict(settings.headers) or None)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    # --- the hub ----------------------------------------------------------------------------
    def attach(self, hub: LiveHub) -> None:
        hub.add_signal_listener(self.observe)
        hub.tracers += 1
        self._hub = hub

    def detach(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.remove_signal_listener(self.observe)
            hub.tracers -= 1

    async def aclose(self) -> None:
        """Stop listening, then flush and stop the exporter (off the event loop: it may wait
        on the network)."""
        self.detach()
        await asyncio.to_thread(self.provider.shutdown)

    def observe(self, item: Signal) -> None:
        if isinstance(item, SessionTraced):
            self.session(item)

    # --- spans ------------------------------------------------------------------------------
    def session(self, s: SessionTraced) -> None:
        from opentelemetry import trace

        call = self._tracer.start_span(
            "call",
            start_time=_ns(s.started),
            attributes={
                "dialgraph.call_sid": s.call_sid,
                "dialgraph.flow": s.flow,
                "dialgraph.direction": s.direction,
                "dialgraph.end_reason": s.reason,
                "dialgraph.barge_ins": s.barge_ins,
                "dialgraph.turns": len(s.turns),
            },
        )
        parent = trace.set_span_in_context(call)
        for turn in s.turns:
            self._turn(turn, parent, s.ended)
        call.end(end_time=_ns(max(s.ended, s.started)))

    def _turn(self, t: TurnSpan, parent: Any, session_end: float) -> None:
        from opentelemetry import trace

        attributes: dict[str, Any] = {
            "dialgraph.trigger": t.trigger,
            "dialgraph.generation": t.generation,
            "dialgraph.interrupted": t.interrupted,
        }
        for mark in MARKS:
            at = getattr(t, mark)
            if at is not None:
                attributes[f"dialgraph.{mark}_ms"] = round((at - t.origin) * 1000, 1)
        marks = [at for at in (t.done, *(getattr(t, m) for m in MARKS)) if at is not None]
        end = t.done if t.done is not None else max([*marks, t.origin]) if marks else session_end
        span = self._tracer.start_span("turn", context=parent, start_time=_ns(t.origin), attributes=attributes)
        inner = trace.set_span_in_context(span)
        for name, start_attr, end_attr in STAGES:
            start, stop = getattr(t, start_attr), getattr(t, end_attr)
            if start is None or stop is None:
                continue
            stage = self._tracer.start_span(name, context=inner, start_time=_ns(start))
            stage.end(end_time=_ns(max(start, stop)))
        span.end(end_time=_ns(max(end, t.origin)))
