"""Supervisor API (bearer token): look at a call, hang it up, or hand it to a human.

Actions go through Twilio's REST API (``CallControl``), so they work whichever instance
holds the call's media stream. A transfer records its intent on the call row first, then
redirects the live call to ``<Dial>`` TwiML; the media socket then gets ``stop``.
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from dialgraph.server.analysis import analysis_of
from dialgraph.server.core.call_store import add_events, get_call, transcript, update_call
from dialgraph.server.core.enums import TERMINAL_STATUSES, CallOutcome, TransferStatus
from dialgraph.server.core.models import Call, CallEvent
from dialgraph.server.core.redaction import redactor_for
from dialgraph.server.deps import DbDep, ServicesDep, SettingsDep
from dialgraph.telephony.twilio import twiml
from dialgraph.telephony.twilio.call_control import CallControlError

log = structlog.get_logger(__name__)

ADMIN_TRANSFER_SUMMARY = "A supervisor is transferring a caller to you."


def require_admin(request: Request) -> None:
    """401 unless ``Authorization: Bearer <admin_token>`` (compared in constant time)."""
    expected = request.app.state.settings.admin_token.get_secret_value().encode("utf-8")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    ok = bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8"), expected)
    if not ok:
        log.warning("admin request refused", path=request.url.path)
        raise HTTPException(status_code=401, detail="admin token required", headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/api/calls", tags=["admin"], dependencies=[Depends(require_admin)])


class TransferBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=64, description="a configured transfer target of the call's flow")
    summary: str | None = Field(default=None, max_length=1000, description="whispered to the human")


class EventOut(BaseModel):
    kind: str
    role: str | None
    text: str | None
    interrupted: bool
    at: dt.datetime
    latency_ms: float | None
    data: dict[str, Any] | None


class CostOut(BaseModel):
    """What the call cost, by part (``server/core/costs.py``), in ``currency``."""

    telephony: float
    asr: float
    llm: float
    tts: float
    total: float
    currency: str = "USD"


class CallOut(BaseModel):
    sid: str
    direction: str
    from_number: str
    to_number: str
    flow: str
    thread_id: str
    previous_thread_id: str | None
    status: str
    outcome: str | None
    transfer_target: str | None
    transfer_status: str | None
    transfer_reason: str | None
    transfer_summary: str | None
    stream_sid: str | None
    reconnects: int
    started_at: dt.datetime
    answered_at: dt.datetime | None
    ended_at: dt.datetime | None
    cost: CostOut | None = None  # null until a stream of the call has ended
    usage: dict[str, Any] | None = None  # stream/call seconds, ASR seconds, tokens, TTS characters
    analysis: dict[str, Any] | None = None  # {"summary", "fields"} once the post-call analysis ran
    recording_url: str | None = None  # the API path of the call's WAV, when its flow recorded it
    events: list[EventOut] = Field(default_factory=list)


class ActionOut(BaseModel):
    sid: str
    action: str
    target: str | None = None


async def _live_call(db: DbDep, sid: str) -> Call:
    call = await get_call(db, sid)
    if call is None:
        raise HTTPException(status_code=404, detail="unknown call")
    if call.status in TERMINAL_STATUSES:
        raise HTTPException(status_code=409, detail=f"call already {call.status}")
    return call


def _rest_failure(exc: CallControlError) -> HTTPException:
    if exc.call_not_live:
        return HTTPException(status_code=409, detail="call is not live at Twilio")
    return HTTPException(status_code=503 if exc.retryable else 502, detail=str(exc))


@router.get("/{sid}", response_model=CallOut)
async def show_call(sid: str, db: DbDep, settings: SettingsDep) -> CallOut:
    """The call record and its transcript / events in order (event text redacted again:
    rows written before redaction, or by another writer, never leave unredacted)."""
    call = await get_call(db, sid)
    if call is None:
        raise HTTPException(status_code=404, detail="unknown call")
    events = await transcript(db, sid)
    out = CallOut.model_validate(call, from_attributes=True)
    out.analysis = analysis_of(call)  # the raw column may hold a claim or a failure marker
    from dialgraph.server.routes.recordings import url_if_recorded  # it imports require_admin from here

    out.recording_url = await url_if_recorded(settings, sid)
    redact = redactor_for(settings.redaction).redact
    if out.transfer_summary:
        out.transfer_summary = redact(out.transfer_summary)
    out.events = [EventOut.model_validate(e, from_attributes=True) for e in events]
    for event in out.events:
        if event.text and event.kind != "dtmf":
            event.text = redact(event.text)
    return out


@router.post("/{sid}/hangup", response_model=ActionOut)
async def hangup_call(sid: str, db: DbDep, services: ServicesDep) -> ActionOut:
    call = await _live_call(db, sid)
    await update_call(db, call.sid, outcome=CallOutcome.ENDED_BY_ADMIN)
    try:
        await services.call_control.hangup(call.sid)
    except CallControlError as exc:
        if not exc.call_not_live:  # still live: a later dropped stream must reconnect
            await update_call(db, call.sid, outcome=call.outcome)
        raise _rest_failure(exc) from exc
    await add_events(db, [CallEvent(call_sid=call.sid, kind="admin", role="system", data={"action": "hangup"})])
    log.info("admin hung up call", call_sid=call.sid)
    return ActionOut(sid=call.sid, action="hangup")


@router.post("/{sid}/transfer", response_model=ActionOut)
async def transfer_call(
    sid: str, body: TransferBody, db: DbDep, services: ServicesDep, settings: SettingsDep
) -> ActionOut:
    call = await _live_call(db, sid)
    flow = settings.flows.get(call.flow)
    target = flow.transfer_targets.get(body.target) if flow is not None else None
    if target is None:
        raise HTTPException(status_code=422, detail=f"{body.target!r} is not a transfer target of flow {call.flow!r}")
    summary = body.summary or ADMIN_TRANSFER_SUMMARY
    previous = (call.outcome, call.transfer_target, call.transfer_reason, call.transfer_summary)
    await update_call(
        db,
        call.sid,
        outcome=CallOutcome.TRANSFER_REQUESTED,
        transfer_target=body.target,
        transfer_reason="admin",
        transfer_summary=summary,
        transfer_status=TransferStatus.DIALING,
    )
    answer = twiml.dial_transfer(
        settings,
        target=target,
        summary_url=twiml.whisper_url(settings, call.sid),
        caller_id=call.from_number or None,
    )
    try:
        await services.call_control.redirect(call.sid, answer)
    except CallControlError as exc:
        outcome, target_name, reason, old_summary = previous
        await update_call(
            db,
            call.sid,
            outcome=outcome,
            transfer_target=target_name,
            transfer_reason=reason,
            transfer_summary=old_summary,
            transfer_status=TransferStatus.FAILED,
        )
        raise _rest_failure(exc) from exc
    await add_events(
        db,
        [CallEvent(call_sid=call.sid, kind="admin", role="system", data={"action": "transfer", "target": body.target})],
    )
    from dialgraph.server.webhooks import enqueue as enqueue_webhook

    await enqueue_webhook(
        db, settings, "transfer.started", call=call, status=TransferStatus.DIALING, target=body.target
    )
    log.info("admin transferred call", call_sid=call.sid, target=body.target)
    return ActionOut(sid=call.sid, action="transfer", target=body.target)
