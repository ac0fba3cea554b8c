"""The console's pages and form actions (``/dashboard``).

Every page needs a session cookie (``session.py``): without one, a page redirects to the
login form. Actions (log out, hang up, transfer) are POSTed forms checked for the session's
CSRF token and a same-origin ``Origin`` header. Text that leaves here passes the redactor;
phone numbers are shown masked.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import structlog
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from dialgraph.server.core.models import Campaign
from dialgraph.server.dashboard.session import COOKIE, PRE_COOKIE, Session, SessionSigner, new_login_nonce
from dialgraph.server.deps import DbDep, ServicesDep, SettingsDep
from dialgraph.server.outbound import campaigns as campaign_store

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/dashboard", include_in_schema=False)

FAILED_LOGIN_DELAY_S = 0.5  # slows guessing; awaited, never blocking the loop
DONE_KEYS = ("completed", "no_answer", "busy", "voicemail", "failed", "canceled", "opted_out")


def signer(request: Request) -> SessionSigner:
    """The app's one session signer (built on first use from the settings)."""
    found: SessionSigner | None = getattr(request.app.state, "dashboard_signer", None)
    if found is None:
        settings = request.app.state.settings
        found = SessionSigner(
            settings.admin_token.get_secret_value(), lifetime_s=settings.dashboard_session_hours * 3600
        )
        request.app.state.dashboard_signer = found
    return found


def _login_redirect(request: Request) -> HTTPException:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(status_code=303, headers={"Location": f"/dashboard/login?next={quote(target, safe='')}"})


def page_session(request: Request) -> Session:
    """A page's session, or a redirect to the login form."""
    session = signer(request).verify(request.cookies.get(COOKIE))
    if session is None:
        raise _login_redirect(request)
    return session


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:  # old browsers send neither on same-origin POSTs; the CSRF token still holds
        return True
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def action_session(request: Request, csrf: Annotated[str, Form()] = "") -> Session:
    """A form action's session: valid cookie, same origin, and the session's CSRF token."""
    session = signer(request).verify(request.cookies.get(COOKIE))
    if session is None:
        raise _login_redirect(request)
    if not _same_origin(request) or not SessionSigner.check_csrf(session, csrf):
        log.warning("dashboard action refused: CSRF check failed", path=request.url.path)
        raise HTTPException(status_code=403, detail="CSRF check failed: reload the page and try again")
    return session


PageSession = Annotated[Session, Depends(page_session)]
ActionSession = Annotated[Session, Depends(action_session)]


def _secure(request: Request) -> bool:
    return str(request.app.state.settings.public_url).startswith("https://") or request.url.scheme == "https"


def _safe_next(target: str) -> str:
    """Only a path inside the console (no scheme, host or ``//``): no open redirect."""
    if not target.startswith("/dashboard") or target.startswith("//") or "\\" in target:
        return "/dashboard/live"
    return target


def render(request: Request, name: str, session: Session | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"session": session, **context})


# --- login ---------------------------------------------------------------------------------
@router.get("", include_in_schema=False)
async def home() -> RedirectResponse:
    return RedirectResponse("/dashboard/live", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/dashboard/live") -> Response:
    if signer(request).verify(request.cookies.get(COOKIE)) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    nonce = new_login_nonce()
    response = render(
        request, "login.html", None, enabled=signer(request).enabled, login_csrf=nonce, next=_safe_next(next)
    )
    response.set_cookie(
        PRE_COOKIE, nonce, httponly=True, samesite="strict", secure=_secure(request), path="/dashboard", max_age=3600
    )
    return response


@router.post("/login")
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=512)] = "",
    csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/dashboard/live",
) -> Response:
    sign = signer(request)
    pre = request.cookies.get(PRE_COOKIE, "")
    if not pre or not csrf or pre != csrf or not _same_origin(request):
        raise HTTPException(status_code=403, detail="login form expired: reload the page and try again")
    if not sign.check_token(token):
        log.warning("dashboard login refused")
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)
        nonce = new_login_nonce()
        response = render(
            request,
            "login.html",
            None,
            enabled=sign.enabled,
            login_csrf=nonce,
            next=_safe_next(next),
            error="That token is not right.",
        )
        response.status_code = 401
        response.set_cookie(
            PRE_COOKIE, nonce, httponly=True, samesite="strict", secure=_secure(request), path="/dashboard"
        )
        return response
    log.info("dashboard login")
    done = RedirectResponse(_safe_next(next), status_code=303)
    done.set_cookie(
        COOKIE,
        sign.issue(),
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
        max_age=int(sign.lifetime_s),
    )
    done.delete_cookie(PRE_COOKIE, path="/dashboard")
    return done


@router.post("/logout")
async def logout(request: Request, session: ActionSession) -> RedirectResponse:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# --- flows and campaigns -------------------------------------------------------------------
@router.get("/flows", response_class=HTMLResponse)
async def flows_page(
    request: Request, session: PageSession, services: ServicesDep, settings: SettingsDep
) -> HTMLResponse:
    from dialgraph.server.dashboard.flow_pictures import flow_svg

    numbers: dict[str, list[str]] = {}
    for number, flow in settings.numbers.items():
        numbers.setdefault(flow, []).append(number)
    flows = []
    for name, flow_settings in sorted(settings.flows.items()):
        runner = services.runners.get(name)
        flows.append(
            {
                "name": name,
                "numbers": numbers.get(name, []),
                "svg": flow_svg(runner, title=f"{name} flow graph") if runner is not None else None,
                "config": json.dumps(
                    flow_settings.model_dump(mode="json", exclude_none=True), indent=2, ensure_ascii=False
                ),
            }
        )
    return render(request, "flows.html", session, page="flows", flows=flows, default_flow=settings.default_flow)


@router.get("/campaigns", response_class=HTMLResponse)
async def campaigns_page(request: Request, session: PageSession, db: DbDep) -> HTMLResponse:
    async with db.sessionmaker() as s:
        rows = list((await s.scalars(select(Campaign).order_by(Campaign.created_at.desc()).limit(50))).all())
    shown = []
    for campaign in rows:
        tally = await campaign_store.counts(db, campaign.id)
        total = sum(tally.values())
        done = sum(v for k, v in tally.items() if k in DONE_KEYS or k.startswith("skipped"))
        shown.append(
            {
                "id": campaign.id,
                "name": campaign.name,
                "flow": campaign.flow,
                "status": campaign.status,
                "counts": tally,
                "total": total,
                "done": done,
                "created_at": campaign.created_at,
            }
        )
    return render(request, "campaigns.html", session, page="campaigns", campaigns=shown)


# --- calls ---------------------------------------------------------------------------------
WATERFALL = (  # (key in an agent turn's data["timings"], label): each stage ends at its mark
    ("asr_final_ms", "end of speech → ASR final"),
    ("first_token_ms", "→ first model token"),
    ("first_tts_audio_ms", "→ first TTS audio"),
    ("first_frame_ms", "→ first frame sent"),
)


def _waterfall(events: list[Any]) -> list[dict[str, Any]]:
    """Per agent turn: its stages from the stored timings (ms from the caller's end of
    speech, each a mark), else the single stored latency."""
    turns = []
    for e in events:
        if e.kind != "turn" or e.role != "agent" or e.latency_ms is None and not (e.data or {}).get("timings"):
            continue
        timings = (e.data or {}).get("timings") or {}
        segments: list[dict[str, Any]] = []
        last = 0.0
        for stage, (key, label) in enumerate(WATERFALL, start=1):
            mark = timings.get(key)
            if isinstance(mark, int | float) and mark >= last:
                segments.append({"stage": stage, "label": label, "ms": mark - last})
                last = float(mark)
        if not segments and e.latency_ms is not None:  # only the service's share is known
            segments = [{"stage": 4, "label": "ASR final → first frame sent", "ms": e.latency_ms}]
            last = e.latency_ms
        total = last or None
        for seg in segments:
            seg["pct"] = 100 * float(seg["ms"]) / total if total else 0
        turns.append({"trigger": (e.data or {}).get("trigger"), "total_ms": total, "segments": segments})
    return turns


@router.get("/calls", response_class=HTMLResponse)
async def calls_page(
    request: Request,
    session: PageSession,
    db: DbDep,
    settings: SettingsDep,
    flow: str = "",
    direction: str = "",
    outcome: str = "",
    phone: str = "",
    to: str = "",
    cursor: str = "",
) -> HTMLResponse:
    from fastapi.exceptions import RequestValidationError

    from dialgraph.server.core.enums import CallOutcome
    from dialgraph.server.routes.calls_api import list_calls

    since = request.query_params.get("from", "")
    filters = {"flow": flow, "direction": direction, "outcome": outcome, "phone": phone, "from": since, "to": to}
    error, calls, total, next_cursor = None, [], 0, None
    try:
        if direction not in ("", "inbound", "outbound"):
            raise ValueError("direction: inbound or outbound")
        try:
            wanted = CallOutcome(outcome) if outcome else None
        except ValueError:
            raise ValueError(f"outcome: one of {', '.join(o.value for o in CallOutcome)}") from None
        page = await list_calls(
            db,
            flow=flow or None,
            direction=direction or None,  # type: ignore[arg-type]
            outcome=wanted,
            status=None,
            campaign_id=None,
            phone=phone.strip() or None,
            from_=since or None,
            to=to or None,
            limit=50,
            cursor=cursor or None,
        )
        calls, total, next_cursor = page.items, page.total, page.next_cursor
    except RequestValidationError as exc:
        first = exc.errors()[0]
        error = f"{first['loc'][-1]}: {first['msg']}"
    except ValueError as exc:
        error = str(exc)
    query = {k: v for k, v in filters.items() if v}
    next_url = "/dashboard/calls?" + "&".join(
        f"{k}={quote(v)}" for k, v in {**query, "cursor": next_cursor or ""}.items()
    )
    return render(
        request,
        "calls.html",
        session,
        page="calls",
        calls=calls,
        total=total,
        filters=filters,
        flows=sorted(settings.flows),
        error=error,
        next_cursor=next_cursor,
        next_url=next_url,
    )


@router.get("/live", response_class=HTMLResponse)
async def live_page(request: Request, session: PageSession, db: DbDep, settings: SettingsDep) -> HTMLResponse:
    from dialgraph.server.routes.calls_api import live_calls

    live = await live_calls(db)
    targets = {name: sorted(flow.transfer_targets) for name, flow in settings.flows.items()}
    return render(request, "live.html", session, page="live", calls=live.items, targets=targets)


@router.get("/calls/{sid}", response_class=HTMLResponse)
async def call_page(
    sid: str, request: Request, session: PageSession, db: DbDep, services: ServicesDep, settings: SettingsDep
) -> HTMLResponse:
    from dialgraph.server.core.enums import TERMINAL_STATUSES
    from dialgraph.server.core.redaction import redactor_for
    from dialgraph.server.dashboard.flow_pictures import call_path, flow_svg
    from dialgraph.server.routes.admin import show_call
    from dialgraph.server.routes.calls_api import mask_number

    call = await show_call(sid, db, settings)  # 404 for an unknown call; text redacted
    call.from_number, call.to_number = mask_number(call.from_number), mask_number(call.to_number)
    runner = services.runners.get(call.flow)
    redact = redactor_for(settings.redaction).redact
    path = await call_path(runner, [call.thread_id] if call.thread_id else [], redact)
    events = []
    for e in call.events:
        data = e.data or {}
        detail = data.get("action") or data.get("target") or data.get("status") or ""
        unheard = data.get("unheard") if e.interrupted else None
        events.append({**e.model_dump(), "detail": detail, "unheard": redact(unheard) if unheard else None})
    since = call.answered_at or call.started_at
    duration = int((call.ended_at - since).total_seconds()) if call.ended_at else None
    return render(
        request,
        "call.html",
        session,
        page="calls",
        call=call,
        events=events,
        duration_s=duration,
        live=call.status not in TERMINAL_STATUSES,
        turns=_waterfall(call.events),
        stages=[{"label": label} for _, label in WATERFALL],
        cost=call.cost.model_dump() if call.cost else None,
        usage=json.dumps(call.usage, indent=2) if call.usage else None,
        svg=flow_svg(runner, title=f"{call.flow}: this call's path", path=path) if runner is not None else None,
        runs=[[n.strip("_") if n in ("__start__", "__end__") else n for n in run] for run in path.runs],
        tool_calls=path.tool_calls,
        analysis=call.analysis,
        recording_url=f"/dashboard/calls/{call.sid}/recording" if call.recording_url else None,
    )


@router.get("/calls/{sid}/events")
async def call_events_page_stream(sid: str, request: Request, session: PageSession, db: DbDep, settings: SettingsDep):  # type: ignore[no-untyped-def]
    """The call's live events for the console (the session cookie instead of the bearer token)."""
    from fastapi.responses import StreamingResponse

    from dialgraph.server.core.redaction import redactor_for
    from dialgraph.server.routes.calls_api import event_stream

    after = request.headers.get("last-event-id", "")
    stream = event_stream(db, sid, after=int(after) if after.isdigit() else 0, redact=redactor_for(settings.redaction))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@router.post("/calls/{sid}/hangup")
async def hangup_action(sid: str, session: ActionSession, db: DbDep, services: ServicesDep) -> RedirectResponse:
    from dialgraph.server.routes.admin import hangup_call

    await hangup_call(sid, db, services)
    return RedirectResponse("/dashboard/live", status_code=303)


@router.post("/calls/{sid}/transfer")
async def transfer_action(
    sid: str,
    session: ActionSession,
    db: DbDep,
    services: ServicesDep,
    settings: SettingsDep,
    target: Annotated[str, Form(min_length=1, max_length=64)],
) -> RedirectResponse:
    from dialgraph.server.routes.admin import TransferBody, transfer_call

    await transfer_call(sid, TransferBody(target=target), db, services, settings)
    return RedirectResponse("/dashboard/live", status_code=303)


# --- webhooks ------------------------------------------------------------------------------
DELIVERY_STATUSES = ("pending", "delivering", "delivered", "failed")


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks_page(
    request: Request, session: PageSession, db: DbDep, settings: SettingsDep, status: str = "", cursor: str = ""
) -> HTMLResponse:
    from dialgraph.server.webhooks import queue

    after = None
    if cursor:
        try:
            after = queue.decode_cursor(cursor)
        except ValueError:
            after = None
    rows, more = await queue.list_deliveries(
        db, status=status if status in DELIVERY_STATUSES else None, cursor=after, limit=50
    )
    configured = bool(settings.webhooks.endpoints) or any(
        f.webhooks and f.webhooks.endpoints for f in settings.flows.values()
    )
    return render(
        request,
        "webhooks.html",
        session,
        page="webhooks",
        deliveries=rows,
        statuses=DELIVERY_STATUSES,
        status=status,
        configured=configured,
        next_cursor=queue.encode_cursor(rows[-1]) if more and rows else None,
    )


@router.post("/webhooks/{delivery_id}/retry")
async def retry_webhook_action(delivery_id: str, session: ActionSession, db: DbDep) -> RedirectResponse:
    from dialgraph.server.webhooks import queue

    await queue.retry(db, delivery_id)  # a delivered or in-flight one is left as it is
    return RedirectResponse("/dashboard/webhooks", status_code=303)
