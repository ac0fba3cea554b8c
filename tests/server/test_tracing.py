"""OpenTelemetry spans of a whole simulated call (``[tracing]``): a ``call`` span with a
child ``turn`` span per agent reply, carrying the stage figures the call stored, and the
stage spans under each turn. Read twice: through the SDK's ``InMemorySpanExporter`` on the
process hub, and as OTLP/HTTP protobuf posted by the app's own exporter (configured by
``[tracing] otlp_endpoint``) to a receiver on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from dialgraph.server.core.db import Database
from dialgraph.server.core.live import hub
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.tracing import CallTracer, TracingSettings

STAGE_SPANS = {"asr_final", "graph_run", "tts_first_audio", "first_frame_sent"}


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """An OTLP/HTTP traces endpoint on loopback; every request it got, decoded."""
    got: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
            got.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def same_waterfall(span: ReadableSpan, timings: dict[str, float]) -> bool:
    """The turn span's stage figures are the stored turn's, to the rounding."""
    a = span.attributes or {}
    keys = ("asr_final_ms", "first_token_ms", "first_tts_audio_ms", "first_frame_ms")
    return all(abs(float(a[f"dialgraph.{k}"]) - timings[k]) <= 0.2 for k in keys)  # type: ignore[arg-type]


def test_tracing_is_off_by_default_and_names_its_keys() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert not settings.tracing.enabled and settings.tracing.service_name == "dialgraph"
    on = Settings(tracing={"otlp_endpoint": "http://127.0.0.1:4318/v1/traces", "service_name": "x"})  # type: ignore[arg-type]
    assert on.tracing == TracingSettings(otlp_endpoint="http://127.0.0.1:4318/v1/traces", service_name="x")


async def test_a_whole_call_is_traced(tmp_path: Path) -> None:
    from dialgraph.telephony.simulator.cli import simulate
    from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer
    from tests.fakes.sim_server import live_server

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    memory = CallTracer(provider)
    memory.attach(hub)
    try:
        with otlp_receiver() as (endpoint, received):
            tracing = {"otlp_endpoint": endpoint, "service_name": "dialgraph-test"}
            async with live_server(tmp_path, tracing=tracing) as server:
                assert hub.traced
                result = await simulate(
                    "sales_basic",
                    url=server.url,
                    admin_token="dev-admin-token",
                    synthesizer=TextSynthesizer(),
                    recognizer=TextRecognizer(),
                    database_url=server.database_url,
                    record=False,
                )
                assert result.ok, (result.checks, result.failures)
            # the app's tracer flushed its batch on the way out
    finally:
        memory.detach()
        provider.shutdown()
    assert not hub.traced

    db = Database(server.database_url)
    try:
        async with db.sessionmaker() as s:
            events = list(await s.scalars(select(CallEvent).where(CallEvent.call_sid == result.call_sid)))
    finally:
        await db.aclose()
    stored = [e for e in events if e.kind == "turn" and e.role == "agent" and not e.interrupted]

    spans = [s for s in exporter.get_finished_spans() if s.attributes is not None]
    [call] = [s for s in spans if s.name == "call" and s.attributes.get("dialgraph.call_sid") == result.call_sid]
    assert call.parent is None and call.attributes is not None
    assert call.attributes["dialgraph.flow"] == "sales" and call.attributes["dialgraph.direction"] == "inbound"
    assert call.start_time is not None and call.end_time is not None and call.end_time > call.start_time
    turns = [s for s in spans if s.name == "turn" and s.parent is not None and s.parent.span_id == call.context.span_id]
    assert len(turns) == call.attributes["dialgraph.turns"] >= len(stored) >= 2
    for span in turns:
        assert span.context.trace_id == call.context.trace_id
        assert call.start_time <= span.start_time <= span.end_time <= call.end_time  # type: ignore[operator]
    # each stored agent turn's waterfall is on a turn span, to the rounding
    for event in stored:
        timings = (event.data or {})["timings"]
        matching = [t for t in turns if same_waterfall(t, timings)]
        assert matching, (timings, [t.attributes for t in turns])
        turn = matching[0]
        assert turn.attributes is not None and turn.attributes["dialgraph.trigger"] == event.data["trigger"]  # type: ignore[index]
        stages = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == turn.context.span_id}
        assert set(stages) == STAGE_SPANS
        assert stages["asr_final"].start_time == turn.start_time
        for earlier, later in (("asr_final", "graph_run"), ("graph_run", "tts_first_audio")):
            assert stages[earlier].end_time == stages[later].start_time  # back to back

    # the same trace, over OTLP/HTTP from the app's own BatchSpanProcessor
    exported = [
        (resource.resource, span)
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = [span.name for _, span in exported]
    assert names.count("call") == 1 and names.count("turn") == len(turns)
    assert {n for n in names} == {"call", "turn"} | STAGE_SPANS
    service = {a.key: a.value.string_value for a in exported[0][0].attributes}["service.name"]
    assert service == "dialgraph-test"
