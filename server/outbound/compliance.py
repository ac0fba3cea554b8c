"""Whether an outbound call may be placed now: the rules, as data, and the one check.

Order (the first rule that refuses decides, and names itself in ``Refusal.rule``):

1. ``business.opt_out``: the callee is on the business's own opt-out list (any purpose);
   a number is also looked up as its keyed hash (``tools.do_not_call.number_hash``), the
   form an erased person's entries are kept in, so erasure never lifts an opt-out;
2. ``trai.ncpr.promotional`` / ``trai.ncpr.service``: the national DND registry (NCPR);
   a promotional call is blocked by any entry, a service call by a fully blocked entry
   (category 0) unless the contact carries explicit consent, a transactional call never;
3. ``trai.dlt``: a call to +91 needs the sender's DLT principal entity id, registered header
   and purpose; a promotional one must come from the promotional series (``+91140``);
4. ``window.calling_hours`` / ``trai.calling_hours.promotional``: the local calling window
   in every time zone of the callee (+91 promotional calls: also TRAI's 10:00-21:00 band);
5. ``limits.callee_attempts_per_day``: calls placed to the number in the last 24 hours.

The rule functions are pure (values in, ``Refusal | None`` out); ``check`` reads what they
need from SQL in at most two round trips. Where each rule comes from: the README's
"Compliance rules dialgraph enforces".
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezone
from sqlalchemy import select

from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import CallingWindow
from dialgraph.server.core.models import DoNotCall, OutboundAudit
from dialgraph.server.core.settings import Settings
from dialgraph.server.outbound.types import OutboundRequest, Refusal
from dialgraph.server.privacy.hashing import number_hash, privacy_key

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
INDIA = "+91"
OPT_OUT = "opt_out"
NCPR = "ncpr"
FULLY_BLOCKED = "0"
PURPOSES = ("promotional", "service", "transactional")
DAY = dt.timedelta(hours=24)
# TCCCPR 2018's default time band for promotional calls to Indian mobiles, as a Minister
# stated it in the Lok Sabha (Nov 2019): 10:00-21:00. Industry pages say 09:00-21:00; we
# apply the narrower one to promotional calls to +91 (see the README's compliance section).
TRAI_PROMOTIONAL_START = "10:00"
TRAI_PROMOTIONAL_END = "21:00"
# A number whose zones span more than this (a toll-free or non-geographic number) says
# nothing useful about where the callee is: the flow's zone (or the contact's) decides.
MAX_ZONE_SPREAD = dt.timedelta(hours=6)


# --- numbers and zones ------------------------------------------------------------------------
def valid_e164(number: str) -> bool:
    """``+`` and 7-15 digits that ``phonenumbers`` can parse (a possible number of a country)."""
    if not E164.match(number):
        return False
    try:
        phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return False
    return True


def callee_zones(number: str, timezone: str | None, fallback: str, *, at: dt.datetime | None = None) -> list[ZoneInfo]:
    """The callee's time zone(s): ``timezone`` (the contact's) when it names a zone, else the
    number's zones (``phonenumbers``: one for most geographic numbers, several for a country
    or area spanning zones), else ``fallback`` (the flow's zone). A set of zones spanning more
    than ``MAX_ZONE_SPREAD`` at ``at`` (now) counts as unknown."""
    if timezone:
        try:
            return [ZoneInfo(timezone)]
        except (ZoneInfoNotFoundError, ValueError):
            pass
    zones = _number_zones(number)
    if zones:
        when = at or dt.datetime.now(dt.UTC)
        offsets = [when.astimezone(z).utcoffset() or dt.timedelta() for z in zones]
        if max(offsets) - min(offsets) <= MAX_ZONE_SPREAD:
            return zones
    return [ZoneInfo(fallback)]


def _number_zones(number: str) -> list[ZoneInfo]:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return []
    zones: list[ZoneInfo] = []
    for name in phone_timezone.time_zones_for_number(parsed):
        if name == "Etc/Unknown":
            continue
        try:
            zones.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return zones


# --- the rules (pure) -------------------------------------------------------------------------
class DncEntry(Protocol):
    """A do-not-call row as the rules read it (``DoNotCall``, or a row of its columns)."""

    @property
    def source(self) -> str: ...
    @property
    def categories(self) -> str | None: ...


def dnd_refusal(rows: Sequence[DncEntry], purpose: str, *, consent: bool = False) -> Refusal | None:
    """The do-not-call lists: the opt-out list blocks every purpose; an NCPR entry blocks a
    promotional call (any entry: we cannot tell the campaign's preference category, and we
    cannot verify consent recorded on DLT), a service call when fully blocked (category 0)
    unless ``consent`` (the contact's explicit consent), and never a transactional call."""
    if any(r.source == OPT_OUT for r in rows):
        return Refusal("opted_out", "business.opt_out")
    ncpr = [r for r in rows if r.source == NCPR]
    if not ncpr:
        return None
    categories = sorted({c for r in ncpr for c in (r.categories or FULLY_BLOCKED).split(",") if c})
    if purpose == "promotional":
        return Refusal("dnd", "trai.ncpr.promotional", {"categories": categories})
    if purpose == "service" and FULLY_BLOCKED in categories and not consent:
        return Refusal("dnd", "trai.ncpr.service", {"categories": categories})
    return None


def dlt_refusal(req: OutboundRequest, settings: Settings) -> Refusal | None:
    """India's DLT facts, for +91 callees only: the principal entity id and the registered
    header (the request's ``dlt`` over ``[outbound.dlt]``), a known purpose, and for a
    promotional call a caller ID in one of ``[outbound].promotional_prefixes``."""
    if not req.to.startswith(INDIA):
        return None
    dlt = settings.outbound.dlt.merged(req.dlt)
    missing: list[str] = []
    if not (dlt.entity_id or "").strip():
        missing.append("entity_id")
    if not (dlt.header or "").strip():
        missing.append("header")
    if req.purpose not in PURPOSES:
        missing.append("purpose")
    prefixes = settings.outbound.promotional_prefixes
    if req.purpose == "promotional" and prefixes and not req.from_.startswith(tuple(prefixes)):
        missing.append(f"from (promotional series {', '.join(prefixes)})")
    if missing:
        return Refusal("dlt_missing", "trai.dlt", {"missing": missing})
    return None


def hours_refusal(
    req: OutboundRequest, window: CallingWindow, zones: Sequence[ZoneInfo], now: dt.datetime
) -> Refusal | None:
    """The calling window, in every one of the callee's ``zones``. A promotional call to +91
    also keeps to TRAI's promotional band. ``next_allowed_at`` is the earliest UTC instant
    (ISO, ``Z``) at which the call would be allowed (null when it never would be)."""
    effective: CallingWindow | None = window
    if req.purpose == "promotional" and req.to.startswith(INDIA):
        effective = _narrowed(window, TRAI_PROMOTIONAL_START, TRAI_PROMOTIONAL_END)
    rule = "window.calling_hours"
    if window.next_allowed(now, zones) is None:
        if effective is not None and effective.next_allowed(now, zones) is None:
            return None
        rule = "trai.calling_hours.promotional"
    at = effective.next_allowed(now, zones) if effective is not None else None
    detail: dict[str, Any] = {"next_allowed_at": _iso(at) if at is not None else None, "zones": [z.key for z in zones]}
    return Refusal("calling_hours", rule, detail)


def _narrowed(window: CallingWindow, start: str, end: str) -> CallingWindow | None:
    """``window`` within ``start``-``end`` on its days; None when they do not overlap."""
    start, end = max(window.start, start), min(window.end, end)
    if start >= end:
        return None
    return CallingWindow(start=start, end=end, days=list(window.days))


def attempts_refusal(placed_at: Sequence[dt.datetime], limit: int, now: dt.datetime) -> Refusal | None:
    """At most ``limit`` calls placed to one number in any 24 hours (0: no limit).
    ``placed_at``: when the calls of the last 24 h were placed."""
    if limit <= 0:
        return None
    recent = sorted(t for t in placed_at if t > now - DAY)
    if len(recent) < limit:
        return None
    frees_at = recent[len(recent) - limit] + DAY  # when one of the counted calls ages out
    retry = max(1, math.ceil((frees_at - now).total_seconds()))
    return Refusal("rate_limited", "limits.callee_attempts_per_day", {"retry_after_s": retry, "limit": limit})


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _consent(context: Mapping[str, Any]) -> bool:
    return context.get("consent") is True


# --- the check ----------------------------------------------------------------------------------
async def check(db: Database, settings: Settings, req: OutboundRequest, now: dt.datetime) -> Refusal | None:
    """The first rule that refuses ``req`` at ``now``, or None: the call may be placed.
    Reads the do-not-call rows, and (only when the other rules pass) the calls placed to
    the number in the last 24 hours: at most two round trips, on one connection."""
    flow = settings.flows.get(req.flow)
    limit = settings.limits.merged(flow.limits if flow is not None else None).callee_attempts_per_day
    keys = [req.to, number_hash(req.to, privacy_key(settings))]  # the number, and as kept once erased
    async with db.engine.connect() as conn:
        entries = (
            await conn.execute(select(DoNotCall.source, DoNotCall.categories).where(DoNotCall.number.in_(keys)))
        ).all()
        refusal = dnd_refusal(entries, req.purpose, consent=_consent(req.context)) or dlt_refusal(req, settings)
        if refusal is None:
            flow = settings.flows.get(req.flow)
            fallback = flow.timezone if flow is not None else "UTC"
            zones = callee_zones(req.to, req.timezone, fallback, at=now)
            refusal = hours_refusal(req, req.window or settings.outbound.window, zones, now)
        if refusal is None and limit > 0:
            placed = await conn.scalars(
                select(OutboundAudit.at).where(
                    OutboundAudit.to_number == req.to,
                    OutboundAudit.at > now - DAY,
                    OutboundAudit.decision == "placed",
                )
            )
            refusal = attempts_refusal(list(placed), limit, now)
    return refusal
