"""Twilio's call engine in the simulator: webhooks in, TwiML verbs followed, legs opened.

``TwilioCall.run`` posts the incoming-call webhook, then executes the TwiML it gets the way
Twilio does: ``<Connect><Stream>`` opens a media leg (signed handshake) and, when the server
closes it, requests the ``<Connect action>``; ``<Dial>`` fetches the ``<Number url>``
whisper, lets the simulated human answer or not, and requests the ``<Dial action>`` with
``DialCallStatus``; ``<Play>`` fetches a WAV (signed GET) and plays it to the phone;
``<Say>``, ``<Pause>``, ``<Redirect>`` and ``<Hangup>`` do what they say.

``TwilioCall.follow`` runs a call's TwiML from any URL or document (an outbound call's
``Url``/``Twiml``, ``Direction=outbound-api``); ``redirect`` and ``hangup`` are the REST
update of a live call: whatever runs stops at once (a media leg gets Twilio's ``stop`` and
closes, no ``<Connect action>`` is requested) and the new TwiML runs, or the call ends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import httpx
import structlog

from dialgraph.telephony.simulator.caller import Phone
from dialgraph.telephony.simulator.media import MediaLeg
from dialgraph.telephony.simulator.protocol import SAMPLE_RATE, LegStats, Violation
from dialgraph.telephony.simulator.scenario import Transfer
from dialgraph.telephony.simulator.twiml import (
    ConnectVerb,
    DialVerb,
    HangupVerb,
    PauseVerb,
    PlayVerb,
    RedirectVerb,
    SayVerb,
    StreamVerb,
    TwimlError,
    Unsupported,
    Verb,
    parse_twiml,
)
from dialgraph.telephony.simulator.webhooks import API_VERSION, TwilioWebhooks, call_params, new_sid

log = structlog.get_logger(__name__)

VOICE_PATH = "/twilio/voice"
STATUS_PATH = "/twilio/status"
WHISPER_VERBS = (SayVerb, PlayVerb, HangupVerb, PauseVerb)
SAY_SECONDS_PER_CHAR = 0.06
MAX_PLAY_LOOPS = 1000  # Twilio's ceiling for <Play loop="0">


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


@dataclass(frozen=True, slots=True)
class TwimlPlay:
    """One ``<Play>`` loop: the audio (8 kHz mu-law) and how much of it played before a stop."""

    at: float
    url: str
    audio: bytes
    played_s: float


@dataclass(frozen=True, slots=True)
class CallUpdate:
    """A REST update of the live call: new TwiML (inline or from a URL), or a hang-up."""

    twiml: str | None = None
    url: str | None = None
    method: str = "POST"
    hangup: bool = False


@dataclass
class CallLog:
    """What the engine saw, for the result. ``ended_by``: agent (the TwiML hung up or ran out),
    caller (the phone hung up), api (a REST hang-up), error (a request or TwiML failed)."""

    legs: list[LegStats] = field(default_factory=list)
    transfers: list[TransferAttempt] = field(default_factory=list)
    says: list[TwimlSay] = field(default_factory=list)
    plays: list[TwimlPlay] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    redirects: int = 0
    ended_by: str = "unknown"


class _LegLine:
    """The phone as a media leg sees it; a REST update also ends the leg (with ``stop``)."""

    def __init__(self, phone: Phone, call: TwilioCall) -> None:
        self._phone = phone
        self._call = call

    def now(self) -> float:
        return self._phone.now()

    def next_frame(self, at: float) -> bytes | None:
        return self._phone.next_frame(at)

    def take_dtmf(self) -> str | None:
        return self._phone.take_dtmf()

    def hangup_requested(self) -> bool:
        return self._phone.hangup_requested() or self._call.interrupted

    def on_caller_frame(self, at: float, frame: bytes) -> None:
        self._phone.on_caller_frame(at, frame)

    def on_agent_audio(self, received: float, starts: float, audio: bytes) -> None:
        self._phone.on_agent_audio(received, starts, audio)

    def on_clear(self, at: float, cut_end: float) -> None:
        self._phone.on_clear(at, cut_end)

    def on_leg(self, event: Literal["open", "closed"], at: float) -> None:
        self._phone.on_leg(event, at)

    def last_caller_action(self) -> float:
        return self._phone.last_caller_action()


class TwilioCall:
    """One call, played the way Twilio plays it: inbound (``run``) or any TwiML (``follow``)."""

    def __init__(
        self,
        *,
        webhooks: TwilioWebhooks,
        phone: Phone,
        account_sid: str,
        call_sid: str,
        from_number: str,
        to_number: str,
        direction: str = "inbound",
    ) -> None:
        self.webhooks = webhooks
        self.phone = phone
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.from_number = from_number
        self.to_number = to_number
        self.direction = direction
        self.log = CallLog()
        self._line = _LegLine(phone, self)
        self._update: CallUpdate | None = None

    @property
    def interrupted(self) -> bool:
        """A REST update is waiting: what runs now must stop."""
        return self._update is not None

    def redirect(self, *, twiml: str | None = None, url: str | None = None, method: str = "POST") -> None:
        """REST ``Twiml=`` / ``Url=``: stop what runs and follow this instead (a hang-up wins)."""
        if self._update is None or not self._update.hangup:
            self._update = CallUpdate(twiml=twiml, url=url, method=method)

    def hangup(self) -> None:
        """REST ``Status=completed``: stop what runs and end the call."""
        self._update = CallUpdate(hangup=True)

    def params(self, status: str = "in-progress", **extra: str) -> dict[str, str]:
        """The standard parameters Twilio sends with every voice request."""
        return call_params(
            self.call_sid,
            from_number=self.from_number,
            to_number=self.to_number,
            status=status,
            direction=self.direction,
            account_sid=self.account_sid,
            **extra,
        )

    async def run(self) -> None:
        """The whole inbound call; always ends with ``phone.ended`` set and a final status callback."""
        started = self.phone.now()
        try:
            await self.follow(url=VOICE_PATH, status="ringing")
        finally:
            self.phone.ended.set()
        duration = str(max(1, round(self.phone.now() - started)))
        try:
            await self.webhooks.request(STATUS_PATH, self.params("completed", CallDuration=duration))
        except httpx.HTTPError as exc:
            self.log.notes.append(f"status callback failed: {exc}")

    async def follow(
        self,
        *,
        url: str | None = None,
        twiml: str | None = None,
        method: str = "POST",
        status: str = "in-progress",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """Run the call's TwiML (fetched from ``url`` with the standard parameters, ``status``
        and ``extra``, or the document ``twiml``) and whatever it leads to, REST updates
        included, until the call ends. Failures become notes and ``ended_by="error"``;
        ``phone.ended`` is left to the caller."""
        started = False
        verbs: list[Verb] | None = None
        try:
            while True:
                if self._update is not None:
                    verbs = await self._take_update()
                    if verbs is None:
                        return
                elif not started:
                    started = True
                    if twiml is not None:
                        verbs = parse_twiml(twiml, base_url=self.webhooks.base_url)
                    else:
                        verbs = await self._fetch(url or VOICE_PATH, method, self.params(status, **dict(extra or {})))
                elif verbs is None:
                    return
                else:
                    verbs = await self._execute(verbs)
        except (TwimlError, httpx.HTTPError) as exc:
            self.log.notes.append(f"call failed: {exc}")
            self.log.ended_by = "error"

    async def _take_update(self) -> list[Verb] | None:
        update, self._update = self._update, None
        if update is None or update.hangup:
            self.log.ended_by = "api"
            return None
        self.log.redirects += 1
        if update.twiml is not None:
            return parse_twiml(update.twiml, base_url=self.webhooks.base_url)
        return await self._fetch(update.url or "", update.method, self.params())

    async def _fetch(self, url: str, method: str, params: dict[str, str]) -> list[Verb]:
        return await self.webhooks.fetch_twiml(url, params, method=method)

    async def _execute(self, verbs: list[Verb]) -> list[Verb] | None:
        for verb in verbs:
            if self.phone.hangup_requested():
                self.log.ended_by = "caller"
                return None
            if self.interrupted:
                return None
            if isinstance(verb, ConnectVerb):
                if verb.stream is None:
                    self.log.notes.append("<Connect> without <Stream>")
                    continue
                end = await self._stream(verb.stream)
                if end == "caller-hangup":
                    if self.phone.hangup_requested():
                        self.log.ended_by = "caller"
                    return None  # else a REST update stopped the stream: no <Connect action>
                if verb.action:
                    return await self._fetch(verb.action, verb.method, self.params())
            elif isinstance(verb, DialVerb):
                nxt = await self._dial(verb)
                if nxt is not None:
                    return nxt
            elif isinstance(verb, SayVerb):
                self.log.says.append(TwimlSay(self.phone.now(), verb.text))
                await self._elapse(min(len(verb.text) * SAY_SECONDS_PER_CHAR, 10.0))
            elif isinstance(verb, PlayVerb):
                await self._play(verb)
            elif isinstance(verb, PauseVerb):
                await self._elapse(min(verb.length_s, 10.0))
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
            phone=self._line,
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
        if not verb.action or self.interrupted:
            return None
        hung_up = self.phone.hangup_requested()
        call_status = "completed" if hung_up or policy.answer else "in-progress"
        params = self.params(
            call_status,
            DialCallStatus=status,
            DialCallSid=child,
            DialCallDuration=str(round(duration)),
        )
        return await self._fetch(verb.action, verb.method, params)

    async def _play(self, verb: PlayVerb) -> None:
        if verb.digits:
            self.log.notes.append("<Play digits> is not simulated")
            return
        try:
            audio = await self.webhooks.fetch_audio(verb.url)
        except (TwimlError, httpx.HTTPError) as exc:
            # Twilio skips media it cannot fetch or play and goes on with the next verb.
            self.log.notes.append(f"<Play> skipped: {exc}")
            return
        seconds = len(audio) / SAMPLE_RATE
        for _ in range(verb.loop or MAX_PLAY_LOOPS):
            at = self.phone.now()
            self.phone.on_agent_audio(at, at, audio)  # the phone hears it, as from a media leg
            stopped = await self._elapse(seconds)
            played = min(seconds, self.phone.now() - at)
            self.log.plays.append(TwimlPlay(at, verb.url, audio, played))
            if stopped:
                if self.phone.record:
                    self.phone.recorder.cut_agent(at + played)
                return

    async def _elapse(self, seconds: float) -> bool:
        """Let time pass (a ring, a bridge, a <Say>, a <Play>); True when the caller hung up
        or a REST update came meanwhile."""
        deadline = self.phone.now() + seconds
        while self.phone.now() < deadline:
            if self._line.hangup_requested():
                return True
            await asyncio.sleep(min(0.05, max(0.0, deadline - self.phone.now())))
        return self._line.hangup_requested()
