"""A local Twilio REST API (the Calls resource) that places outbound calls and plays their callees.

``TwilioApi`` is a real HTTP server (Starlette under uvicorn on 127.0.0.1) speaking Twilio's
wire format, so the real twilio-python client works against it (``client.api.base_url =
api.url``): HTTP basic auth with the account SID and auth token, form bodies, JSON resources,
JSON errors ``{code, message, more_info, status}``.

- ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` creates a call (``To``, ``From``,
  ``Url``/``Twiml``, ``Method``, ``StatusCallback``, ``StatusCallbackEvent`` (repeated),
  ``StatusCallbackMethod``, ``MachineDetection``, ``AsyncAmd``, ``AsyncAmdStatusCallback``,
  ``AsyncAmdStatusCallbackMethod``, ``Timeout``): 201 and a ``queued`` call resource;
  400/21211 for a bad ``To``, 400/21212 for a bad ``From``.
- ``POST .../Calls/{Sid}.json`` updates a call: ``Status=completed|canceled`` hangs up or
  cancels; ``Twiml=``/``Url=`` moves a live call (a media leg gets ``stop`` and closes, the new
  TwiML runs); 404/20404 unknown call, 400/21220 not in progress.
- ``GET .../Calls/{Sid}.json`` fetches one; ``GET .../Calls.json`` lists (``To``, ``From``,
  ``Status``, ``StartTime``, ``StartTime>``, ``StartTime<``; ``PageSize``/``Page``).

Every created call then plays out on its own task (``outbound_call.CallPlayer``: status
callbacks, the call's TwiML, async AMD), as the ``Callee`` that ``callees`` maps its ``To`` to
(``default_callee`` otherwise). This module is the HTTP side: the resources, auth, errors,
and the voices of the callees' lines (synthesized once per text for every call).

Everything is kept for tests and benchmarks: ``calls`` (an ``OutboundCall`` per SID: times,
status, AMD verdict, what the callee heard), ``requests``, ``created_at``, ``dials`` per number,
``live``/``max_live`` (create to final status) and ``in_progress``/``max_in_progress``.

    async with TwilioApi(callees={"+15557770002": Callee(kind="voicemail")}) as api:
        ...  # a server with TWILIO_API_URL=api.url places calls
        call = await api.wait_ended(sid)
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dialgraph.telephony.simulator.outbound_call import (
    FINAL_STATUSES,
    NOT_ANSWERED,
    CallbackRecord,
    CallPlayer,
    OutboundCall,
    rfc2822,
)
from dialgraph.telephony.simulator.protocol import DEFAULT_ACCOUNT_SID
from dialgraph.telephony.simulator.scenario import Callee
from dialgraph.telephony.simulator.text_speech import TextSynthesizer
from dialgraph.telephony.simulator.twiml import TwimlError, parse_twiml
from dialgraph.telephony.simulator.webhooks import API_VERSION, new_sid
from dialgraph.telephony.speech.base import SpeechSynthesizer

__all__ = ["CallbackRecord", "Callee", "OutboundCall", "RecordedRequest", "TwilioApi"]

log = structlog.get_logger(__name__)

PREFIX = "/2010-04-01/Accounts/{account}/Calls"
E164 = re.compile(r"\+[1-9]\d{6,14}")
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
DEFAULT_TIMEOUT_S = 60


@dataclass(frozen=True)
class RecordedRequest:
    """One REST request as it arrived (``pairs`` keeps repeated fields, in order)."""

    method: str
    path: str
    pairs: tuple[tuple[str, str], ...]
    authorized: bool
    call_sid: str | None = None
    at: float = 0.0

    @property
    def form(self) -> dict[str, str]:
        """Fields, first value of each name."""
        out: dict[str, str] = {}
        for name, value in self.pairs:
            out.setdefault(name, value)
        return out

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.pairs if n == name]


@dataclass
class RestFailure:
    """A failure the API is told to answer with instead of serving (``fail_next``)."""

    status: int
    code: int
    message: str


def rest_error(status: int, code: int, message: str) -> JSONResponse:
    """Twilio's JSON error body (``code``, ``message``, ``more_info``, ``status``)."""
    return JSONResponse(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
        status_code=status,
    )


def _parse_time(value: str) -> tuple[dt.datetime, bool]:
    """A filter time (``YYYY-MM-DD`` or ISO with ``Z``), and whether it was a bare date."""
    if len(value) == 10:
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC), True
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)), False


class TwilioApi:
    """Twilio's Calls resource on 127.0.0.1 (``async with``); ``url`` is the base URL to give
    twilio-python (``client.api.base_url``) or a server (``TWILIO_API_URL``, see ``env()``).

    ``callees`` maps a ``To`` number to its ``Callee`` (mutable: set one before the call is
    placed); ``synthesizer`` voices the callees' lines (default: the simulator's text speech,
    which a server with ``text_speech`` recognises exactly; pass the offline TTS for real
    audio); ``voice`` pre-renders lines (text or WAV path -> 8 kHz mu-law).
    """

    def __init__(
        self,
        *,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = "dev-auth-token",
        port: int = 0,
        callees: Mapping[str, Callee] | None = None,
        default_callee: Callee | None = None,
        synthesizer: SpeechSynthesizer | None = None,
        voice: Mapping[str, bytes] | None = None,
        record: bool = True,
        max_call_s: float = 600.0,
        poll_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.callees: dict[str, Callee] = dict(callees or {})
        self.default_callee = default_callee or Callee()
        self.synthesizer: SpeechSynthesizer = synthesizer or TextSynthesizer()
        self.record = record
        self.max_call_s = max_call_s
        self.poll_s = poll_s
        self.clock = clock
        self.calls: dict[str, OutboundCall] = {}
        self.requests: list[RecordedRequest] = []
        self.created_at: list[float] = []
        self.dials: Counter[str] = Counter()
        self.live = 0
        self.max_live = 0
        self.in_progress = 0
        self.max_in_progress = 0
        self._voice: dict[str, asyncio.Future[bytes]] = {}
        self._preset_voice = dict(voice or {})
        self._failures: list[RestFailure] = []
        self._port = port
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- control -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def env(self) -> dict[str, str]:
        """The environment that points a ``dialgraph serve`` process at this API."""
        return {
            "TWILIO_API_URL": self.url,
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
        }

    def callee_for(self, number: str) -> Callee:
        return self.callees.get(number, self.default_callee)

    def fail_next(
        self, *, status: int = 500, code: int = 20500, times: int = 1, message: str = "Internal error"
    ) -> None:
        """The next ``times`` authorised requests get this error instead of being served."""
        self._failures.extend(RestFailure(status, code, message) for _ in range(times))

    def calls_to(self, number: str) -> list[OutboundCall]:
        return [c for c in self.calls.values() if c.to == number]

    async def wait_ended(self, sid: str, timeout_s: float = 30.0) -> OutboundCall:
        """The call once its final status is set and every callback has been sent."""
        call = self.calls[sid]
        async with asyncio.timeout(timeout_s):
            await call.done.wait()
        return call

    async def wait_idle(self, timeout_s: float = 60.0) -> None:
        """Until every call created so far has ended."""
        async with asyncio.timeout(timeout_s):
            for call in list(self.calls.values()):
                await call.done.wait()

    # --- lifecycle -----------------------------------------------------------------------
    async def __aenter__(self) -> TwilioApi:
        prefix = PREFIX.format(account="{account}")
        app = Starlette(
            routes=[
                Route(prefix + ".json", self._create, methods=["POST"]),
                Route(prefix + ".json", self._list, methods=["GET"]),
                Route(prefix + "/{sid}.json", self._update, methods=["POST"]),
                Route(prefix + "/{sid}.json", self._fetch, methods=["GET"]),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        # Keep idle connections open like Twilio's API does (uvicorn's default 5 s is shorter than
        # aiohttp's 15 s keep-alive: a reused connection would meet a closed socket).
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, ws="none", timeout_keep_alive=75
        )
        self._server = uvicorn.Server(config)
        self._http = httpx.AsyncClient(
            timeout=15.0, trust_env=False, limits=httpx.Limits(max_connections=500, max_keepalive_connections=100)
        )
        self._serve_task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
            if self._serve_task.done():
                self._serve_task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for call in self.calls.values():
            if call.status in NOT_ANSWERED:
                call._cancel.set()
            elif call.status == "in-progress" and call.engine is not None:
                call.engine.hangup()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=10.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
        if self._server is not None and self._serve_task is not None:
            self._server.should_exit = True
            await self._serve_task

    # --- wire ----------------------------------------------------------------------------
    async def _record(self, request: Request) -> tuple[RecordedRequest, JSONResponse | None]:
        if request.method == "GET":
            pairs = tuple(request.query_params.multi_items())
        else:
            pairs = tuple(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        authorized = (
            request.headers.get("authorization", "") == expected and request.path_params["account"] == self.account_sid
        )
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            pairs=pairs,
            authorized=authorized,
            call_sid=request.path_params.get("sid"),
            at=self.clock(),
        )
        self.requests.append(recorded)
        if not authorized:
            return recorded, rest_error(401, 20003, "Authenticate")
        if self._failures:
            failure = self._failures.pop(0)
            return recorded, rest_error(failure.status, failure.code, failure.message)
        return recorded, None

    def _not_found(self, path: str) -> JSONResponse:
        return rest_error(404, 20404, f"The requested resource {path} was not found")

    async def _create(self, request: Request) -> JSONResponse:
        recorded, error = await self._record(request)
        if error is not None:
            return error
        form = recorded.form
        to, from_ = form.get("To", ""), form.get("From", "")
        if not to:
            return rest_error(400, 21201, "No 'To' number is specified")
        if not E164.fullmatch(to):
            return rest_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not from_:
            return rest_error(400, 21213, "No 'From' number is specified")
        if not E164.fullmatch(from_):
            return rest_error(400, 21212, f"Invalid 'From' Phone Number: {from_}")
        if not (form.get("Url") or form.get("Twiml")):
            return rest_error(400, 21205, "Url parameter is required.")
        if form.get("Twiml"):
            try:
                parse_twiml(form["Twiml"], base_url="")
            except TwimlError as exc:
                return rest_error(400, 12100, f"Document parse failure: {exc}")
        mode = form.get("MachineDetection") or None
        if mode not in (None, "Enable", "DetectMessageEnd"):
            return rest_error(400, 21268, f"MachineDetection must be Enable or DetectMessageEnd, not {mode}")
        try:
            timeout_s = min(600, max(5, int(form.get("Timeout") or DEFAULT_TIMEOUT_S)))
        except ValueError:
            return rest_error(400, 21218, "Timeout must be an integer")
        events = {e.lower() for v in recorded.values("StatusCallbackEvent") for e in v.split()}
        unknown = events - set(STATUS_EVENTS)
        if unknown:
            return rest_error(400, 21626, f"Invalid StatusCallbackEvent: {', '.join(sorted(unknown))}")
        now = self.clock()
        call = OutboundCall(
            sid=new_sid("CA"),
            to=to,
            from_=from_,
            callee=self.callee_for(to),
            url=form.get("Url") or None,
            method=(form.get("Method") or "POST").upper(),
            twiml=form.get("Twiml") or None,
            status_callback=form.get("StatusCallback") or None,
            status_callback_method=(form.get("StatusCallbackMethod") or "POST").upper(),
            # Twilio: a status callback without events gets "completed" only.
            events=frozenset(events or {"completed"}),
            machine_detection=mode,
            async_amd=form.get("AsyncAmd", "").lower() == "true",
            amd_callback=form.get("AsyncAmdStatusCallback") or None,
            amd_callback_method=(form.get("AsyncAmdStatusCallbackMethod") or "POST").upper(),
            timeout_s=timeout_s,
            created_at=now,
            date_created=dt.datetime.now(dt.UTC).replace(microsecond=0),
        )
        self.calls[call.sid] = call
        self.created_at.append(now)
        self.dials[to] += 1
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        call._task = asyncio.create_task(CallPlayer(self, call, self._http).run())
        self._tasks.add(call._task)
        call._task.add_done_callback(self._tasks.discard)
        log.debug("twilio api: call created", call_sid=call.sid, to_number=to, callee=call.callee.kind)
        return JSONResponse(self._resource(call), status_code=201)

    async def _update(self, request: Request) -> JSONResponse:
        recorded, error = await self._record(request)
        if error is not None:
            return error
        call = self.calls.get(recorded.call_sid or "")
        if call is None:
            return self._not_found(recorded.path)
        form = recorded.form
        call.updates.append(form)
        status = form.get("Status")
        if status not in (None, "completed", "canceled"):
            return rest_error(400, 21218, f"Status must be completed or canceled, not {status}")
        twiml, url = form.get("Twiml") or None, form.get("Url") or None
        if (twiml or url) and call.status != "in-progress":
            return rest_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if twiml:
            try:
                parse_twiml(twiml, base_url="")
            except TwimlError as exc:
                return rest_error(400, 12100, f"Document parse failure: {exc}")
        shown = call.status
        if status is not None and call.status in NOT_ANSWERED:
            call._cancel.set()  # canceled or completed: a call not yet answered is canceled
            shown = "canceled"
        elif status == "completed" and call.status == "in-progress" and call.engine is not None:
            call.engine.hangup()
            shown = "completed"
        elif (twiml or url) and call.engine is not None:
            call.engine.redirect(twiml=twiml, url=url, method=(form.get("Method") or "POST").upper())
        return JSONResponse(self._resource(call, status=shown))

    async def _fetch(self, request: Request) -> JSONResponse:
        recorded, error = await self._record(request)
        if error is not None:
            return error
        call = self.calls.get(recorded.call_sid or "")
        if call is None:
            return self._not_found(recorded.path)
        return JSONResponse(self._resource(call))

    async def _list(self, request: Request) -> JSONResponse:
        recorded, error = await self._record(request)
        if error is not None:
            return error
        form = recorded.form
        try:
            page_size = min(1000, max(1, int(form.get("PageSize") or 50)))
            page = max(0, int(form.get("Page") or 0))
            bounds = {k: _parse_time(form[k]) for k in ("StartTime", "StartTime>", "StartTime<") if form.get(k)}
        except ValueError as exc:
            return rest_error(400, 20001, f"Invalid filter: {exc}")

        def keep(call: OutboundCall) -> bool:
            if form.get("To") and call.to != form["To"]:
                return False
            if form.get("From") and call.from_ != form["From"]:
                return False
            if form.get("Status") and call.status != form["Status"]:
                return False
            started = call.start_time
            for key, (at, is_date) in bounds.items():
                if started is None:
                    return False
                value: dt.date | dt.datetime = started.date() if is_date else started
                limit: dt.date | dt.datetime = at.date() if is_date else at
                ok = {"StartTime": value == limit, "StartTime>": value >= limit, "StartTime<": value <= limit}[key]
                if not ok:
                    return False
            return True

        matched = sorted((c for c in self.calls.values() if keep(c)), key=lambda c: c.created_at, reverse=True)
        chunk = matched[page * page_size : (page + 1) * page_size]
        base = PREFIX.format(account=self.account_sid) + ".json"
        filters = [(k, v) for k, v in recorded.pairs if k not in ("Page", "PageSize", "PageToken")]

        def uri(n: int) -> str:
            return base + "?" + urlencode([*filters, ("PageSize", str(page_size)), ("Page", str(n))])

        more = (page + 1) * page_size < len(matched)
        return JSONResponse(
            {
                "calls": [self._resource(c) for c in chunk],
                "end": page * page_size + max(0, len(chunk) - 1),
                "first_page_uri": uri(0),
                "next_page_uri": uri(page + 1) if more else None,
                "page": page,
                "page_size": page_size,
                "previous_page_uri": uri(page - 1) if page > 0 else None,
                "start": page * page_size,
                "uri": uri(page),
            }
        )

    def _resource(self, call: OutboundCall, *, status: str | None = None) -> dict[str, Any]:
        uri = PREFIX.format(account=self.account_sid) + f"/{call.sid}"
        ended = call.status in FINAL_STATUSES
        return {
            "sid": call.sid,
            "date_created": rfc2822(call.date_created),
            "date_updated": rfc2822(call.end_time or call.start_time or call.date_created),
            "parent_call_sid": None,
            "account_sid": self.account_sid,
            "to": call.to,
            "to_formatted": call.to,
            "from": call.from_,
            "from_formatted": call.from_,
            "phone_number_sid": None,
            "status": status or call.status,
            "start_time": rfc2822(call.start_time),
            "end_time": rfc2822(call.end_time),
            "duration": str(call.duration_s) if ended else None,
            "price": None,
            "price_unit": "USD",
            "direction": "outbound-api",
            "answered_by": call.answered_by,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri + ".json",
            "subresource_uris": {
                "notifications": uri + "/Notifications.json",
                "recordings": uri + "/Recordings.json",
                "events": uri + "/Events.json",
            },
        }

    async def line_audio(self, text: str) -> bytes:
        """A callee's line as 8 kHz mu-law, synthesized once per text for every call."""
        if text in self._preset_voice:
            return self._preset_voice[text]
        pending = self._voice.get(text)
        if pending is None:
            pending = self._voice[text] = asyncio.ensure_future(self._synthesize(text))
        return await asyncio.shield(pending)

    async def _synthesize(self, text: str) -> bytes:
        async def one() -> AsyncIterator[str]:
            yield text

        return b"".join([chunk.audio async for chunk in self.synthesizer.synthesize(one())])
