"""The compliance rules: pure rule functions, and ``check`` over a real SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert

from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import CallingWindow, DltFields
from dialgraph.server.core.models import DoNotCall, OutboundAudit
from dialgraph.server.core.settings import LimitsSettings, OutboundSettings, Settings
from dialgraph.server.outbound.compliance import (
    attempts_refusal,
    callee_zones,
    check,
    dlt_refusal,
    dnd_refusal,
    hours_refusal,
    valid_e164,
)
from dialgraph.server.outbound.types import OutboundRequest, Purpose

IN = "+919876543210"  # an Indian mobile: Asia/Calcutta
NY = "+12125551234"  # New York
PROMO_FROM = "+911401234567"
IST = ZoneInfo("Asia/Kolkata")
NYC = ZoneInfo("America/New_York")
GOOD_DLT = OutboundSettings(dlt=DltFields(entity_id="1101000000000000001", header="ACMEDL"))


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def request(to: str = IN, *, purpose: Purpose = "service", from_: str = "+15550001111", **kw: Any) -> OutboundRequest:
    return OutboundRequest(to=to, from_=from_, flow="sales", purpose=purpose, **kw)


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path, _env_file=None, **kw)  # type: ignore[call-arg]


class Entry:
    def __init__(self, source: str, categories: str | None = "0") -> None:
        self.source, self.categories = source, categories


# --- numbers and zones -----------------------------------------------------------------------
def test_valid_e164() -> None:
    assert valid_e164(IN) and valid_e164(NY) and valid_e164("+15551234567")
    for bad in ("919876543210", "+0123456789", "+1234", "+12345678901234567", "+99912345678", "+1 212 555 1234"):
        assert not valid_e164(bad), bad


def test_callee_zones() -> None:
    assert [z.key for z in callee_zones(IN, None, "UTC")] == ["Asia/Calcutta"]
    assert callee_zones(NY, None, "UTC") == [NYC]
    assert callee_zones(NY, "Europe/Rome", "UTC") == [ZoneInfo("Europe/Rome")]  # the contact's zone wins
    assert callee_zones(NY, "Not/AZone", "UTC") == [NYC]
    assert callee_zones("+15551234567", None, "Europe/Rome") == [ZoneInfo("Europe/Rome")]  # Etc/Unknown
    assert callee_zones("+18005551234", None, "Europe/Rome") == [ZoneInfo("Europe/Rome")]  # toll-free: everywhere
    assert {z.key for z in callee_zones("+447911123456", None, "UTC")} >= {"Europe/London"}


# --- calling hours -----------------------------------------------------------------------------
def test_india_at_22_ist_waits_for_09_ist() -> None:
    now = utc("2026-03-04T16:30:00")  # 22:00 IST, a Wednesday
    refusal = hours_refusal(request(IN), CallingWindow(), [IST], now)
    assert refusal is not None
    assert (refusal.reason, refusal.rule) == ("calling_hours", "window.calling_hours")
    assert refusal.detail["next_allowed_at"] == "2026-03-05T03:30:00Z"  # 09:00 IST
    assert hours_refusal(request(IN), CallingWindow(), [IST], utc("2026-03-05T03:30:00")) is None


def test_india_promotional_keeps_to_trai_band() -> None:
    at_0930_ist = utc("2026-03-05T04:00:00")
    assert hours_refusal(request(IN, purpose="service"), CallingWindow(), [IST], at_0930_ist) is None
    refusal = hours_refusal(request(IN, purpose="promotional"), CallingWindow(), [IST], at_0930_ist)
    assert refusal is not None and refusal.rule == "trai.calling_hours.promotional"
    assert refusal.detail["next_allowed_at"] == "2026-03-05T04:30:00Z"  # 10:00 IST
    late = hours_refusal(request(IN, purpose="promotional"), CallingWindow(), [IST], utc("2026-03-04T16:30:00"))
    assert late is not None and late.detail["next_allowed_at"] == "2026-03-05T04:30:00Z"
    # a US promotional call is not narrowed
    assert hours_refusal(request(NY, purpose="promotional"), CallingWindow(), [NYC], utc("2026-03-05T14:05:00")) is None


def test_us_number_in_its_own_zone() -> None:
    now = utc("2026-03-05T03:00:00")  # 22:00 EST on Wednesday
    refusal = hours_refusal(request(NY), CallingWindow(), [NYC], now)
    assert refusal is not None and refusal.detail["next_allowed_at"] == "2026-03-05T14:00:00Z"  # 09:00 EST
    assert refusal.detail["zones"] == ["America/New_York"]
    summer = hours_refusal(request(NY), CallingWindow(), [NYC], utc("2026-07-01T02:00:00"))  # 22:00 EDT
    assert summer is not None and summer.detail["next_allowed_at"] == "2026-07-01T13:00:00Z"


def test_excluded_days_are_skipped() -> None:
    weekdays = CallingWindow(start="10:00", end="18:00", days=["mon", "tue", "wed", "thu", "fri"])
    saturday_noon = utc("2026-03-07T17:00:00")  # 12:00 EST, Saturday
    refusal = hours_refusal(request(NY), weekdays, [NYC], saturday_noon)
    assert refusal is not None and refusal.detail["next_allowed_at"] == "2026-03-09T14:00:00Z"  # Mon 10:00 EDT


def test_window_with_no_trai_overlap_never_allows_promotional() -> None:
    early = CallingWindow(start="07:00", end="09:30")
    refusal = hours_refusal(request(IN, purpose="promotional"), early, [IST], utc("2026-03-05T02:00:00"))
    assert refusal is not None and refusal.detail["next_allowed_at"] is None


# --- DLT ---------------------------------------------------------------------------------------
def test_dlt_names_what_is_missing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    refusal = dlt_refusal(request(IN), settings)
    assert refusal is not None and (refusal.reason, refusal.rule) == ("dlt_missing", "trai.dlt")
    assert refusal.detail["missing"] == ["entity_id", "header"]
    partial = dlt_refusal(request(IN, dlt=DltFields(entity_id="1101")), settings)
    assert partial is not None and partial.detail["missing"] == ["header"]
    assert dlt_refusal(request(IN, dlt=DltFields(entity_id="1101", header="ACME")), settings) is None
    assert dlt_refusal(request(NY), settings) is None  # India only


def test_dlt_deployment_facts_and_promotional_series(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, outbound=GOOD_DLT)
    assert dlt_refusal(request(IN), settings) is None
    promo = dlt_refusal(request(IN, purpose="promotional", from_="+911601234567"), settings)
    assert promo is not None and promo.detail["missing"] == ["from (promotional series +91140)"]
    assert dlt_refusal(request(IN, purpose="promotional", from_=PROMO_FROM), settings) is None
    # the call's own DLT facts override the deployment's, field by field
    blank = dlt_refusal(request(IN, dlt=DltFields(header=" ")), settings)
    assert blank is not None and blank.detail["missing"] == ["header"]


# --- do not call ----------------------------------------------------------------------------
def test_opt_out_blocks_every_purpose() -> None:
    for purpose in ("promotional", "service", "transactional"):
        refusal = dnd_refusal([Entry("opt_out", None)], purpose)
        assert refusal is not None and (refusal.reason, refusal.rule) == ("opted_out", "business.opt_out")


def test_ncpr_by_purpose() -> None:
    full, partial = [Entry("ncpr", "0")], [Entry("ncpr", "1,2,7")]
    promo = dnd_refusal(partial, "promotional")
    assert promo is not None and (promo.reason, promo.rule) == ("dnd", "trai.ncpr.promotional")
    assert promo.detail["categories"] == ["1", "2", "7"]
    assert dnd_refusal(full, "promotional", consent=True) is not None  # unverifiable consent does not lift it
    service = dnd_refusal(full, "service")
    assert service is not None and service.rule == "trai.ncpr.service"
    assert dnd_refusal(full, "service", consent=True) is None
    assert dnd_refusal(partial, "service") is None
    assert dnd_refusal(full, "transactional") is None
    assert dnd_refusal([], "promotional") is None


def test_attempts_per_day_pure() -> None:
    now = utc("2026-03-05T12:00:00")
    placed = [now - dt.timedelta(hours=h) for h in (30, 20, 5, 1)]  # 3 within 24 h
    refusal = attempts_refusal(placed, 3, now)
    assert refusal is not None and (refusal.reason, refusal.rule) == ("rate_limited", "limits.callee_attempts_per_day")
    assert refusal.detail["retry_after_s"] == 4 * 3600  # the 20 h old call ages out in 4 h
    assert attempts_refusal(placed, 4, now) is None
    assert attempts_refusal(placed, 0, now) is None  # 0: no limit


# --- check over SQL ----------------------------------------------------------------------------
async def test_check_reads_lists_and_attempts(db: Database, tmp_path: Path) -> None:
    now = utc("2026-03-05T08:00:00")  # 13:30 IST
    settings = make_settings(tmp_path, outbound=GOOD_DLT, limits=LimitsSettings(callee_attempts_per_day=2))
    other = "+919812345678"
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(DoNotCall),
            [
                {"number": IN, "source": "ncpr", "categories": "0", "added_at": now},
                {"number": IN, "source": "opt_out", "categories": None, "added_at": now},
                {"number": "+919800000001", "source": "ncpr", "categories": "3", "added_at": now},
            ],
        )
        await conn.execute(
            insert(OutboundAudit),
            [
                {"at": now - dt.timedelta(hours=h), "decision": d, "rule": "r", "to_number": other}
                for h, d in ((25, "placed"), (10, "placed"), (2, "refused"), (1, "placed"))
            ],
        )
    # both lists hold IN: the opt-out list decides, before NCPR and before DLT
    refusal = await check(db, settings, request(IN, dlt=DltFields(entity_id="")), now)
    assert refusal is not None and refusal.reason == "opted_out"
    partial = await check(db, settings, request("+919800000001", purpose="promotional", from_=PROMO_FROM), now)
    assert partial is not None and partial.rule == "trai.ncpr.promotional"
    assert await check(db, settings, request("+919800000001", purpose="service"), now) is None
    # two calls placed to `other` in the last 24 h (the refusal is not a call)
    limited = await check(db, settings, request(other), now)
    assert limited is not None and limited.rule == "limits.callee_attempts_per_day"
    assert limited.detail["retry_after_s"] == 14 * 3600
    later = now + dt.timedelta(hours=14, seconds=1)  # 03:30 IST: any hour will do for this
    assert await check(db, settings, request(other, window=CallingWindow(start="00:00", end="24:00")), later) is None


async def test_check_order_dlt_before_hours(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    night = utc("2026-03-04T18:00:00")  # 23:30 IST
    refusal = await check(db, settings, request(IN), night)
    assert refusal is not None and refusal.reason == "dlt_missing"
    with_dlt = await check(db, settings, request(IN, dlt=DltFields(entity_id="1101", header="ACME")), night)
    assert with_dlt is not None and with_dlt.reason == "calling_hours"
    # the request's window and zone are used: a contact in Rome at 19:00 its time
    window = CallingWindow(start="08:00", end="20:00")
    assert await check(db, settings, request(NY, window=window, timezone="Europe/Rome"), night) is None
    assert await check(db, settings, request(NY), night) is None  # 13:00 EST


@pytest.mark.parametrize("purpose", ["transactional"])
async def test_transactional_to_fully_blocked_passes(db: Database, tmp_path: Path, purpose: Purpose) -> None:
    now = utc("2026-03-05T08:00:00")
    async with db.engine.begin() as conn:
        await conn.execute(insert(DoNotCall).values(number=IN, source="ncpr", categories="0", added_at=now))
    assert await check(db, make_settings(tmp_path, outbound=GOOD_DLT), request(IN, purpose=purpose), now) is None
