"""One call created through the simulated Twilio REST API (``twilio_api.TwilioApi``), and the
player that plays it out as its callee.

``OutboundCall`` is the record of one call: what was asked on create, its status and times,
the AMD verdict, the callbacks sent, what the callee heard. ``CallPlayer`` is the call's whole
life on its own task: status callbacks for the events asked (initiated, ringing, answered,
completed), signed as Twilio signs them and sent in order from one sender task; once answered,
the call's ``Url`` is requested (``Direction=outbound-api``) and its TwiML executed by the
simulator's engine (``call.TwilioCall``) against a ``caller.Phone`` that plays the ``Callee``;
async AMD posts ``AnsweredBy`` to ``AsyncAmdStatusCallback``. A webhook target that refuses
connections ends the call (``completed``), as with Twilio; a failed callback is only noted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import format_datetime
from typing import Literal, Protocol

import httpx
import structlog

from dialgraph.telephony.simulator.call import TwilioCall
from dialgraph.telephony.simulator.caller import Phone, run_script
from dialgraph.telephony.simulator.protocol import LegStats
from dialgraph.telephony.simulator.scenario import BargeIn, Callee, Say, Scenario
from dialgraph.telephony.simulator.text_speech import decode_texts
from dialgraph.telephony.simulator.webhooks import TwilioWebhooks, call_params, wav_to_mulaw

__all__ = ["FINAL_STATUSES", "NOT_ANSWERED", "CallHost", "CallPlayer", "CallbackRecord", "OutboundCall", "amd_verdict"]

log = structlog.get_logger(__name__)

FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
NOT_ANSWERED = frozenset({"queued", "initiated", "ringing"})


@dataclass(frozen=True)
class CallbackRecord:
    """A callback the API sent: a status event or the AMD verdict, and how it went."""

    kind: Literal["status", "amd"]
    event: str  # initiated | ringing | answered | completed | amd
    value: str  # CallStatus, or AnsweredBy
    url: str
    params: dict[str, str]
    at: float
    http_status: int | None = None
    error: str | None = None


@dataclass
class OutboundCall:
    """One call created through the API, and everything that happened to it."""

    sid: str
    to: str
    from_: str
    callee: Callee
    url: str | None
    method: str
    twiml: str | None
    status_callback: str | None
    status_callback_method: str
    events: frozenset[str]
    machine_detection: str | None
    async_amd: bool
    amd_callback: str | None
    amd_callback_method: str
    timeout_s: int
    created_at: float  # time.monotonic()
    date_created: dt.datetime
    status: str = "queued"
    answered_at: float | None = None
    ended_at: float | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    answered_by: str | None = None
    amd_duration_ms: int | None = None
    beep_at: float | None = None  # voicemail: when it beeped (seconds after the answer)
    hung_up_by: str | None = None  # callee | agent | api | error | None (never answered)
    callbacks: list[CallbackRecord] = field(default_factory=list)
    updates: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    engine: TwilioCall | None = None
    phone: Phone | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)  # final status set, callbacks sent
    _cancel: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _sequence: int = 0

    @property
    def duration_s(self) -> int:
        """Twilio's ``duration``: whole seconds from answer to end (0 if never answered)."""
        if self.answered_at is None or self.ended_at is None:
            return 0
        return max(1, round(self.ended_at - self.answered_at))

    @property
    def says(self) -> list[str]:
        """The ``<Say>`` texts the callee heard, in order."""
        return [s.text for s in self.engine.log.says] if self.engine else []

    @property
    def plays(self) -> list[bytes]:
        """The ``<Play>`` audio the callee heard (8 kHz mu-law, one entry per loop)."""
        return [p.audio for p in self.engine.log.plays] if self.engine else []

    @property
    def legs(self) -> list[LegStats]:
        return list(self.engine.log.legs) if self.engine else []

    @property
    def redirects(self) -> int:
        return self.engine.log.redirects if self.engine else 0

    @property
    def heard(self) -> bytes:
        """Everything the callee heard from the call (media streams and ``<Play>``), as recorded."""
        return bytes(self.phone.recorder.agent) if self.phone is not None else b""

    @property
    def agent_texts(self) -> list[str]:
        """What the agent said over the media stream, when the server speaks with the
        simulator's text speech (``text_speech.TextSynthesizer``); [] otherwise."""
        return decode_texts(self.heard)

    @property
    def callee_said(self) -> list[str]:
        phone = self.phone
        return [t.text for t in phone.turns if t.start is not None] if phone is not None else []

    def statuses(self, kind: Literal["status", "amd"] = "status") -> list[str]:
        """The values of the callbacks sent, in order (CallStatus, or AnsweredBy for ``amd``)."""
        return [c.value for c in self.callbacks if c.kind == kind]


def rfc2822(value: dt.datetime | None) -> str | None:
    """A time as Twilio writes it in resources and callbacks."""
    return format_datetime(value) if value is not None else None


def amd_verdict(callee: Callee, mode: str) -> tuple[str, float]:
    """What Twilio's AMD (``mode`` Enable | DetectMessageEnd) says about ``callee``, and how
    many seconds after the answer."""
    if callee.kind == "voicemail":
        verdict = "machine_end_beep" if mode == "DetectMessageEnd" else "machine_start"
        default = callee.beep_after_s if mode == "DetectMessageEnd" else min(callee.beep_after_s, 1.0)
    else:
        verdict, default = ("fax" if callee.kind == "fax" else "human"), 1.0
    return callee.answered_by or verdict, callee.amd_after_s if callee.amd_after_s is not None else default


async def _until(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; True when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(0.0, seconds))
    return event.is_set()


class CallHost(Protocol):
    """What a call's player needs of the API that created it (``TwilioApi``): its account,
    how to record, its clock, the counters it keeps, and the callees' voices."""

    account_sid: str
    auth_token: str
    record: bool
    max_call_s: float
    poll_s: float
    clock: Callable[[], float]
    live: int
    in_progress: int
    max_in_progress: int

    @property
    def url(self) -> str: ...

    async def line_audio(self, text: str) -> bytes:
        """A callee's line as 8 kHz mu-law."""
        ...


class CallPlayer:
    """Plays out one ``OutboundCall`` as its callee, for the ``host`` API that created it;
    ``client`` sends the webhooks and callbacks. ``run()`` is the call's whole life."""

    def __init__(self, host: CallHost, call: OutboundCall, client: httpx.AsyncClient | None) -> None:
        self.host = host
        self.call = call
        self.client = client

    async def run(self) -> None:
        """The call's whole life; its callbacks go out in order from one sender task."""
        call = self.call
        queue: asyncio.Queue[CallbackRecord | None] = asyncio.Queue()
        webhooks = TwilioWebhooks(
            base_url=call.url or self.host.url, auth_token=self.host.auth_token, client=self.client
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._send_callbacks(call, webhooks, queue))
                try:
                    async with asyncio.timeout(self.host.max_call_s):
                        await self._progress(call, webhooks, queue)
                except TimeoutError:
                    call.notes.append(f"the call ran over {self.host.max_call_s:g} s and was cut")
                except Exception as exc:  # the last resort: one call's failure ends that call only
                    log.exception("twilio api: call failed", call_sid=call.sid)
                    call.notes.append(f"simulator error: {exc!r}")
                finally:
                    if call.status not in FINAL_STATUSES:
                        self._finish(call, "completed" if call.answered_at is not None else "failed", queue)
                    queue.put_nowait(None)
        finally:
            call.done.set()

    async def _progress(
        self, call: OutboundCall, webhooks: TwilioWebhooks, queue: asyncio.Queue[CallbackRecord | None]
    ) -> None:
        callee = call.callee
        voice_task = asyncio.ensure_future(self._render(callee)) if callee.answers and callee.steps else None
        try:
            await asyncio.sleep(0)  # the create answer goes out first, as a rule
            call.start_time = dt.datetime.now(dt.UTC).replace(microsecond=0)
            self._status(call, "initiated", queue)
            if callee.kind == "failed":
                self._finish(call, "failed", queue)
                return
            self._status(call, "ringing", queue)
            answers = callee.answers and callee.ring_s <= call.timeout_s
            ring_s = min(callee.ring_s, float(call.timeout_s))
            if await _until(call._cancel, ring_s):
                self._finish(call, "canceled", queue)
                return
            if not answers:
                self._finish(call, "busy" if callee.kind == "busy" else "no-answer", queue)
                return
            audio = await voice_task if voice_task is not None else {}
            await self._answered(call, webhooks, queue, audio)
        finally:
            if voice_task is not None and not voice_task.done():
                voice_task.cancel()

    async def _answered(
        self,
        call: OutboundCall,
        webhooks: TwilioWebhooks,
        queue: asyncio.Queue[CallbackRecord | None],
        audio: Mapping[str, bytes],
    ) -> None:
        callee = call.callee
        phone = Phone(record=self.host.record, poll_s=self.host.poll_s, clock=self.host.clock)
        engine = TwilioCall(
            webhooks=webhooks,
            phone=phone,
            account_sid=self.host.account_sid,
            call_sid=call.sid,
            from_number=call.from_,
            to_number=call.to,
            direction="outbound-api",
        )
        call.phone, call.engine = phone, engine
        call.answered_at = self.host.clock()
        call.status = "in-progress"
        self.host.in_progress += 1
        self.host.max_in_progress = max(self.host.max_in_progress, self.host.in_progress)
        self._status(call, "answered", queue)
        verdict, amd_s = amd_verdict(callee, call.machine_detection or "")
        if callee.kind == "voicemail":
            call.beep_at = callee.beep_after_s

        async def twiml() -> None:
            try:
                extra: dict[str, str] = {}
                if call.machine_detection and not call.async_amd:
                    # Synchronous AMD: the Url is requested once the verdict is in, and carries it.
                    await asyncio.sleep(amd_s)
                    call.answered_by, call.amd_duration_ms = verdict, round(amd_s * 1000)
                    extra = {"AnsweredBy": verdict, "MachineDetectionDuration": str(call.amd_duration_ms)}
                await engine.follow(url=call.url, twiml=call.twiml, method=call.method, extra=extra)
            finally:
                phone.ended.set()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(twiml())
            tg.create_task(self._callee(call, phone, audio))
            if call.machine_detection and call.async_amd:
                tg.create_task(self._amd(call, phone, verdict, amd_s, queue))
        call.notes.extend(engine.log.notes)
        call.notes.extend(f"webhook {m} {p} answered {s}" for m, p, s in webhooks.log.errors)
        ended_by = engine.log.ended_by
        call.hung_up_by = {"caller": "callee"}.get(ended_by, ended_by)
        self._finish(call, "completed", queue)

    async def _callee(self, call: OutboundCall, phone: Phone, audio: Mapping[str, bytes]) -> None:
        """The callee's side: a human's script, a machine's greeting and patience."""
        callee = call.callee
        limit = callee.hangup_after_s
        if limit is None:
            limit = {"voicemail": 60.0, "fax": 10.0}.get(callee.kind, self.host.max_call_s)

        async def behave() -> None:
            if callee.steps:
                script = Scenario(name=f"callee {call.sid}", steps=callee.steps, quiet_ms=callee.quiet_ms)

                def audio_for(step: Say | BargeIn) -> bytes:
                    key = str(step.wav) if isinstance(step, Say) and step.wav is not None else step.text
                    return audio[key]

                await run_script(phone, script, audio_for, notes=call.notes)
            if callee.kind == "human":
                await _until(phone.ended, callee.linger_s)
            else:
                await phone.ended.wait()

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await behave()
        if not phone.ended.is_set():
            await phone.hang_up()

    async def _amd(
        self,
        call: OutboundCall,
        phone: Phone,
        verdict: str,
        after_s: float,
        queue: asyncio.Queue[CallbackRecord | None],
    ) -> None:
        if await _until(phone.ended, after_s):
            return  # the call ended before AMD made up its mind
        call.answered_by, call.amd_duration_ms = verdict, round(after_s * 1000)
        if call.amd_callback:
            params = {
                "AccountSid": self.host.account_sid,
                "CallSid": call.sid,
                "AnsweredBy": verdict,
                "MachineDetectionDuration": str(call.amd_duration_ms),
            }
            queue.put_nowait(CallbackRecord("amd", "amd", verdict, call.amd_callback, params, self.host.clock()))
        else:
            call.notes.append("AMD enabled without AsyncAmdStatusCallback (Twilio warning 21262)")

    def _status(self, call: OutboundCall, event: str, queue: asyncio.Queue[CallbackRecord | None]) -> None:
        status = {"answered": "in-progress"}.get(event, call.status if event == "completed" else event)
        if event != "completed":
            call.status = status
        if call.status_callback is None or event not in call.events:
            return
        extra = {
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call._sequence),
            "Timestamp": rfc2822(dt.datetime.now(dt.UTC)) or "",
        }
        if event == "completed":
            extra["CallDuration"] = str(call.duration_s)
        if call.machine_detection and call.answered_by and event in ("answered", "completed"):
            extra["AnsweredBy"] = call.answered_by
        params = call_params(
            call.sid,
            from_number=call.from_,
            to_number=call.to,
            status=status,
            direction="outbound-api",
            account_sid=self.host.account_sid,
            **extra,
        )
        call._sequence += 1
        queue.put_nowait(CallbackRecord("status", event, status, call.status_callback, params, self.host.clock()))

    def _finish(self, call: OutboundCall, status: str, queue: asyncio.Queue[CallbackRecord | None]) -> None:
        if call.status in FINAL_STATUSES:
            return
        if call.status == "in-progress":
            self.host.in_progress -= 1
        call.ended_at = self.host.clock()
        call.end_time = dt.datetime.now(dt.UTC).replace(microsecond=0)
        call.status = status
        self.host.live -= 1
        self._status(call, "completed", queue)
        log.debug("twilio api: call ended", call_sid=call.sid, status=status, hung_up_by=call.hung_up_by)

    async def _send_callbacks(
        self, call: OutboundCall, webhooks: TwilioWebhooks, queue: asyncio.Queue[CallbackRecord | None]
    ) -> None:
        while (record := await queue.get()) is not None:
            method = call.amd_callback_method if record.kind == "amd" else call.status_callback_method
            try:
                response = await webhooks.request(record.url, record.params, method=method)
            except httpx.HTTPError as exc:
                # Twilio notes a failed callback (error 15003) and goes on with the call.
                call.callbacks.append(replace(record, error=f"{type(exc).__name__}: {exc}"))
                continue
            call.callbacks.append(replace(record, http_status=response.status_code))

    async def _render(self, callee: Callee) -> dict[str, bytes]:
        """The callee's lines as 8 kHz mu-law (rendered once per text for every call)."""
        out: dict[str, bytes] = {}
        for step in callee.steps:
            if isinstance(step, Say) and step.wav is not None:
                out[str(step.wav)] = wav_to_mulaw(await asyncio.to_thread(step.wav.read_bytes))
            elif isinstance(step, Say | BargeIn):
                out[step.text] = await self.host.line_audio(step.text)
        return out
