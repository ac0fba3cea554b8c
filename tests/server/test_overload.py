"""Graceful overload (``server/core/overload.py``): past ``[overload]``'s limit a process
refuses NEW calls with a short "all lines are busy" and tells the load balancer it is not
ready, while the calls it holds go on; and its media socket never negotiates compression.

Whole calls run over the real WebSocket against the app under uvicorn with ``dialgraph
serve``'s own options (``tests.fakes.sim_server.serving``), webhooks signed as Twilio signs them;
the lag test stalls the server's event loop through a route this test adds to its own app."""

from __future__ import annotations

import asyncio
import json
import os
import time
import xml.etree.ElementTree as ET
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection, connect

from dialgraph.server.app import create_app
from dialgraph.server.core.call_store import get_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.enums import CallOutcome
from dialgraph.server.core.flow_config import default_flows
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.overload import (
    BUSY_MESSAGES,
    LOOP_LAG_RULE,
    MAX_CALLS_RULE,
    LoopLagMonitor,
    Overload,
    OverloadSettings,
)
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.process import ServerProcess, free_port, server_env
from dialgraph.telephony.simulator.twiml import ConnectVerb, HangupVerb, SayVerb, Verb, parse_twiml
from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake
from dialgraph.telephony.simulator.webhooks import TwilioWebhookClient, call_params, new_call_sid, new_sid
from dialgraph.telephony.speech.vad import EnergyVad
from tests.fakes.sim_server import serving
from tests.fakes.speech import NullRecognizer, NullSynthesizer
from tests.telephony.harness import TwilioMediaClient, handshake_signature

WAIT_S = 20.0  # a safety net against hangs, not a timing assertion


# --- the pieces, driven directly ------------------------------------------------------------------
def test_lag_window_p99_ignores_one_late_tick_but_a_stall_counts_the_ticks_it_swallowed() -> None:
    lag = LoopLagMonitor(every_s=0.1, window_s=10.0)  # 100 samples
    for _ in range(99):
        lag.record(0.001)
    lag.record(0.09)  # one late wakeup, shorter than the interval
    assert lag.p99_ms() == pytest.approx(1.0) and lag.max_ms() == pytest.approx(90.0)
    lag.record(0.5)  # a 500 ms stall: this tick, and the 4 it swallowed (400, 300, 200, 100 ms late)
    assert lag.p99_ms() == pytest.approx(400.0) and lag.max_ms() == pytest.approx(500.0)
    for _ in range(100):  # the window moves on
        lag.record(0.002)
    assert lag.p99_ms() == pytest.approx(2.0) and lag.max_ms() == pytest.approx(2.0)


def test_admitted_calls_count_until_their_stream_opens_or_the_hold_runs_out() -> None:
    now = [100.0]
    live: dict[str, object] = {}
    overload = Overload(OverloadSettings(max_calls=2, admission_hold_s=10), live, clock=lambda: now[0])
    assert overload.admit("CA1") is None and overload.admit("CA2") is None
    assert overload.admit("CA3") == MAX_CALLS_RULE  # two admitted in a burst, no stream open yet
    assert overload.admit("CA1") is None  # Twilio retrying an admitted call's webhook
    live["CA1"] = object()  # CA1's stream opened: counted once
    assert overload.calls() == 2 and not overload.state().ready
    now[0] += 10.5  # CA2's stream never came
    assert overload.calls() == 1
    assert overload.admit("CA3") is None
    assert overload.state().report()["reason"] == MAX_CALLS_RULE


def test_no_limit_by_default_and_the_lag_rule_reads_the_p99() -> None:
    live = {f"CA{i}": object() for i in range(500)}
    assert Overload(OverloadSettings(), live).admit("CAnew") is None  # off by default
    lag = LoopLagMonitor(every_s=0.1, window_s=1.0)
    overload = Overload(OverloadSettings(max_loop_lag_ms=150), {}, lag=lag)
    lag.record(0.12)  # 120 ms: under the limit
    assert overload.state().ready
    lag.record(0.25)  # 250 ms (and 150 ms for the tick it swallowed)
    state = overload.state()
    assert state.reason == LOOP_LAG_RULE and state.report()["ready"] is False
    assert overload.admit("CA1") == LOOP_LAG_RULE


def test_busy_message_in_the_flows_language(tmp_path: Path) -> None:
    s = OverloadSettings()
    assert s.busy_message("en") == (BUSY_MESSAGES["en"], "en-US")
    assert s.busy_message("en-IN") == (BUSY_MESSAGES["en"], "en-IN")
    assert s.busy_message("hi") == (BUSY_MESSAGES["hi"], "hi-IN")
    assert s.busy_message("hi-en") == (BUSY_MESSAGES["hi"], "hi-IN")
    assert OverloadSettings(message="Try later.").busy_message("hi-en") == ("Try later.", "hi-IN")
    config = tmp_path / "dialgraph.toml"
    config.write_text("[overload]\nmax_calls = 150\nmax_loop_lag_ms = 200\n")
    settings = Settings(config_file=config, data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert (settings.overload.max_calls, settings.overload.max_loop_lag_ms) == (150, 200)
    config.write_text("[overload]\nmax_cals = 150\n")
    with pytest.raises(ValueError, match="max_cals"):
        Settings(config_file=config, data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]


# --- whole calls over the real WebSocket ----------------------------------------------------------
def _settings(tmp_path: Path, database_url: str, port: int, **values: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        database_url=database_url,
        public_url=f"http://127.0.0.1:{port}",
        log_level="WARNING",
        _env_file=None,
        **values,
    )


def _twilio(http: httpx.AsyncClient, settings: Settings) -> TwilioWebhookClient:
    return TwilioWebhookClient(
        http, public_url=settings.public_url, auth_token=settings.twilio_auth_token.get_secret_value()
    )


async def _voice(twilio: TwilioWebhookClient, sid: str, caller: str, to: str = "+15550009999") -> list[Verb]:
    response = await twilio.post("/twilio/voice", call_params(sid, from_number=caller, to_number=to, status="ringing"))
    assert response.status_code == 200
    return parse_twiml(response.content, base_url=twilio.public_url)


def _busy(verbs: list[Verb], text: str = BUSY_MESSAGES["en"]) -> bool:
    return verbs == [SayVerb(text=text), HangupVerb()]


def _token(verbs: list[Verb]) -> str:
    connect = next(v for v in verbs if isinstance(v, ConnectVerb))
    assert connect.stream is not None
    return connect.stream.parameters["token"]


async def _refusal_rule(db: Database, sid: str) -> str:
    call = await get_call(db, sid)
    assert call is not None and call.outcome == CallOutcome.RATE_LIMITED
    async with db.sessionmaker() as s:
        events = (await s.scalars(select(CallEvent).where(CallEvent.call_sid == sid))).all()
    assert [e.kind for e in events] == ["rate_limited"]
    return str((events[0].data or {})["rule"])


async def _until_ready(http: httpx.AsyncClient) -> dict[str, Any]:
    async with asyncio.timeout(WAIT_S):
        while (health := await http.get("/healthz")).status_code != 200:
            await asyncio.sleep(0.05)
    body: dict[str, Any] = health.json()
    return body


def _extensions(ws: ClientConnection) -> tuple[str, str | None]:
    """The handshake's ``Sec-WebSocket-Extensions``: what the client offered, what the server took."""
    assert ws.request is not None and ws.response is not None
    return ws.request.headers["Sec-WebSocket-Extensions"], ws.response.headers.get("Sec-WebSocket-Extensions")


class Caller:
    """One call's media stream, kept alive with silence (as Twilio streams it)."""

    def __init__(self, client: TwilioMediaClient) -> None:
        self.client = client
        self._keepalive: asyncio.Task[None] | None = None

    async def greeted(self, token: str) -> None:
        await self.client.start(token)
        self._keepalive = asyncio.create_task(self._silence())
        await self.client.until(lambda m: m["event"] == "media")  # the agent's greeting: the session runs

    async def _silence(self) -> None:
        while True:
            await self.client.media(frames=5)
            await asyncio.sleep(0.1)

    async def hang_up(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.gather(self._keepalive, return_exceptions=True)
        await self.client.stop()
        await self.client.drain_until_closed()


async def test_past_max_calls_new_calls_hear_busy_and_healthz_is_503_until_a_call_ends(
    tmp_path: Path, database_url: str
) -> None:
    """max_calls = 2: two live calls; the third /twilio/voice gets the busy <Say> + <Hangup/>
    (a rate_limited row, rule overload.max_calls) and /healthz and /readyz say 503; the
    live calls go on; one hangs up: ready again and the next call is admitted and greeted.
    The media socket was offered permessage-deflate (the websockets default) and took none."""
    port = free_port()
    settings = _settings(tmp_path, database_url, port, overload=OverloadSettings(max_calls=2))
    media_url = f"ws://127.0.0.1:{port}/twilio/media"
    async with (
        serving(settings) as app,
        httpx.AsyncClient(base_url=settings.public_url, timeout=WAIT_S) as http,
        AsyncExitStack() as stack,
    ):
        twilio, db = _twilio(http, settings), app.state.services.db
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.json() | {"loop_lag_p99_ms": 0, "loop_lag_max_ms": 0} == {
            "status": "ok",
            "ready": True,
            "calls": 0,
            "max_calls": 2,
            "loop_lag_p99_ms": 0,
            "loop_lag_max_ms": 0,
            "max_loop_lag_ms": 0,
        }

        async def call(n: int) -> Caller:
            sid = new_call_sid()
            verbs = await _voice(twilio, sid, caller=f"+1415555020{n}")
            client = await stack.enter_async_context(
                TwilioMediaClient.connect(media_url, settings, call_sid=sid, stream_sid=new_sid("MZ"))
            )
            caller = Caller(client)
            await caller.greeted(_token(verbs))
            return caller

        first, second = await call(1), await call(2)
        offered, answered = _extensions(first.client.ws)
        assert "permessage-deflate" in offered and answered is None  # offered (the websockets default), declined
        assert len(app.state.active_calls) == 2

        refused_sid = new_call_sid()
        verbs = await _voice(twilio, refused_sid, caller="+14155550203")
        assert _busy(verbs)
        assert await _refusal_rule(db, refused_sid) == MAX_CALLS_RULE
        health = await http.get("/healthz")
        assert health.status_code == 503
        assert health.json()["ready"] is False and health.json()["reason"] == MAX_CALLS_RULE
        assert health.json()["calls"] == 2
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json() == {"status": "overloaded", "reason": MAX_CALLS_RULE}
        assert (await http.get("/livez")).status_code == 200

        # the calls in progress were not touched: both still live, still streaming the agent's audio
        assert len(app.state.active_calls) == 2
        for caller in (first, second):
            since = len(caller.client.received)
            await caller.client.until(lambda m: m["event"] in ("media", "mark"))
            assert len(caller.client.received) > since

        await first.hang_up()
        assert (await _until_ready(http))["calls"] == 1
        third = await call(3)  # admitted: answered with a stream, and greeted
        assert len(app.state.active_calls) == 2
        assert (await http.get("/healthz")).status_code == 503  # full again
        assert _busy(await _voice(twilio, new_call_sid(), caller="+14155550204"))
        for caller in (second, third):
            await caller.hang_up()


async def test_a_stalled_event_loop_refuses_new_calls_until_the_lag_window_clears(tmp_path: Path) -> None:
    """max_loop_lag_ms = 300 over a 1 s window: a route of this test's own app blocks the
    server's loop for a second; /healthz turns 503 (overload.max_loop_lag_ms) and a new call
    on a Hinglish flow hears the busy message in Hindi; a second later, ready again and the
    next call is admitted."""
    flows = default_flows()
    flows["support"] = flows["support"].model_copy(update={"language": "hi-en"})
    settings = _settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'dialgraph.db'}",
        8000,
        numbers={"+15550004000": "support"},
        flows=flows,
        overload=OverloadSettings(max_loop_lag_ms=300, loop_lag_window_s=1.0),
    )
    app = create_app(
        settings, overrides=Overrides(recognizer=NullRecognizer(), synthesizer=NullSynthesizer(), vad_factory=EnergyVad)
    )

    async def stall() -> dict[str, str]:
        time.sleep(1.0)  # deliberately blocks the event loop (test only)
        return {"stalled": "1 s"}

    app.add_api_route("/test/stall", stall, methods=["POST"])
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=WAIT_S) as http,
    ):
        twilio, db = _twilio(http, settings), app.state.services.db
        await _until_ready(http)
        async with asyncio.timeout(WAIT_S):  # the probe is running (its first sleep began)
            while not app.state.overload.lag.samples:
                await asyncio.sleep(0.05)
        stalled = await http.post("/test/stall")
        assert stalled.json() == {"stalled": "1 s"}, stalled.text
        await asyncio.sleep(0.2)  # the probe wakes up, a second late
        health = await http.get("/healthz")
        assert health.status_code == 503, str(health.json())
        body = health.json()
        assert body["reason"] == LOOP_LAG_RULE and body["loop_lag_max_ms"] >= 800 and body["calls"] == 0

        refused_sid = new_call_sid()
        response = await twilio.post(
            "/twilio/voice", call_params(refused_sid, from_number="+919812345678", to_number="+15550004000")
        )
        say = ET.fromstring(response.content).find("Say")
        assert say is not None and say.text == BUSY_MESSAGES["hi"] and say.get("language") == "hi-IN"
        assert await _refusal_rule(db, refused_sid) == LOOP_LAG_RULE

        body = await _until_ready(http)  # the stall left the 1 s window
        assert body["ready"] is True and body["loop_lag_p99_ms"] <= 300  # ready: p99 at most max_loop_lag_ms
        verbs = await _voice(twilio, new_call_sid(), caller="+919812345679", to="+15550004000")
        assert any(isinstance(v, ConnectVerb) for v in verbs)


@pytest.mark.slow
async def test_dialgraph_serve_takes_no_compression_and_reads_overload_from_the_environment(tmp_path: Path) -> None:
    """The real ``dialgraph serve`` process (what the demo and the simulator's server
    processes run): a client offering permessage-deflate gets a plain socket, and
    ``DIALGRAPH_OVERLOAD`` sets the limit /healthz reports."""
    async with DeepgramFake(["hello"]) as deepgram, ElevenLabsFake() as elevenlabs:
        env = server_env(
            os.environ,
            DIALGRAPH_DATA_DIR=str(tmp_path),
            DIALGRAPH_MODEL="offline",
            DIALGRAPH_LOG_LEVEL="WARNING",
            DIALGRAPH_OVERLOAD=json.dumps({"max_calls": 7}),
            **deepgram.env(),
            **elevenlabs.env(),
        )
        proc = ServerProcess("serve", env, tmp_path)
        proc.env["DIALGRAPH_PUBLIC_URL"] = proc.url
        try:
            await proc.start()
            async with httpx.AsyncClient(base_url=proc.url, trust_env=False) as http:
                health = await http.get("/healthz")
                assert health.status_code == 200
                assert health.json()["ready"] is True and health.json()["max_calls"] == 7
            settings = Settings(public_url=proc.url, _env_file=None)  # type: ignore[call-arg]
            url = proc.url.replace("http://", "ws://") + "/twilio/media"
            headers = {"X-Twilio-Signature": handshake_signature(settings)}
            async with connect(url, additional_headers=headers) as ws:
                offered, answered = _extensions(ws)
                assert "permessage-deflate" in offered and answered is None
        finally:
            await proc.aclose()


async def test_refuse_with_reject_and_a_burst_counted_before_its_streams_open(tmp_path: Path) -> None:
    """max_calls = 1 with ``refuse_with = "reject"``: a call admitted a moment ago counts
    before its stream opens, so the next one, in the same burst, gets ``<Reject reason="busy">``."""
    settings = _settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'dialgraph.db'}",
        8000,
        overload=OverloadSettings(max_calls=1, refuse_with="reject"),
    )
    app = create_app(
        settings, overrides=Overrides(recognizer=NullRecognizer(), synthesizer=NullSynthesizer(), vad_factory=EnergyVad)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=WAIT_S) as http,
    ):
        twilio = _twilio(http, settings)
        first, second = new_call_sid(), new_call_sid()
        assert any(isinstance(v, ConnectVerb) for v in await _voice(twilio, first, caller="+14155550301"))
        response = await twilio.post("/twilio/voice", call_params(second, from_number="+14155550302"))
        reject = ET.fromstring(response.content).find("Reject")
        assert reject is not None and reject.get("reason") == "busy"
        assert await _refusal_rule(app.state.services.db, second) == MAX_CALLS_RULE
        retried = await _voice(twilio, first, caller="+14155550301")  # Twilio retrying the admitted call's webhook
        assert any(isinstance(v, ConnectVerb) for v in retried)
        health = await http.get("/healthz")
        assert health.status_code == 503 and health.json()["calls"] == 1
