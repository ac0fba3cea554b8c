"""The Twilio media WebSocket (``/twilio/media``): authenticate, then hand the socket to a
``CallSession``.

Order matters: the handshake's ``X-Twilio-Signature`` is checked before accepting (a bad
one gets HTTP 403), then ``connected`` and ``start`` are read (the stream's
``MediaStreamProtocol`` judges their order; this module only moves the text) and the stream token from
``start.customParameters["token"]`` is verified (its call must be ``start.callSid``) and
spent: its id is inserted into ``consumed_stream_tokens``, so a second socket presenting
the same token (a replay by whoever saw it) is refused like a forged one while the first
call goes on. Only then is any model or provider touched: a socket without a valid, unspent
token is closed with 1008 and costs a JSON parse and at most one INSERT.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, WebSocket
from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from dialgraph.server.core import costs
from dialgraph.server.core.call_store import consume_stream_token, get_call
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.limits import is_withheld
from dialgraph.server.core.security import (
    SIGNATURE_HEADER,
    InvalidStreamToken,
    StreamClaims,
    verify_stream_token,
    ws_signature_ok,
)
from dialgraph.server.core.settings import Settings
from dialgraph.server.routes.recordings import recorder_for
from dialgraph.server.services import Services
from dialgraph.telephony.call.session import CallSession, MediaSocket, SocketClosed
from dialgraph.telephony.call.turn_policy import TurnPolicy
from dialgraph.telephony.speech.base import open_stream
from dialgraph.telephony.twilio import codec
from dialgraph.telephony.twilio.protocol import HandshakeFailed, MediaStreamProtocol

log = structlog.get_logger(__name__)

router = APIRouter(tags=["media"])

MEDIA_PATH = "/twilio/media"
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
START_TIMEOUT_S = 10.0
SHUTDOWN_GRACE_S = 5.0


class StarletteMediaSocket:
    """``telephony.session.MediaSocket`` over Starlette's WebSocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def receive(self) -> str | bytes | None:
        if self._ws.client_state is not WebSocketState.CONNECTED:
            return None
        try:
            message = await self._ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] != "websocket.receive":
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    async def send(self, text: str) -> None:
        try:
            await self._ws.send({"type": "websocket.send", "text": text})
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise SocketClosed from exc

    async def close(self, code: int = 1000) -> None:
        if self._ws.application_state is WebSocketState.CONNECTED and self._ws.client_state is WebSocketState.CONNECTED:
            try:
                await self._ws.close(code)
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass


async def call_context(
    db: Database, settings: Settings, claims: StreamClaims
) -> tuple[CallContext, dt.datetime | None]:
    """Who is on the line, from the call row the webhook wrote (the token names the call),
    and when the call began (answered, else started; None without a row): one read."""
    call = await get_call(db, claims.call_sid)
    flow = claims.flow
    if flow not in settings.flows:
        flow = call.flow if call is not None and call.flow in settings.flows else settings.default_flow
    caller = called = ""
    previous = None
    direction = "inbound"
    contact: dict[str, Any] = {}
    began: dt.datetime | None = None
    if call is not None:
        outbound = call.direction == "outbound"
        caller = call.to_number if outbound else call.from_number
        called = call.from_number if outbound else call.to_number
        previous = call.previous_thread_id
        direction = call.direction
        contact = dict(call.context or {})
        began = call.answered_at or call.started_at
    else:
        log.warning("stream for a call without a record", call_sid=claims.call_sid)
    ctx = CallContext(
        call_sid=claims.call_sid,
        thread_id=claims.thread_id or claims.call_sid,
        caller=caller,
        called=called,
        flow=flow,
        flow_settings=settings.flows[flow],
        previous_thread_id=previous,
        direction=direction,
        contact=contact,
    )
    return ctx, began


def max_call_seconds(settings: Settings, ctx: CallContext, began: dt.datetime | None, now: dt.datetime) -> float | None:
    """Seconds the call may still last under ``max_call_minutes`` (``[limits]`` with the
    flow's overrides; None: no limit), counted from when it began, so a reconnected stream
    keeps the original deadline (<= 0: it is over already)."""
    minutes = settings.limits.merged(ctx.flow_settings.limits).max_call_minutes
    if not minutes:
        return None
    elapsed = max(0.0, (now - began).total_seconds()) if began is not None else 0.0
    return minutes * 60 - elapsed


async def _read_start(socket: MediaSocket, protocol: MediaStreamProtocol) -> codec.Start | None:
    """Feed ``protocol`` until the stream has started; None if it did not."""
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            frame = await socket.receive()
            if frame is None:
                return None
            event = protocol.receive_text(frame)
            if isinstance(event, codec.Start):
                return event
            if isinstance(event, HandshakeFailed):
                return None


@router.websocket(MEDIA_PATH)
async def media_stream(websocket: WebSocket) -> None:
    app: Any = websocket.app
    if not handshake_signed(app.state.settings, websocket.headers.get(SIGNATURE_HEADER)):
        log.warning("media socket refused: bad handshake signature")
        await websocket.close(code=POLICY_VIOLATION)  # before accept: HTTP 403
        return
    await websocket.accept()
    await serve_stream(app, StarletteMediaSocket(websocket))


def handshake_signed(settings: Settings, signature: str | None) -> bool:
    """The media socket's ``X-Twilio-Signature`` is good (or not checked)."""
    return not settings.validate_signatures or ws_signature_ok(
        settings.twilio_auth_token.get_secret_value(), settings.public_url, MEDIA_PATH, signature
    )


async def serve_stream(app: Any, socket: MediaSocket) -> None:
    """An accepted media socket: ``start`` and its stream token, then the call's session
    (this route over Starlette, or ``media_socket.py`` over picows)."""
    settings: Settings = app.state.settings
    protocol = MediaStreamProtocol()
    try:
        start = await _read_start(socket, protocol)
    except TimeoutError:
        start = None
    if start is None:
        log.warning("media socket closed: no valid start message")
        await socket.close(POLICY_VIOLATION)
        return
    try:
        claims = verify_stream_token(
            settings.stream_token_secret.get_secret_value(), start.custom_parameters.get("token", "")
        )
    except InvalidStreamToken as exc:
        log.warning("media socket closed: invalid stream token", call_sid=start.call_sid[:64], error=str(exc))
        await socket.close(POLICY_VIOLATION)
        return
    if claims.call_sid != start.call_sid:
        log.warning("media socket closed: token names another call", call_sid=start.call_sid[:64])
        await socket.close(POLICY_VIOLATION)
        return
    services: Services = app.state.services
    try:
        first_use = await consume_stream_token(
            services.db,
            jti=claims.jti,
            call_sid=claims.call_sid,
            expires_at=dt.datetime.fromtimestamp(claims.expires_at, dt.UTC),
        )
    except (SQLAlchemyError, OSError) as exc:
        # Fail closed. Letting the socket in unrecorded would reopen the replay window
        # exactly when it cannot be watched, and would not save the call: the session needs
        # this database for the call row, the transcript and every graph checkpoint.
        log.error(
            "media socket closed: stream token could not be recorded",
            call_sid=claims.call_sid,
            error=type(exc).__name__,
        )
        await socket.close(INTERNAL_ERROR)
        return
    if not first_use:
        log.warning("media socket closed: stream token already used", call_sid=claims.call_sid)
        await socket.close(POLICY_VIOLATION)
        return

    session = await open_session(app, services, socket, protocol, claims)
    active: dict[str, CallSession] = app.state.active_calls
    previous = active.get(claims.call_sid)
    if previous is not None:  # a reconnect while the old socket lingers: the new one wins
        previous.end(1000)
    active[claims.call_sid] = session
    try:
        await session.run()
    finally:
        if active.get(claims.call_sid) is session:
            del active[claims.call_sid]
        await socket.close(1000 if session.state.end_reason != "error" else 1011)


async def open_session(
    app: Any, services: Services, socket: MediaSocket, protocol: MediaStreamProtocol, claims: StreamClaims
) -> CallSession:
    """Build the session for an authenticated stream (first touch of providers and models)."""
    settings = services.settings
    ctx, began = await call_context(services.db, settings, claims)
    observer: Callable[[CallSession], None] | None = getattr(app.state, "call_observer", None)
    meter, spend_cap = await call_costs(services.db, settings, ctx)
    return CallSession(
        socket=socket,
        ctx=ctx,
        media=protocol,
        db=services.db,
        recognition=open_stream(
            services.recognizer,
            language=ctx.flow_settings.language,
            keyterms=ctx.flow_settings.keyterms,
            turn=settings.turn_for(ctx.flow),
        ),
        synthesizer=services.synthesizer,
        vad=services.vad_factory(),
        runner=services.runner(ctx.flow),
        policy=TurnPolicy(
            barge_in_min_ms=settings.barge_in_min_ms,
            barge_in_min_words=settings.barge_in_min_words,
            # backchannels are told apart by their words: only with text while the caller speaks
            backchannel_words=settings.backchannel_words if services.recognizer.capabilities.interim_results else (),
            backchannel_max_ms=settings.backchannel_max_ms,
        ),
        progress=services.reply_progress,
        call_events=services.call_events,
        signal=claims.signal,
        playback_lead_ms=settings.playback_lead_ms,
        on_finished=observer,
        max_call_s=max_call_seconds(settings, ctx, began, dt.datetime.now(dt.UTC)),
        meter=meter,
        spend_cap=spend_cap,
        recorder=recorder_for(settings, ctx),
        preemptive=settings.preemptive_replies,
    )


async def call_costs(
    db: Database, settings: Settings, ctx: CallContext
) -> tuple[costs.CallMeter, costs.SpendCap | None]:
    """The stream's usage meter (priced with ``[prices]``; the ASR and TTS keys of the
    configured providers, the flow's TTS model) and, when a daily budget is set, what was
    spent today before it (one read; an allow-listed caller has no cap)."""
    tts_key = costs.FREE
    if settings.tts_provider == "elevenlabs":
        tts_key = f"elevenlabs:{ctx.flow_settings.tts_model or settings.elevenlabs_model}"
    asr_key = f"deepgram:{settings.deepgram_model}" if settings.asr_provider == "deepgram" else costs.FREE
    # the country that prices the minutes: our number's inbound, the callee's outbound
    meter = costs.CallMeter(
        settings.prices,
        direction=ctx.direction,
        country=costs.country_of(ctx.caller if ctx.outbound else ctx.called),
        asr_key=asr_key,
        tts_key=tts_key,
    )
    rules = settings.limits.merged(ctx.flow_settings.limits)
    if not rules.budgets or ctx.caller in rules.allow:
        return meter, None
    per_caller = bool(rules.caller_daily_budget) and not ctx.outbound and not is_withheld(ctx.caller)
    caller_spent, deployment_spent = await costs.spent_today(
        db, caller=ctx.caller if per_caller else None, now=dt.datetime.now(dt.UTC)
    )
    cap = costs.SpendCap(
        caller_budget=rules.caller_daily_budget if per_caller else 0.0,
        deployment_budget=rules.deployment_daily_budget,
        caller_spent=caller_spent,
        deployment_spent=deployment_spent,
    )
    return meter, cap


async def close_active_calls(app: FastAPI) -> None:
    """Server shutdown: ask every live session to close its socket, await them all, and
    cancel any that do not finish within the grace period."""
    sessions: list[CallSession] = list(getattr(app.state, "active_calls", {}).values())
    if not sessions:
        return
    log.info("closing active calls", count=len(sessions))
    for session in sessions:
        session.end(1001)
    waits = [asyncio.ensure_future(s.wait_closed()) for s in sessions]
    done, pending = await asyncio.wait(waits, timeout=SHUTDOWN_GRACE_S)
    if pending:
        for session in sessions:
            session.cancel()
        await asyncio.wait(pending, timeout=SHUTDOWN_GRACE_S)
        for task in pending:
            task.cancel()
