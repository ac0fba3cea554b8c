"""The simulator's Twilio REST API (Calls resource) driven by the real twilio client.

A tiny webhook receiver on 127.0.0.1 plays the application: it checks every request's
``X-Twilio-Signature`` with twilio-python's ``RequestValidator``, answers TwiML, serves a WAV
for ``<Play>`` and accepts Media Streams sockets, recording every message.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from dialgraph.telephony.simulator.cli import render_outbound, simulate_outbound
from dialgraph.telephony.simulator.process import free_port
from dialgraph.telephony.simulator.scenario import (
    Hangup,
    Say,
    ScenarioError,
    WaitForAgent,
    load_scenario,
    parse_scenario,
)
from dialgraph.telephony.simulator.text_speech import TextSynthesizer, decode_texts, encode_text
from dialgraph.telephony.simulator.twilio_api import Callee, TwilioApi
from dialgraph.telephony.simulator.twiml import PlayVerb, TwimlError, parse_twiml
from dialgraph.telephony.simulator.webhooks import wav_to_mulaw

ACCOUNT = "AC" + "1" * 32
TOKEN = "test-auth-token"
EVENTS = ["initiated", "ringing", "answered", "completed"]


def mulaw_wav(audio: bytes) -> bytes:
    """A WAV file holding 8 kHz mu-law (format 7), as Twilio accepts for <Play>."""
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    body = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(audio)) + audio
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


@dataclass
class Hit:
    path: str
    form: dict[str, str]
    valid: bool


@dataclass
class Receiver:
    """The application side: TwiML per callee number, every hit recorded with its signature check."""

    twiml: dict[str, str] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    sockets: list[list[dict[str, Any]]] = field(default_factory=list)
    stream_started: asyncio.Event = field(default_factory=asyncio.Event)
    amd: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    validator: RequestValidator = field(default_factory=lambda: RequestValidator(TOKEN))
    place: Callable[[dict[str, Any]], Awaitable[Response]] | None = None  # the server's POST /api/calls

    def of(self, path: str, sid: str | None = None) -> list[Hit]:
        return [h for h in self.hits if h.path == path and (sid is None or h.form.get("CallSid") == sid)]

    async def _api_calls(self, request: Request) -> Response:
        assert self.place is not None and request.headers["authorization"] == "Bearer dev-admin-token"
        return await self.place(await request.json())

    async def _form(self, request: Request) -> Response | None:
        form = {k: str(v) for k, v in (await request.form()).items()}
        sig = request.headers.get("x-twilio-signature", "")
        valid = bool(self.validator.validate(str(request.url), form, sig))
        self.hits.append(Hit(request.url.path, form, valid))
        if request.url.path == "/voice":
            return Response(self.twiml.get(form["To"], "<Response><Hangup/></Response>"), media_type="text/xml")
        if request.url.path == "/amd":
            self.amd.set()
        return Response("<Response/>", media_type="text/xml")

    async def _wav(self, request: Request) -> Response:
        valid = bool(self.validator.validate(str(request.url), {}, request.headers.get("x-twilio-signature", "")))
        self.hits.append(Hit(request.url.path, {}, valid))
        return Response(mulaw_wav(encode_text(request.query_params.get("say", "tone"))), media_type="audio/x-wav")

    async def _media(self, ws: WebSocket) -> None:
        await ws.accept()
        messages: list[dict[str, Any]] = []
        self.sockets.append(messages)
        try:
            while True:
                message = json.loads(await ws.receive_text())
                messages.append(message)
                if message["event"] == "start":
                    self.stream_started.set()
                if message["event"] == "stop":
                    break
        except WebSocketDisconnect:
            return
        await ws.close()

    def heard(self, socket: int = 0) -> list[str]:
        """What the callee said over a media stream (text speech decoded from its frames)."""
        import base64

        audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in self.sockets[socket] if m["event"] == "media")
        return decode_texts(audio)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = Starlette(
        routes=[
            Route("/{path:path}.wav", rec._wav, methods=["GET"]),
            Route("/api/calls", rec._api_calls, methods=["POST"]),
            Route("/{path:path}", rec._form, methods=["POST"]),
            WebSocketRoute("/media", rec._media),
        ]
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="websockets-sansio")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    rec.url = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def api() -> AsyncIterator[TwilioApi]:
    async with TwilioApi(account_sid=ACCOUNT, auth_token=TOKEN, poll_s=0.02) as fake:
        yield fake


@pytest.fixture
async def client(api: TwilioApi) -> AsyncIterator[Client]:
    http = AsyncTwilioHttpClient()
    rest = Client(ACCOUNT, TOKEN, http_client=http)
    rest.api.base_url = api.url
    try:
        yield rest
    finally:
        await http.close()


def place(client: Client, rec: Receiver, to: str, **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "to": to,
        "from_": "+15550100000",
        "url": rec.url + "/voice",
        "status_callback": rec.url + "/status",
        "status_callback_event": EVENTS,
    }
    args.update(kwargs)
    return client.calls.create_async(**args)


def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> Any:
    async def poll() -> None:
        async with asyncio.timeout(timeout_s):
            while not check():
                await asyncio.sleep(0.02)

    return poll()


async def test_a_human_answers_and_callbacks_arrive_signed_in_order(
    api: TwilioApi, receiver: Receiver, client: Client
) -> None:
    to = "+15557770001"
    api.callees[to] = Callee(kind="human", ring_s=0.2, amd_after_s=0.3)
    receiver.twiml[to] = (
        "<Response><Say>Hello Jane</Say><Play>/greeting.wav?say=Thanks%20for%20your%20time</Play><Hangup/></Response>"
    )
    created = await place(
        client,
        receiver,
        to,
        machine_detection="DetectMessageEnd",
        async_amd="true",
        async_amd_status_callback=receiver.url + "/amd",
        timeout=20,
    )
    assert created.sid.startswith("CA") and len(created.sid) == 34
    assert (created.status, created.direction, created.to, created._from) == (
        "queued",
        "outbound-api",
        to,
        "+15550100000",
    )
    assert created.date_created is not None

    call = await api.wait_ended(created.sid)
    assert all(h.valid for h in receiver.hits), [h for h in receiver.hits if not h.valid]
    statuses = [h.form["CallStatus"] for h in receiver.of("/status", created.sid)]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"]
    assert call.statuses() == statuses
    completed = receiver.of("/status", created.sid)[-1].form
    assert completed["AnsweredBy"] == "human" and int(completed["CallDuration"]) >= 1
    assert completed["Direction"] == "outbound-api" and completed["To"] == to
    (voice,) = receiver.of("/voice", created.sid)
    assert (voice.form["Direction"], voice.form["From"], voice.form["To"]) == ("outbound-api", "+15550100000", to)
    assert voice.form["CallStatus"] == "in-progress"
    (amd,) = receiver.of("/amd", created.sid)
    assert (amd.form["AnsweredBy"], amd.form["MachineDetectionDuration"], amd.form["AccountSid"]) == (
        "human",
        "300",
        ACCOUNT,
    )
    assert call.says == ["Hello Jane"]
    assert [decode_texts(p) for p in call.plays] == [["Thanks for your time"]]
    assert receiver.of("/greeting.wav") and call.hung_up_by == "agent" and call.status == "completed"

    fetched = await client.calls(created.sid).fetch_async()
    assert (fetched.status, fetched.answered_by) == ("completed", "human")
    assert fetched.duration == str(call.duration_s) and fetched.start_time is not None
    assert api.dials[to] == 1 and api.live == 0 and api.max_live == 1 and api.max_in_progress == 1


async def test_only_the_asked_events_and_the_calls_nobody_answers(
    api: TwilioApi, receiver: Receiver, client: Client
) -> None:
    api.callees.update(
        {
            "+15557770011": Callee(kind="busy", ring_s=0.1),
            "+15557770012": Callee(kind="no-answer", ring_s=0.2),
            "+15557770013": Callee(kind="failed"),
            "+15557770014": Callee(kind="human", ring_s=30),  # rings past the timeout
            "+15557770015": Callee(kind="human", ring_s=5),  # canceled while ringing
        }
    )
    busy, no_answer, failed, too_long, ringing = await asyncio.gather(
        place(client, receiver, "+15557770011", status_callback_event=["completed"]),
        place(client, receiver, "+15557770012"),
        place(client, receiver, "+15557770013", status_callback_event=["initiated", "completed"]),
        place(client, receiver, "+15557770014", timeout=5),
        place(client, receiver, "+15557770015"),
    )
    await wait_for(lambda: api.calls[ringing.sid].status == "ringing")
    canceled = await client.calls(ringing.sid).update_async(status="canceled")
    assert canceled.status == "canceled"
    ended = {c.sid: await api.wait_ended(c.sid, 10) for c in (busy, no_answer, failed, too_long, ringing)}

    def seen(sid: str) -> list[str]:
        return [h.form["CallStatus"] for h in receiver.of("/status", sid)]

    assert seen(busy.sid) == ["busy"]
    assert seen(no_answer.sid) == ["initiated", "ringing", "no-answer"]
    assert seen(failed.sid) == ["initiated", "failed"]
    assert seen(too_long.sid) == ["initiated", "ringing", "no-answer"]
    assert seen(ringing.sid) == ["initiated", "ringing", "canceled"]
    finals = [h for h in receiver.hits if h.form.get("CallStatus") not in ("initiated", "ringing")]
    assert len(finals) == 5 and all(h.form["CallDuration"] == "0" for h in finals)
    assert not receiver.of("/voice"), "nobody answered: no TwiML was requested"
    assert all(c.answered_at is None and c.hung_up_by is None for c in ended.values())
    assert ended[too_long.sid].ended_at - ended[too_long.sid].created_at >= 4.9  # type: ignore[operator]


async def test_a_voicemail_beeps_and_hears_the_message_after_a_rest_update(
    api: TwilioApi, receiver: Receiver, client: Client
) -> None:
    to = "+15557770021"
    api.callees[to] = Callee(kind="voicemail", ring_s=0.1, beep_after_s=0.4)
    receiver.twiml[to] = "<Response><Pause length='8'/></Response>"
    created = await place(
        client,
        receiver,
        to,
        machine_detection="DetectMessageEnd",
        async_amd="true",
        async_amd_status_callback=receiver.url + "/amd",
    )
    async with asyncio.timeout(5):
        await receiver.amd.wait()
    assert receiver.of("/amd")[0].form["AnsweredBy"] == "machine_end_beep"
    message = "<Response><Play>/vm.wav?say=Call%20us%20back</Play><Hangup/></Response>"
    updated = await client.calls(created.sid).update_async(twiml=message)
    assert updated.status == "in-progress"
    call = await api.wait_ended(created.sid)
    assert decode_texts(call.heard) == ["Call us back"]
    assert (call.answered_by, call.redirects, call.hung_up_by, call.status) == (
        "machine_end_beep",
        1,
        "agent",
        "completed",
    )
    assert call.duration_s < 5, "the <Pause> was cut by the update"
    assert receiver.of("/status", created.sid)[-1].form["AnsweredBy"] == "machine_end_beep"
    with pytest.raises(TwilioRestException) as exc:
        await client.calls(created.sid).update_async(twiml=message)
    assert (exc.value.status, exc.value.code) == (400, 21220)


async def test_a_rest_update_stops_the_media_stream_and_runs_the_new_twiml(
    api: TwilioApi, receiver: Receiver, client: Client
) -> None:
    ws = receiver.url.replace("http://", "ws://") + "/media"
    stream = f"<Response><Connect action='/after'><Stream url='{ws}'/></Connect><Hangup/></Response>"
    moved, hung_up, human = "+15557770031", "+15557770032", "+15557770033"
    for number in (moved, hung_up, human):
        receiver.twiml[number] = stream
        api.callees[number] = Callee(ring_s=0.05)
    api.callees[human] = Callee(ring_s=0.05, steps=(Say("Yes I have a minute"), Hangup()))

    first = await place(client, receiver, moved)
    async with asyncio.timeout(5):
        await receiver.stream_started.wait()
    await client.calls(first.sid).update_async(twiml="<Response><Say>Moved</Say><Hangup/></Response>")
    call = await api.wait_ended(first.sid)
    assert receiver.sockets[0][-1]["event"] == "stop"
    assert [m["event"] for m in receiver.sockets[0][:2]] == ["connected", "start"]
    assert call.says == ["Moved"] and len(call.legs) == 1 and call.redirects == 1
    assert not receiver.of("/after"), "a redirected <Connect> does not request its action"

    receiver.stream_started.clear()
    second = await place(client, receiver, hung_up)
    async with asyncio.timeout(5):
        await receiver.stream_started.wait()
    assert (await client.calls(second.sid).update_async(status="completed")).status == "completed"
    call = await api.wait_ended(second.sid)
    assert receiver.sockets[1][-1]["event"] == "stop"
    assert (call.status, call.hung_up_by) == ("completed", "api")

    third = await place(client, receiver, human)
    call = await api.wait_ended(third.sid)
    assert receiver.heard(2) == ["Yes I have a minute"]
    assert call.callee_said == ["Yes I have a minute"] and call.hung_up_by == "callee"


async def test_list_fetch_errors_and_counters(api: TwilioApi, receiver: Receiver, client: Client) -> None:
    api.default_callee = Callee(kind="failed")
    created = [await place(client, receiver, f"+1555777004{i}") for i in range(3)]
    await api.wait_idle(5)
    listed = await client.calls.list_async(page_size=2, status="failed")
    assert sorted(c.sid for c in listed) == sorted(c.sid for c in created)
    assert [c.sid for c in await client.calls.list_async(to="+15557770041")] == [created[1].sid]
    today = created[0].date_created
    assert len(await client.calls.list_async(start_time_after=today)) == 3
    assert await client.calls.list_async(status="completed") == []
    assert len(api.created_at) == 3 and api.max_live >= 1 and sum(api.dials.values()) == 3

    with pytest.raises(TwilioRestException) as exc:
        await client.calls("CA" + "0" * 32).fetch_async()
    assert (exc.value.status, exc.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as exc:
        await place(client, receiver, "5551234")
    assert (exc.value.status, exc.value.code) == (400, 21211)
    with pytest.raises(TwilioRestException) as exc:
        await place(client, receiver, "+15557770049", from_="+0123")
    assert (exc.value.status, exc.value.code) == (400, 21212)
    api.fail_next(status=503, code=20503, message="Service unavailable")
    with pytest.raises(TwilioRestException) as exc:
        await place(client, receiver, "+15557770049")
    assert exc.value.status == 503

    http = AsyncTwilioHttpClient()
    wrong = Client(ACCOUNT, "not-the-token", http_client=http)
    wrong.api.base_url = api.url
    try:
        with pytest.raises(TwilioRestException) as exc:
            await wrong.calls.create_async(to="+15557770049", from_="+15550100000", url=receiver.url + "/voice")
    finally:
        await http.close()
    assert (exc.value.status, exc.value.code) == (401, 20003)
    assert len(api.calls) == 3, "refused requests create no call"
    assert not api.requests[-1].authorized


async def test_a_dead_webhook_target_ends_the_call(api: TwilioApi, client: Client) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    api.default_callee = Callee(ring_s=0.05)
    created = await client.calls.create_async(
        to="+15557770051",
        from_="+15550100000",
        url=dead + "/voice",
        status_callback=dead + "/status",
        status_callback_event=EVENTS,
    )
    call = await api.wait_ended(created.sid)
    assert (call.status, call.hung_up_by) == ("completed", "error")
    assert [c.value for c in call.callbacks] == ["initiated", "ringing", "in-progress", "completed"]
    assert all(c.error and c.http_status is None for c in call.callbacks)


async def test_simulate_outbound_asks_the_server_and_reports(
    api: TwilioApi, receiver: Receiver, client: Client
) -> None:
    async def place_call(body: dict[str, Any]) -> Response:
        if body["to"] == "+15557770069":
            return JSONResponse({"detail": {"reason": "dnd", "rule": "trai.dnd.promotional"}}, status_code=409)
        receiver.twiml[body["to"]] = f"<Response><Say>Hi {body['context']['name']}</Say><Hangup/></Response>"
        created = await place(client, receiver, body["to"], machine_detection="Enable")
        return JSONResponse({"call_sid": created.sid, "status": "queued"}, status_code=201)

    receiver.place = place_call
    common: dict[str, Any] = {"url": receiver.url, "api": api, "synthesizer": TextSynthesizer(), "transcribe": False}
    answered, busy, refused = await asyncio.gather(
        simulate_outbound("outbound_voicemail", to="+15557770061", context={"name": "Ann"}, **common),
        simulate_outbound("outbound_sales_human", callee="busy", to="+15557770062", **common),
        simulate_outbound(callee="human", to="+15557770069", **common),
    )
    assert answered.ok, render_outbound(answered)
    assert (answered.status, answered.hung_up_by, answered.answered_by) == ("completed", "agent", "machine_start")
    assert answered.call is not None and answered.call.says == ["Hi Ann"]
    assert answered.conversation is not None and answered.conversation.ended_by == "agent"
    assert (busy.status, busy.conversation, busy.ok) == ("busy", None, True)
    assert refused.refused == {"reason": "dnd", "rule": "trai.dnd.promotional"} and not refused.ok
    assert "refused by the server: dnd" in render_outbound(refused)
    assert "callback answered: in-progress -> 200" in render_outbound(answered)


def test_play_parsing_wav_decoding_and_outbound_scenarios() -> None:
    (play,) = parse_twiml("<Response><Play loop='2'>/a.wav</Play></Response>", base_url="http://x/voice")
    assert play == PlayVerb(url="http://x/a.wav", loop=2)
    with pytest.raises(TwimlError):
        parse_twiml("<Response><Play loop='x'>/a.wav</Play></Response>", base_url="")

    tone = (np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 8000).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(tone)
    assert abs(len(wav_to_mulaw(buf.getvalue())) - 8000) <= 16  # one second at 8 kHz
    assert wav_to_mulaw(mulaw_wav(b"\x01\x02" * 80)) == b"\x01\x02" * 80
    with pytest.raises(TwimlError):
        wav_to_mulaw(b"ID3 not a wav")

    scenario = load_scenario("outbound_sales_human")
    assert scenario.outbound is not None and scenario.outbound.callee.kind == "human"
    assert scenario.outbound.context["name"] and scenario.outbound.callee.steps == scenario.steps
    assert isinstance(scenario.steps[0], WaitForAgent)
    voicemail = load_scenario("outbound_voicemail")
    assert voicemail.outbound is not None and voicemail.outbound.callee.kind == "voicemail"
    with pytest.raises(ScenarioError):
        parse_scenario({"outbound": {"callee": "robot"}, "steps": ["hangup"]})
    with pytest.raises(ScenarioError):
        parse_scenario({"outbound": {"callee": "human"}})  # a human needs lines
