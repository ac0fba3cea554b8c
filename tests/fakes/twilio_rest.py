"""A local fake of Twilio's REST API (the Calls resource) for the real twilio-python client.

A real HTTP server (Starlette under uvicorn) on 127.0.0.1 that speaks Twilio's wire format:
HTTP basic auth with the account SID and auth token, form-encoded bodies, JSON resources,
JSON errors ``{code, message, more_info, status}``. It records every request and can be told
to fail the next N requests. Point the client at ``fake.url`` (``client.api.base_url``).

    async with FakeTwilioRest(account_sid=..., auth_token=...) as fake:
        fake.add_call("CA...")
        ...
        assert fake.requests[-1].form["Status"] == "completed"
"""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dialgraph.telephony.simulator.twilio_api import RecordedRequest, RestFailure, rest_error

PREFIX = "/2010-04-01/Accounts/{account}/Calls"


@dataclass
class FakeCall:
    sid: str
    status: str = "in-progress"
    to: str = ""
    from_: str = ""
    twiml: str | None = None
    url: str | None = None
    answered_by: str | None = None  # AMD's verdict, as a fetch answers it


@dataclass
class FakeTwilioRest:
    account_sid: str
    auth_token: str
    requests: list[RecordedRequest] = field(default_factory=list)
    calls: dict[str, FakeCall] = field(default_factory=dict)
    # Runs after a call is created and before the REST answer goes back: a test's stand-in
    # for Twilio's webhooks that can land before the client has the CallSid.
    on_create: Callable[[FakeCall], Awaitable[None]] | None = None
    _failures: list[RestFailure] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _serve_task: asyncio.Task[None] | None = None
    _port: int = 0

    # --- control -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def creates(self) -> list[RecordedRequest]:
        """The ``calls.create`` requests (placed calls), in order."""
        return [r for r in self.requests if r.method == "POST" and r.call_sid is None]

    def add_call(self, sid: str, *, status: str = "in-progress", answered_by: str | None = None) -> FakeCall:
        call = FakeCall(sid=sid, status=status, answered_by=answered_by)
        self.calls[sid] = call
        return call

    def fail_next(
        self, *, status: int = 500, code: int = 20500, times: int = 1, message: str = "Internal error"
    ) -> None:
        """The next ``times`` requests get this error instead of being served."""
        self._failures.extend(RestFailure(status, code, message) for _ in range(times))

    # --- lifecycle -----------------------------------------------------------------------
    async def __aenter__(self) -> FakeTwilioRest:
        prefix = PREFIX.format(account="{account}")
        app = Starlette(
            routes=[
                Route(prefix + ".json", self._create, methods=["POST"]),
                Route(prefix + "/{sid}.json", self._update, methods=["POST"]),
                Route(prefix + "/{sid}.json", self._fetch, methods=["GET"]),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._serve_task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._serve_task.done():
                self._serve_task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None and self._serve_task is not None:
            self._server.should_exit = True
            await self._serve_task

    # --- wire --------------------------------------------------------------------------
    async def _record(self, request: Request) -> tuple[RecordedRequest, JSONResponse | None]:
        body = (await request.body()).decode("utf-8")
        pairs = tuple(parse_qsl(body, keep_blank_values=True))
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        account_ok = request.path_params["account"] == self.account_sid
        authorized = request.headers.get("authorization", "") == expected and account_ok
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            pairs=pairs,
            authorized=authorized,
            call_sid=request.path_params.get("sid"),
        )
        self.requests.append(recorded)
        if not authorized:
            return recorded, rest_error(401, 20003, "Authenticate")
        if self._failures:
            failure = self._failures.pop(0)
            return recorded, rest_error(failure.status, failure.code, failure.message)
        return recorded, None

    async def _create(self, request: Request) -> JSONResponse:
        recorded, error = await self._record(request)
        if error is not None:
            return error
        form = recorded.form
        if not form.get("To") or not form.get("From") or not (form.get("Url") or form.get("Twiml")):
            return rest_error(400, 21205, "Url parameter is required.")
        call = FakeCall(
            sid="CA" + uuid.uuid4().hex, status="queued", to=form["To"], from_=form["From"], url=form.get("Url")
        )
        self.calls[call.sid] = call
        if self.on_create is not None:
            await self.on_create(call)
        return JSONResponse(self._resource(call), status_code=201)

    async def _update(self, request: Request) -> JSONResponse:
        recorded, error = await self._record(request)
        if error is not None:
            return error
        call = self.calls.get(recorded.call_sid or "")
        if call is None:
            return rest_error(404, 20404, f"The requested resource {recorded.path} was not found")
        form = recorded.form
        if ("Twiml" in form or "Url" in form) and call.status != "in-progress":
            return rest_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if "Twiml" in form:
            call.twiml = form["Twiml"]
        if "Url" in form:
            call.url = form["Url"]
        if form.get("Status") in ("completed", "canceled"):
            call.status = form["Status"]
        return JSONResponse(self._resource(call))

    async def _fetch(self, request: Request) -> JSONResponse:
        recorded, error = await self._record(request)
        if error is not None:
            return error
        call = self.calls.get(recorded.call_sid or "")
        if call is None:
            return rest_error(404, 20404, f"The requested resource {recorded.path} was not found")
        return JSONResponse(self._resource(call))

    def _resource(self, call: FakeCall) -> dict[str, Any]:
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "to": call.to,
            "from": call.from_,
            "status": call.status,
            "answered_by": call.answered_by,
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.sid}.json",
        }
