"""Twilio voice webhooks: answer calls, track their status, hand them to humans and back.

Every route checks ``X-Twilio-Signature`` (``core.security``). The state a webhook needs
lives in the call row, so any instance can answer any webhook of any call.

Stream lifecycle: ``/voice`` answers ``<Connect><Stream>``. When the stream ends, Twilio
requests ``/stream-ended`` (the ``<Connect action>``); the media session has written its
intent to the call row before closing the socket:

- ``CallOutcome.TRANSFER_REQUESTED`` (+ transfer_target name, reason, summary) -> ``<Dial>``;
- ``CallOutcome.ENDED_BY_AGENT`` (or any other outcome) -> ``<Hangup/>``;
- nothing (the stream dropped, an instance died) -> a fresh ``<Connect><Stream>`` on the same
  thread with signal ``reconnected``, up to ``settings.max_reconnects`` times.

``/dial-ended`` (the ``<Dial action>``) records the transfer outcome; when nobody took the
call, the caller goes back to the agent on the same thread (signal ``transfer_failed:<status>``).

Outbound calls (placed by ``server/outbound``) answer through the same ``/voice`` and
stream; ``/status`` also moves their campaign contact on, and ``/amd`` (async answering
machine detection) acts on Twilio's verdict while the agent is already greeting: a machine
gets the flow's voicemail message (``<Play>`` of ``/voicemail``, in the flow's voice) and a
hang-up, a fax a hang-up, a human the conversation that is already running.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request, Response

from dialgraph.server.analysis import AnalysisDep
from dialgraph.server.core import costs, limits
from dialgraph.server.core.call_store import add_events, get_call, last_call_from, record_call, update_call
from dialgraph.server.core.enums import (
    DIAL_ANSWERED,
    MACHINE_ANSWERS,
    TERMINAL_STATUSES,
    UNANSWERED_OUTCOMES,
    CallOutcome,
    CallStatus,
    SignalKind,
    StreamSignal,
    TransferStatus,
)
from dialgraph.server.core.live import RateLimited, hub
from dialgraph.server.core.models import Call, CallEvent
from dialgraph.server.core.overload import Overload
from dialgraph.server.core.security import require_twilio_signature
from dialgraph.server.core.settings import Settings
from dialgraph.server.deps import DbDep, ServicesDep, SettingsDep
from dialgraph.server.outbound import audit, contact_queue, voicemail
from dialgraph.server.webhooks import enqueue as enqueue_webhook
from dialgraph.telephony.twilio import twiml
from dialgraph.telephony.twilio.call_control import CallControlError

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/twilio", tags=["twilio"])

TwilioForm = Annotated[dict[str, str], Depends(require_twilio_signature)]

GOODBYE_BROKEN = "Sorry, we seem to have a bad connection. Please call us again. Goodbye."
GOODBYE_NO_TARGET = "Sorry, I cannot put you through right now. Please call us again later. Goodbye."


def _xml(body: str) -> Response:
    return Response(content=body, media_type="application/xml")


def _stream_answer(settings: Settings, call: Call, signal: StreamSignal | None = None) -> Response:
    return _xml(
        twiml.connect_stream(settings, call_sid=call.sid, thread_id=call.thread_id, flow=call.flow, signal=signal)
    )


@router.post("/voice")
async def voice(form: TwilioForm, settings: SettingsDep, db: DbDep, request: Request) -> Response:
    """A call starts (incoming, or an outbound call we placed is answered)."""
    sid = form.get("CallSid", "")
    if not sid:
        return _xml(twiml.hangup())
    outbound = form.get("Direction", "inbound").startswith("outbound")
    from_number, to_number = form.get("From", ""), form.get("To", "")
    # The flow belongs to our number: the dialled one inbound, the calling one outbound.
    flow = settings.flow_for_number(from_number if outbound else to_number)
    if not outbound:
        refusal = await _refuse_over_limit(settings, db, form, sid=sid, flow=flow)
        if refusal is None:  # [overload]: this process's load (server/core/overload.py)
            refusal = await _refuse_overloaded(request, settings, db, form, sid=sid, flow=flow)
        if refusal is not None:
            return refusal
    previous_thread_id = None
    # A withheld caller ID is shared by strangers: never link their calls to each other.
    if not outbound and from_number and not limits.is_withheld(from_number) and settings.callback_window_hours > 0:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=settings.callback_window_hours)
        previous = await last_call_from(db, from_number, since=since, exclude_sid=sid)
        previous_thread_id = previous.thread_id if previous is not None else None
    call = await record_call(
        db,
        sid=sid,
        direction="outbound" if outbound else "inbound",
        from_number=from_number,
        to_number=to_number,
        flow=flow,
        thread_id=sid,
        previous_thread_id=previous_thread_id,
        status=form.get("CallStatus") or CallStatus.RINGING,
    )
    log.info("call answered", call_sid=sid, flow=call.flow, callback=previous_thread_id is not None)
    return _stream_answer(settings, call)


async def _refuse_over_limit(
    settings: Settings, db: DbDep, form: dict[str, str], *, sid: str, flow: str
) -> Response | None:
    """An incoming call over a limit (``core/limits.py``, the flow's overrides on top): its
    row with outcome ``rate_limited`` and the rule, and a short refusal; no stream, so no
    model, ASR or TTS is touched. None: the call may go on."""
    flow_settings = settings.flows.get(flow)
    rules = settings.limits.merged(flow_settings.limits if flow_settings is not None else None)
    decision = await limits.admit(db, rules, caller=form.get("From", ""), now=dt.datetime.now(dt.UTC), call_sid=sid)
    if decision.allowed:
        return None
    await limits.record_refusal(
        db,
        decision,
        sid=sid,
        from_number=form.get("From", ""),
        to_number=form.get("To", ""),
        flow=flow,
        status=form.get("CallStatus") or CallStatus.RINGING,
    )
    hub.notify(RateLimited(flow, decision.rule or "", sid))  # /metrics: refusals on this process
    log.info(
        "call refused by a limit", call_sid=sid, flow=flow, rule=decision.rule, retry_after_s=decision.retry_after_s
    )
    if rules.refuse_with == "reject":
        return _xml(twiml.reject("busy"))
    text, language = rules.message(flow_settings.language if flow_settings is not None else "en")
    return _xml(twiml.say_and_hangup(text, language=language))


async def _refuse_overloaded(
    request: Request, settings: Settings, db: DbDep, form: dict[str, str], *, sid: str, flow: str
) -> Response | None:
    """A new incoming call while this process is past ``[overload]``'s limit: recorded like
    a limit's refusal (rule ``overload.*``) and answered "all lines are busy". None: admitted
    (it counts against the limit from now on)."""
    overload: Overload | None = getattr(request.app.state, "overload", None)
    rule = overload.admit(sid) if overload is not None else None
    if rule is None:
        return None
    await limits.record_refusal(
        db,
        limits.LimitDecision(False, rule),
        sid=sid,
        from_number=form.get("From", ""),
        to_number=form.get("To", ""),
        flow=flow,
        status=form.get("CallStatus") or CallStatus.RINGING,
    )
    hub.notify(RateLimited(flow, rule, sid))
    log.info("call refused: this process is overloaded", call_sid=sid, flow=flow, rule=rule)
    if settings.overload.refuse_with == "reject":
        return _xml(twiml.reject("busy"))
    flow_settings = settings.flows.get(flow)
    text, language = settings.overload.busy_message(flow_settings.language if flow_settings is not None else "en")
    return _xml(twiml.say_and_hangup(text, language=language))


async def _record_duration(settings: Settings, db: DbDep, sid: str, duration: str) -> None:
    """The final status says how long Twilio will bill the call for: its telephony cost
    (``server/core/costs.py``: every started minute) replaces the stream-time estimate."""
    try:
        seconds = float(duration)
    except ValueError:
        return
    try:
        await costs.record_usage(db, sid, settings.prices, call_s=max(0.0, seconds))
    except Exception as exc:  # the status callback must still be acknowledged
        log.error("could not record the call's duration", call_sid=sid, error=type(exc).__name__)


@router.post("/status")
async def status(form: TwilioForm, settings: SettingsDep, db: DbDep, analysis: AnalysisDep) -> Response:
    """Call status callback: ringing, in-progress, completed, busy, ... (may arrive out of order)."""
    sid, new_status = form.get("CallSid", ""), form.get("CallStatus", "")
    if not sid:
        return Response(status_code=204)
    call = await get_call(db, sid)
    if call is None:
        # An outbound call's callbacks can beat the placer's write of its row (Twilio calls
        # back before the REST answer is read): keep what they say on a bare row, which the
        # placer completes; its campaign contact picks the final status up from there.
        outbound = form.get("Direction", "").startswith("outbound")
        from_number, to_number = form.get("From", ""), form.get("To", "")
        call = await record_call(
            db,
            sid=sid,
            direction="outbound" if outbound else "inbound",
            from_number=from_number,
            to_number=to_number,
            flow=settings.flow_for_number(from_number if outbound else to_number),
            thread_id=sid,
            status=CallStatus.QUEUED,
        )
        log.info("status before the call's record", call_sid=sid, status=new_status)
    data: dict[str, object] = {"status": new_status}
    for field in ("CallDuration", "AnsweredBy", "SequenceNumber", "SipResponseCode"):
        if form.get(field):
            data[field] = form[field]
    if new_status and call.status not in TERMINAL_STATUSES:
        values: dict[str, Any] = {"status": new_status}
        now = dt.datetime.now(dt.UTC)
        if new_status == CallStatus.IN_PROGRESS and call.answered_at is None:
            values["answered_at"] = now
        if new_status in TERMINAL_STATUSES:
            values["ended_at"] = now
            if call.direction == "outbound" and call.outcome is None and new_status in UNANSWERED_OUTCOMES:
                values["outcome"] = UNANSWERED_OUTCOMES[new_status]
        await update_call(db, sid, **values)
    if new_status in TERMINAL_STATUSES and form.get("CallDuration"):
        await _record_duration(settings, db, sid, form["CallDuration"])
    if new_status in TERMINAL_STATUSES:  # one INSERT (deduplicated); the report is built and POSTed later
        await enqueue_webhook(db, settings, "call.ended", call=call)
    await add_events(db, [CallEvent(call_sid=sid, kind="status", role="system", data=data)])
    if call.campaign_id is not None and new_status:
        await contact_queue.on_call_status(db, sid, new_status, answered_by=form.get("AnsweredBy") or None)
    if analysis is not None and new_status in TERMINAL_STATUSES:
        analysis.schedule(sid)  # post-call summary and fields, in the background (server/analysis.py)
    log.info("call status", call_sid=sid, status=new_status)
    return Response(status_code=204)


@router.post("/amd")
async def answering_machine(form: TwilioForm, services: ServicesDep, db: DbDep) -> Response:
    """Async AMD's verdict (``AnsweredBy``). The agent has been greeting since the answer, so a
    human never waits in silence; a machine gets the voicemail message instead."""
    sid, answered_by = form.get("CallSid", ""), form.get("AnsweredBy", "unknown")
    call = await get_call(db, sid) if sid else None
    if call is None:
        log.info("amd for unknown call", call_sid=sid, answered_by=answered_by)
        return Response(status_code=204)
    settings = services.settings
    data = {"answered_by": answered_by, "detection_ms": form.get("MachineDetectionDuration", "")}
    await update_call(db, sid, answered_by=answered_by)
    await add_events(db, [CallEvent(call_sid=sid, kind="amd", role="system", data=data)])
    if call.campaign_id is not None:
        await contact_queue.on_answered_by(db, sid, answered_by)
    machine = answered_by in MACHINE_ANSWERS or (answered_by == "unknown" and not settings.outbound.unknown_is_human)
    if call.status in TERMINAL_STATUSES or call.outcome is not None:
        log.info("amd after the call was decided", call_sid=sid, answered_by=answered_by)
    elif machine:
        await _leave_voicemail(services, db, call)
    elif answered_by == "fax":
        await update_call(db, sid, outcome=CallOutcome.FAX)
        await audit.record(
            db,
            decision="hung_up_fax",
            rule="amd.fax",
            to_number=call.to_number,
            call_sid=sid,
            campaign_id=call.campaign_id,
            contact_id=call.contact_id,
        )
        try:
            await services.call_control.hangup(sid)
        except CallControlError as exc:
            log.warning("could not hang up a fax", call_sid=sid, error=str(exc))
    log.info("amd", call_sid=sid, answered_by=answered_by, machine=machine)
    return Response(status_code=204)


async def _leave_voicemail(services: ServicesDep, db: DbDep, call: Call) -> None:
    """Switch the live call from the conversation to the flow's message, then hang up. The
    outcome is written first, so the media session that gets ``stop`` does not reconnect."""
    settings = services.settings
    flow = settings.flows.get(call.flow) or settings.flows[settings.default_flow]
    text = voicemail.message(flow, call.context)
    await update_call(db, call.sid, outcome=CallOutcome.VOICEMAIL)
    try:
        audio = await voicemail.render_wav(services.synthesizer, flow, text)
    except Exception as exc:  # any TTS failure: Twilio's own <Say> still leaves the message
        log.warning("voicemail TTS failed, using <Say>", call_sid=call.sid, error=type(exc).__name__)
        answer = twiml.say_and_hangup(text)
    else:
        services.voicemail_cache.put(call.sid, audio)
        answer = twiml.play_and_hangup(twiml.voicemail_url(settings, call.sid))
    try:
        await services.call_control.redirect(call.sid, answer)
    except CallControlError as exc:
        log.warning("could not leave voicemail", call_sid=call.sid, error=str(exc))
        await audit.record(
            db,
            decision="failed",
            reason="voicemail",
            rule="amd.machine",
            to_number=call.to_number,
            call_sid=call.sid,
            campaign_id=call.campaign_id,
            contact_id=call.contact_id,
            detail={"error": str(exc)[:200]},
        )
        return
    await add_events(db, [CallEvent(call_sid=call.sid, kind="voicemail", role="agent", text=text)])
    await audit.record(
        db,
        decision="voicemail",
        rule="amd.machine",
        to_number=call.to_number,
        call_sid=call.sid,
        campaign_id=call.campaign_id,
        contact_id=call.contact_id,
    )


@router.api_route("/voicemail", methods=["GET", "POST"])
async def voicemail_audio(form: TwilioForm, services: ServicesDep, db: DbDep, sid: str = "") -> Response:
    """``<Play>``: the call's voicemail message as WAV, in the flow's voice."""
    audio = services.voicemail_cache.get(sid) if sid else None
    if audio is None:
        call = await get_call(db, sid) if sid else None
        if call is None:
            return Response(status_code=404)
        settings = services.settings
        flow = settings.flows.get(call.flow) or settings.flows[settings.default_flow]
        audio = await voicemail.render_wav(services.synthesizer, flow, voicemail.message(flow, call.context))
        services.voicemail_cache.put(sid, audio)
    return Response(content=audio, media_type="audio/wav")


@router.post("/stream-status")
async def stream_status(form: TwilioForm, db: DbDep) -> Response:
    """``<Stream statusCallback>``: stream-started / stream-stopped / stream-error."""
    sid = form.get("CallSid", "")
    call = await get_call(db, sid) if sid else None
    if call is None:
        return Response(status_code=204)
    event, stream_sid = form.get("StreamEvent", ""), form.get("StreamSid", "")
    data: dict[str, object] = {"event": event, "stream_sid": stream_sid}
    if form.get("StreamError"):
        data["error"] = form["StreamError"]
    if event == "stream-started" and stream_sid:
        await update_call(db, sid, stream_sid=stream_sid)
    await add_events(db, [CallEvent(call_sid=sid, kind="stream", role="system", data=data)])
    log_method = log.warning if event == "stream-error" else log.info
    log_method("stream status", call_sid=sid, stream_event=event, stream_sid=stream_sid, error=data.get("error"))
    return Response(status_code=204)


@router.post("/stream-ended")
async def stream_ended(form: TwilioForm, settings: SettingsDep, db: DbDep) -> Response:
    """The ``<Connect action>``: the media stream is over; decide what the call does next."""
    sid = form.get("CallSid", "")
    call = await get_call(db, sid) if sid else None
    if call is None:
        log.warning("stream ended for unknown call", call_sid=sid)
        return _xml(twiml.hangup())
    if form.get("CallStatus") in TERMINAL_STATUSES:
        return _xml(twiml.hangup())
    if call.outcome == CallOutcome.TRANSFER_REQUESTED:
        return await _transfer(settings, db, call)
    if call.outcome is not None:  # ended_by_agent, or any other decided ending
        log.info("call ended", call_sid=sid, outcome=call.outcome)
        return _xml(twiml.hangup())
    if call.reconnects >= settings.max_reconnects:
        log.warning("stream dropped, reconnects exhausted", call_sid=sid, reconnects=call.reconnects)
        await update_call(db, sid, outcome=CallOutcome.RECONNECTS_EXHAUSTED)
        await add_events(db, [CallEvent(call_sid=sid, kind="reconnect", role="system", data={"gave_up": True})])
        return _xml(twiml.say_and_hangup(GOODBYE_BROKEN))
    attempt = call.reconnects + 1
    await update_call(db, sid, reconnects=Call.reconnects + 1)
    await add_events(db, [CallEvent(call_sid=sid, kind="reconnect", role="system", data={"attempt": attempt})])
    log.warning("stream dropped, reconnecting", call_sid=sid, attempt=attempt)
    return _stream_answer(settings, call, StreamSignal(SignalKind.RECONNECTED))


async def _transfer(settings: Settings, db: DbDep, call: Call) -> Response:
    name = call.transfer_target or ""
    flow = settings.flows.get(call.flow)
    target = flow.transfer_targets.get(name) if flow is not None else None
    if target is None:
        # Only configured targets are ever dialled, whatever the conversation produced.
        log.warning("transfer to unconfigured target refused", call_sid=call.sid, flow=call.flow, text=name[:64])
        await update_call(db, call.sid, outcome=CallOutcome.TRANSFER_REFUSED, transfer_status=TransferStatus.REFUSED)
        await enqueue_webhook(db, settings, "transfer.failed", call=call, status=TransferStatus.REFUSED)
        await add_events(
            db,
            [CallEvent(call_sid=call.sid, kind="dial", role="system", data={"target": name[:64], "refused": True})],
        )
        return _xml(twiml.say_and_hangup(GOODBYE_NO_TARGET))
    await update_call(db, call.sid, transfer_status=TransferStatus.DIALING)
    await enqueue_webhook(db, settings, "transfer.started", call=call, status=TransferStatus.DIALING)
    await add_events(
        db,
        [
            CallEvent(
                call_sid=call.sid,
                kind="dial",
                role="system",
                text=call.transfer_summary,
                data={"target": name, "reason": call.transfer_reason, "status": TransferStatus.DIALING},
            )
        ],
    )
    log.info("transferring", call_sid=call.sid, target=name)
    return _xml(
        twiml.dial_transfer(
            settings,
            target=target,
            summary_url=twiml.whisper_url(settings, call.sid),
            caller_id=call.from_number or None,
        )
    )


@router.api_route("/whisper", methods=["GET", "POST"])
async def whisper(form: TwilioForm, db: DbDep, sid: str = "") -> Response:
    """``<Number url>``: spoken to the human before the bridge."""
    call = await get_call(db, sid) if sid else None
    return _xml(twiml.whisper(call.transfer_summary if call is not None else None))


@router.post("/dial-ended")
async def dial_ended(form: TwilioForm, settings: SettingsDep, db: DbDep) -> Response:
    """The ``<Dial action>``: the human answered (then hung up), or nobody took the call."""
    sid = form.get("CallSid", "")
    call = await get_call(db, sid) if sid else None
    if call is None:
        log.warning("dial ended for unknown call", call_sid=sid)
        return _xml(twiml.hangup())
    dial_status = form.get("DialCallStatus", "")
    data: dict[str, object] = {
        "target": call.transfer_target,
        "status": dial_status,
        "dial_call_sid": form.get("DialCallSid", ""),
        "duration_s": form.get("DialCallDuration", ""),
    }
    await add_events(db, [CallEvent(call_sid=sid, kind="transfer_result", role="system", data=data)])
    log.info("dial ended", call_sid=sid, dial_status=dial_status, target=call.transfer_target)
    if dial_status not in DIAL_ANSWERED:
        await enqueue_webhook(db, settings, "transfer.failed", call=call, status=dial_status or TransferStatus.FAILED)
    if dial_status in DIAL_ANSWERED:
        await update_call(db, sid, outcome=CallOutcome.TRANSFERRED, transfer_status=dial_status)
        return _xml(twiml.hangup())
    if form.get("CallStatus") in TERMINAL_STATUSES:  # the caller gave up while it rang
        await update_call(
            db, sid, outcome=CallOutcome.CALLER_HUNG_UP, transfer_status=dial_status or TransferStatus.CANCELED
        )
        return _xml(twiml.hangup())
    # busy / no-answer / failed / canceled: back to the agent, same thread, who says so.
    failed = dial_status or TransferStatus.FAILED
    await update_call(db, sid, outcome=None, transfer_status=failed)
    return _stream_answer(settings, call, StreamSignal(SignalKind.TRANSFER_FAILED, failed))
