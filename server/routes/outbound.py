"""Calling out (admin bearer token): place one call, run campaigns, keep the do-not-call list.

- ``POST /api/calls`` places one call: ``201 {"call_sid", "status": "queued"}``; a call that
  must not be placed is ``409 {"detail": {"reason", "rule", ...}}`` and no REST request is
  made; a number that is not E.164 or an unknown flow is 422 naming the field.
- ``/api/campaigns``: create (JSON contacts or a CSV upload), status and counts per outcome,
  pause / resume / cancel, contacts with their attempts and outcomes.
- ``/api/dnd``: add a number to the business's opt-out list, or remove it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dialgraph.server.core.flow_config import E164, CallingWindow, DltFields
from dialgraph.server.core.settings import Settings
from dialgraph.server.deps import DbDep, ServicesDep, SettingsDep
from dialgraph.server.outbound import campaigns
from dialgraph.server.outbound.types import OutboundRequest, Purpose, Refused
from dialgraph.server.routes.admin import require_admin
from dialgraph.telephony.twilio.call_control import CallControlError
from dialgraph.tools import do_not_call

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api", tags=["outbound"], dependencies=[Depends(require_admin)])


def field_error(field: str, message: str, value: Any = None) -> RequestValidationError:
    """A 422 in FastAPI's own shape, naming ``field`` of the body."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": message, "input": value, "ctx": {"error": message}}]
    )


def known_flow(settings: Settings, flow: str) -> None:
    if flow not in settings.flows:
        raise field_error("flow", f"unknown flow {flow!r} (known: {', '.join(sorted(settings.flows))})", flow)


def caller_id(settings: Settings, flow: str, given: str | None) -> str:
    """The number we call from: the request's, else the flow's, else the deployment's."""
    number = given or settings.flows[flow].caller_id or settings.outbound.default_from
    if not number:
        raise field_error(
            "from", f"no caller ID: give 'from', or set [flows.{flow}].caller_id or [outbound].default_from"
        )
    return number


class PlaceCallBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str = Field(pattern=E164, description="the callee, E.164")
    flow: str = Field(min_length=1, max_length=64)
    from_: str | None = Field(default=None, alias="from", pattern=E164, description="caller ID; default: the flow's")
    context: dict[str, Any] = Field(default_factory=dict, description="name, purpose and custom fields for the agent")
    purpose: Purpose = "service"
    dlt: DltFields | None = None
    timezone: str | None = Field(default=None, description="the callee's IANA zone, when known")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class PlacedOut(BaseModel):
    call_sid: str
    status: Literal["queued"] = "queued"


def refusal_answer(exc: Refused) -> HTTPException:
    return HTTPException(status_code=409, detail=exc.refusal.body())


def rest_failure(exc: CallControlError) -> HTTPException:
    return HTTPException(status_code=503 if exc.retryable else 502, detail=f"Twilio refused the call: {exc}")


@router.post("/calls", status_code=201, response_model=PlacedOut)
async def place_call(body: PlaceCallBody, services: ServicesDep, settings: SettingsDep) -> PlacedOut:
    """Place one outbound call on ``flow``; the agent speaks first, with ``context``."""
    known_flow(settings, body.flow)
    request = OutboundRequest(
        to=body.to,
        from_=caller_id(settings, body.flow, body.from_),
        flow=body.flow,
        purpose=body.purpose,
        context=body.context,
        dlt=body.dlt,
        timezone=body.timezone,
    )
    try:
        sid = await services.placer.place(request)
    except Refused as exc:
        log.info("outbound call refused", flow=body.flow, reason=exc.refusal.reason, rule=exc.refusal.rule)
        raise refusal_answer(exc) from exc
    except CallControlError as exc:
        raise rest_failure(exc) from exc
    return PlacedOut(call_sid=sid)


# --- campaigns ------------------------------------------------------------------------------
class CampaignIn(BaseModel):
    """A campaign as the API takes it: the contacts as a list, or as CSV text."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=128)
    flow: str = Field(min_length=1, max_length=64)
    from_: str | None = Field(default=None, alias="from", pattern=E164)
    contacts: list[dict[str, Any]] = Field(default_factory=list, max_length=100_000)
    contacts_csv: str | None = Field(default=None, max_length=20_000_000)
    max_concurrent: int = Field(default=1, ge=1, le=1000)
    calls_per_second: float = Field(default=1.0, gt=0, le=100)
    max_attempts: int = Field(default=1, ge=1, le=10)
    retry_after_s: int = Field(default=3600, ge=0, le=7 * 86400)
    window: CallingWindow | None = None
    purpose: Purpose = "service"
    dlt: DltFields | None = None


class RowErrorOut(BaseModel):
    line: int
    to: str | None
    error: str


class CampaignCreated(BaseModel):
    id: str
    contacts: int
    rejected: list[RowErrorOut] = Field(default_factory=list)


async def campaign_input(request: Request) -> CampaignIn:
    """The campaign from a JSON body, or from a multipart upload: a ``campaign`` field with
    the JSON settings and a ``contacts`` CSV file."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            raw = form.get("campaign")
            data = json.loads(raw if isinstance(raw, str) else "{}")
            upload = form.get("contacts")
            if upload is not None and not isinstance(upload, str):
                data["contacts_csv"] = (await upload.read()).decode("utf-8-sig")
            elif isinstance(upload, str):
                data["contacts_csv"] = upload
        else:
            data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise field_error("campaign", f"not valid JSON or UTF-8: {exc}") from exc
    if not isinstance(data, dict):
        raise field_error("campaign", "expected a JSON object")
    try:
        return CampaignIn.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc


@router.post("/campaigns", status_code=201, response_model=CampaignCreated)
async def create_campaign(
    body: Annotated[CampaignIn, Depends(campaign_input)], db: DbDep, settings: SettingsDep
) -> CampaignCreated:
    """Queue a campaign. Bad contact rows (bad number, duplicate) come back with their line
    numbers; the good rows are kept."""
    known_flow(settings, body.flow)
    from_number = caller_id(settings, body.flow, body.from_)
    if body.contacts_csv is not None:
        contacts, errors = campaigns.parse_contacts_csv(body.contacts_csv)
    else:
        contacts, errors = campaigns.parse_contacts(body.contacts)
    if not contacts:
        raise field_error("contacts", f"no valid contact ({len(errors)} rejected)", None)
    spec = campaigns.CampaignSpec(
        name=body.name,
        flow=body.flow,
        from_number=from_number,
        max_concurrent=body.max_concurrent,
        calls_per_second=body.calls_per_second,
        max_attempts=body.max_attempts,
        retry_after_s=body.retry_after_s,
        window=body.window,
        purpose=body.purpose,
        dlt=body.dlt,
    )
    campaign = await campaigns.create_campaign(db, spec, contacts)
    log.info("campaign created", campaign_id=campaign.id, contacts=len(contacts), rejected=len(errors))
    return CampaignCreated(
        id=campaign.id,
        contacts=len(contacts),
        rejected=[RowErrorOut(line=e.line, to=e.to, error=e.error) for e in errors],
    )


async def _campaign_or_404(db: DbDep, campaign_id: str) -> campaigns.CampaignStatus:
    state = await campaigns.status(db, campaign_id)
    if state is None:
        raise HTTPException(status_code=404, detail="unknown campaign")
    return state


@router.get("/campaigns/{campaign_id}", response_model=campaigns.CampaignStatus)
async def show_campaign(campaign_id: str, db: DbDep) -> campaigns.CampaignStatus:
    """The campaign and its contacts counted by where they stand (queued, dialing,
    in_progress) or how they ended (completed, no_answer, busy, voicemail, failed, skipped_*...)."""
    return await _campaign_or_404(db, campaign_id)


def _columns(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


@router.post("/campaigns/{campaign_id}/{action}", response_model=campaigns.CampaignStatus)
async def campaign_action(
    campaign_id: str, action: Literal["pause", "resume", "cancel"], db: DbDep
) -> campaigns.CampaignStatus:
    await _campaign_or_404(db, campaign_id)
    change = {"pause": campaigns.pause, "resume": campaigns.resume, "cancel": campaigns.cancel}[action]
    try:
        await change(db, campaign_id)
    except campaigns.CampaignStateError as exc:
        raise HTTPException(status_code=409, detail={"reason": "campaign_state", "message": str(exc)}) from exc
    log.info("campaign changed", campaign_id=campaign_id, action=action)
    return await show_campaign(campaign_id, db)


class ContactOut(BaseModel):
    id: int
    line: int
    to: str
    state: str
    outcome: str | None
    attempts: int
    call_sid: str | None
    next_attempt_at: dt.datetime


class ContactsPage(BaseModel):
    contacts: list[ContactOut]
    next_after: int | None


@router.get("/campaigns/{campaign_id}/contacts", response_model=ContactsPage)
async def campaign_contacts(
    campaign_id: str,
    db: DbDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> ContactsPage:
    await _campaign_or_404(db, campaign_id)
    rows = await campaigns.list_contacts(db, campaign_id, after_id=after, limit=limit)
    out = [ContactOut.model_validate({**_columns(r), "to": r.to_number}) for r in rows]
    return ContactsPage(contacts=out, next_after=out[-1].id if len(out) == limit else None)


# --- do-not-call ----------------------------------------------------------------------------
class DndIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(pattern=E164)
    reason: str = Field(default="added by an operator", max_length=128)


@router.post("/dnd", status_code=201)
async def add_dnd(body: DndIn, db: DbDep) -> dict[str, str]:
    """Put a number on the business's own opt-out list (never called again, any purpose)."""
    await do_not_call.add_opt_out(db, body.number, reason=body.reason, audit_rule="admin.dnd")
    log.info("number opted out by an operator")
    return {"number": body.number, "source": "opt_out"}


@router.delete("/dnd/{number}", status_code=204)
async def remove_dnd(number: str, db: DbDep, settings: SettingsDep) -> Response:
    """Take a number off the opt-out list (the national registry's entries stay: they change
    only by importing a newer registry file), its hashed entry too if the person was erased."""
    from dialgraph.server.privacy.hashing import privacy_key

    try:
        removed = await do_not_call.remove(db, number, source="opt_out", hash_key=privacy_key(settings))
    except do_not_call.InvalidNumber as exc:
        raise HTTPException(status_code=422, detail=f"number: {exc}") from exc
    if not removed:
        raise HTTPException(status_code=404, detail="number is not on the opt-out list")
    log.info("number removed from the opt-out list")
    return Response(status_code=204)
