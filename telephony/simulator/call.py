"""Twilio's call engine in the simulator: webhooks in, TwiML verbs followed, legs opened.

``TwilioCall.run`` posts the incoming-call webhook, then executes the TwiML it gets the way
Twilio does: ``<Connect><Stream>`` opens a media leg (signed handshake) and, when the server
closes it, requests the ``<Connect action>``; ``<Dial>`` fetches the ``<Number url>``
whisper, lets the simulated human answer or not, and requests the ``<Dial action>`` with
``DialCallStatus``; ``<Say>``, ``<Pause>``, ``<Redirect>`` and ``<Hangup>`` do what they say.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import structlog

from dialgraph.telephony.simulator.caller import Phone
from dialgraph.telephony.simulator.media import MediaLeg
from dialgraph.telephony.simulator.protocol import LegStats, Violation
from dialgraph.telephony.simulator.scenario import Transfer
from dialgraph.telephony.simulator.twiml import (
    ConnectVerb,
    DialVerb,
    HangupVerb,
    PauseVerb,
    RedirectVerb,
    SayVerb,
    StreamVerb,
    TwimlError,
    Unsupported,
    Verb,
)
from dialgraph.telephony.simulator.webhooks import API_VERSION, TwilioWebhooks, call_params, new_sid

log = structlog.get_logger(__name__)

VOICE_PATH = "/twilio/voice"
STATUS_PATH = "/twilio/status"
WHISPER_VERBS = (SayVerb, HangupVerb, PauseVerb)
SAY_SECONDS_PER_CHAR = 0.06


@dataclass(frozen=True, slots=True)
class TransferAttempt:
    """One ``<Dial>``: who was dialled, what they were whispered, and how it ended."""

    number: str
    whisper: tuple[str, ...]
    status: str
    at: float
    ring_s: float


@dataclass(frozen=True, slots=True)
class TwimlSay:
    at: float
    text: str


@dataclass
class CallLog:
    """What the engine saw, for the result."""

    legs: list[LegStats] = field(default_factory=list)
    transfers: list[TransferAttempt] = field(default_factory=list)
    says: list[TwimlSay] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ended_by: str = "unknown"


class TwilioCall:
    """One inbound call, played the way Twilio plays it."""

    def __init__(
        self,
        *,
        webhooks: TwilioWebhooks,
        phone: Phone,
        account_sid: str,
        call_sid: str,
        from_number: str,
        to_number: str,
    ) -> None:
        self.webhooks = webhooks
        self.phone = phone
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.from_number = from_number
        self.to_number = to_number
        self.log = CallLog()

    def params(self, status: str = "in-progress", **extra: str) -> dict[str, str]:
        """The standard parameters Twilio sends with every voice request."""
        return call_params(
            self.call_sid,
            from_number=self.from_number,
            to_number=self.to_number,
            status=status,
            account_sid=self.account_sid,
            **extra,
        )

    async def run(self) -> None:
        """The whole call; always ends with ``phone.ended`` set and a final status callback."""
        started = self.phone.now()
        try:
            verbs: list[Verb] | None = await self.webhooks.fetch_twiml(VOICE_PATH, self.params("ringing"))
            while verbs is not None:
                verbs = await self._execute(verbs)
        except (TwimlError, httpx.HTTPError) as exc:
            self.log.notes.append(f"call failed: {exc}")
            self.log.ended_by = "error"
        finally:
            self.phone.ended.set()
        duration = str(max(1, round(self.phone.now() - started)))
        try:
            await self.webhooks.request(STATUS_PATH, self.params("completed", CallDuration=duration))
        except httpx.HTTPError as exc:
            self.log.notes.append(f"status callback failed: {exc}")

    async def _fetch(self, url: str, method: str, params: dict[str, str]) -> list[Verb]:
        return await self.webhooks.fetch_twiml(url, params, method=method)

    async def _execute(self, verbs: list[Verb]) -> list[Verb] | None:
        for verb in verbs:
            if self.phone.hangup_requested():
                self.log.ended_by = "caller"
                return None
            if isinstance(verb, ConnectVerb):
                if verb.stream is None:
                    self.log.notes.append("<Connect> without <Stream>")
                    continue
                end = await self._stream(verb.stream)
                if end == "caller-hangup":
                    self.log.ended_by = "caller"
                    return None
                if verb.action:
                    return await self._fetch(verb.action, verb.method, self.params())
            elif isinstance(verb, DialVerb):
                nxt = await self._dial(verb)
                if nxt is not None:
                    return nxt
            elif isinstance(verb, SayVerb):
                self.log.says.append(TwimlSay(self.phone.now(), verb.text))
                await asyncio.sleep(min(len(verb.text) * SAY_SECONDS_PER_CHAR, 10.0))
            elif isinstance(verb, PauseVerb):
                await asyncio.sleep(min(verb.length_s, 10.0))
            elif isinstance(verb, HangupVerb):
                self.log.ended_by = "caller" if self.phone.hangup_requested() else "agent"
                return None
            elif isinstance(verb, RedirectVerb):
                return await self._fetch(verb.url, verb.method, self.params())
            elif isinstance(verb, Unsupported):
                self.log.notes.append(f"unsupported TwiML verb <{verb.tag}>")
        # The document ran out: Twilio hangs up.
        self.log.ended_by = "caller" if self.phone.hangup_requested() else "agent"
        return None

    async def _stream(self, stream: StreamVerb) -> str:
        parts = urlsplit(stream.url)
        if parts.scheme not in ("ws", "wss") or parts.query:
            self.log.notes.append(f"<Stream url> must be ws(s) without a query string: {stream.url}")
        if sum(len(k) + len(v) for k, v in stream.parameters.items()) > 500 * max(1, len(stream.parameters)):
            self.log.notes.append("<Parameter>s over 500 characters a pair")
        stream_sid = new_sid("MZ")
        leg = MediaLeg(
            url=stream.url,
            signature=self.webhooks.signature(stream.url),
            phone=self.phone,
            call_sid=self.call_sid,
            account_sid=self.account_sid,
            stream_sid=stream_sid,
            parameters=dict(stream.parameters),
            on_violation=self.log.violations.append,
        )
        callback = None
        if stream.status_callback:
            callback = asyncio.create_task(self._stream_status(stream, stream_sid, "stream-started"))
        try:
            end = await leg.run()
        finally:
            if callback is not None:
                await callback
        self.log.legs.append(leg.stats)
        if end == "rejected":
            self.log.notes.append(f"media stream rejected: {leg.error}")
        if stream.status_callback:
            event = "stream-error" if end == "rejected" else "stream-stopped"
            await self._stream_status(stream, stream_sid, event, error=leg.error)
        return end

    async def _stream_status(self, stream: StreamVerb, stream_sid: str, event: str, error: str | None = None) -> None:
        assert stream.status_callback is not None
        params = {
            "AccountSid": self.account_sid,
            "CallSid": self.call_sid,
            "StreamSid": stream_sid,
            "StreamEvent": event,
            "Timestamp": dt.datetime.now(dt.UTC).isoformat(),
        }
        if stream.name:
            params["StreamName"] = stream.name
        if error:
            params["StreamError"] = error[:200]
        try:
            await self.webhooks.request(stream.status_callback, params)
        except httpx.HTTPError as exc:
            self.log.notes.append(f"stream status callback failed: {exc}")

    async def _dial(self, verb: DialVerb) -> list[Verb] | None:
        policy = self.phone.transfer_policies.popleft() if self.phone.transfer_policies else Transfer()
        child = new_sid("CA")
        at = self.phone.now()
        whisper: list[str] = []
        if verb.whisper_url:
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": API_VERSION,
                "CallSid": child,
                "ParentCallSid": self.call_sid,
                "CallStatus": "in-progress",
                "Direction": "outbound-dial",
                "From": verb.caller_id or self.from_number,
                "To": verb.number,
            }
            for v in await self._fetch(verb.whisper_url, verb.whisper_method, params):
                if isinstance(v, SayVerb):
                    whisper.append(v.text)
                elif not isinstance(v, WHISPER_VERBS):
                    self.log.notes.append(f"whisper TwiML may only hold Play/Say/Gather/Hangup, got {v!r}")
        ring_s = min(policy.ring_s, float(verb.timeout_s))
        status: str = policy.status if not policy.answer else "completed"
        hung_up = await self._elapse(ring_s)
        duration = 0.0
        if hung_up:
            status = "canceled"
        elif policy.answer:
            duration = policy.talk_s
            await self._elapse(duration)
        self.log.transfers.append(TransferAttempt(verb.number, tuple(whisper), status, at, ring_s))
        if not verb.action:
            return None
        call_status = "completed" if hung_up or policy.answer else "in-progress"
        params = self.params(
            call_status,
            DialCallStatus=status,
            DialCallSid=child,
            DialCallDuration=str(round(duration)),
        )
        return await self._fetch(verb.action, verb.method, params)

    async def _elapse(self, seconds: float) -> bool:
        """Let time pass during a ring or a bridge; True when the caller hung up meanwhile."""
        deadline = self.phone.now() + seconds
        while self.phone.now() < deadline:
            if self.phone.hangup_requested():
                return True
            await asyncio.sleep(min(0.05, max(0.0, deadline - self.phone.now())))
        return self.phone.hangup_requested()
