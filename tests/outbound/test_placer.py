"""OutboundPlacer with the real twilio client against the local Twilio REST fake, on a real
SQLite and PostgreSQL; the shared rate schedule across engines."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from dialgraph.server.core.call_store import get_call, record_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import DltFields
from dialgraph.server.core.models import DoNotCall, OutboundAudit, RateSlot
from dialgraph.server.core.settings import LimitsSettings, OutboundSettings, Settings
from dialgraph.server.outbound import rates
from dialgraph.server.outbound.placer import OutboundPlacer
from dialgraph.server.outbound.types import OutboundRequest, Refused
from dialgraph.telephony.twilio.call_control import CallControl, CallControlError
from tests.fakes.twilio_rest import FakeCall, FakeTwilioRest

ACCOUNT = "AC" + "2" * 32
TOKEN = "rest-auth-token-for-placer"
BASE = "https://voice.example.com"
NY = "+12125551234"
IN = "+919876543210"
FROM = "+15559870000"
NOON_NY = dt.datetime(2026, 3, 5, 17, 0, tzinfo=dt.UTC)  # 12:00 EST, 22:30 IST


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def rest() -> AsyncIterator[FakeTwilioRest]:
    async with FakeTwilioRest(account_sid=ACCOUNT, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def control(rest: FakeTwilioRest) -> AsyncIterator[CallControl]:
    cc = CallControl(account_sid=ACCOUNT, auth_token=TOKEN, api_url=rest.url, retry_delay_s=0)
    try:
        yield cc
    finally:
        await cc.aclose()


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    outbound = kw.pop("outbound", OutboundSettings(account_calls_per_second=100))
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path, public_url=BASE, outbound=outbound, _env_file=None, **kw
    )


def placer_for(db: Database, settings: Settings, control: CallControl, now: dt.datetime = NOON_NY) -> OutboundPlacer:
    return OutboundPlacer(db, settings, control, clock=Clock(now), sleep=Sleeps())


async def audit_rows(db: Database) -> list[OutboundAudit]:
    async with db.sessionmaker() as s:
        return list(await s.scalars(select(OutboundAudit).order_by(OutboundAudit.id)))


async def test_places_a_call(db: Database, rest: FakeTwilioRest, control: CallControl, tmp_path: Path) -> None:
    placer = placer_for(db, make_settings(tmp_path), control)
    context = {"name": "Jane", "purpose": "your demo follow-up", "plan": "pro"}
    req = OutboundRequest(to=NY, from_=FROM, flow="sales", purpose="service", context=context)
    sid = await placer.place(req)

    (create,) = rest.creates
    assert create.authorized and sid in rest.calls
    form = create.form
    assert (form["To"], form["From"]) == (NY, FROM)
    assert form["Url"] == f"{BASE}/twilio/voice"
    assert form["StatusCallback"] == f"{BASE}/twilio/status"
    assert create.values("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert form["MachineDetection"] == "DetectMessageEnd"
    assert form["AsyncAmd"] == "true"
    assert form["AsyncAmdStatusCallback"] == f"{BASE}/twilio/amd"
    assert form["Timeout"] == "30"

    call = await get_call(db, sid)
    assert call is not None
    assert (call.direction, call.from_number, call.to_number, call.flow, call.thread_id) == (
        "outbound",
        FROM,
        NY,
        "sales",
        sid,
    )
    assert (call.context, call.purpose, call.status) == (context, "service", "queued")
    (placed,) = await audit_rows(db)
    assert (placed.decision, placed.rule, placed.to_number, placed.call_sid) == ("placed", "placed", NY, sid)
    assert placed.detail == {"purpose": "service", "flow": "sales"}
    assert placed.at == NOON_NY


async def test_refusals_make_no_rest_request(
    db: Database, rest: FakeTwilioRest, control: CallControl, tmp_path: Path
) -> None:
    opted, blocked, busy_line = "+12125550001", "+919800000002", "+12125550003"
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(DoNotCall),
            [
                {"number": opted, "source": "opt_out", "added_at": NOON_NY},
                {"number": blocked, "source": "ncpr", "categories": "0", "added_at": NOON_NY},
            ],
        )
        await conn.execute(
            insert(OutboundAudit).values(
                at=NOON_NY - dt.timedelta(hours=1), decision="placed", rule="placed", to_number=busy_line
            )
        )
    settings = make_settings(
        tmp_path,
        outbound=OutboundSettings(account_calls_per_second=100, dlt=DltFields(entity_id="1101", header="ACME")),
        limits=LimitsSettings(callee_attempts_per_day=1),
    )
    morning_ist = dt.datetime(2026, 3, 5, 6, 0, tzinfo=dt.UTC)  # 11:30 IST, 01:00 EST
    cases: list[tuple[OutboundRequest, dt.datetime, str, str]] = [
        (OutboundRequest(to=opted, from_=FROM, flow="sales"), NOON_NY, "opted_out", "business.opt_out"),
        (OutboundRequest(to=blocked, from_=FROM, flow="sales"), morning_ist, "dnd", "trai.ncpr.service"),
        (
            OutboundRequest(to=IN, from_=FROM, flow="sales", dlt=DltFields(header="")),
            morning_ist,
            "dlt_missing",
            "trai.dlt",
        ),
        (OutboundRequest(to=NY, from_=FROM, flow="sales"), morning_ist, "calling_hours", "window.calling_hours"),
        (
            OutboundRequest(to=busy_line, from_=FROM, flow="sales", campaign_id="c" * 32, contact_id=7),
            NOON_NY,
            "rate_limited",
            "limits.callee_attempts_per_day",
        ),
    ]
    for req, now, reason, rule in cases:
        with pytest.raises(Refused) as info:
            await placer_for(db, settings, control, now).place(req)
        assert (info.value.refusal.reason, info.value.refusal.rule) == (reason, rule)
    assert rest.requests == []  # not one REST request

    rows = await audit_rows(db)
    refused = [(r.decision, r.reason, r.rule, r.to_number) for r in rows if r.decision != "placed"]
    assert refused == [
        ("refused", "opted_out", "business.opt_out", opted),
        ("refused", "dnd", "trai.ncpr.service", blocked),
        ("refused", "dlt_missing", "trai.dlt", IN),
        ("refused", "calling_hours", "window.calling_hours", NY),
        ("skipped", "rate_limited", "limits.callee_attempts_per_day", busy_line),
    ]
    assert rows[-1].campaign_id == "c" * 32 and rows[-1].contact_id == 7
    hours = next(r for r in rows if r.reason == "calling_hours")
    assert hours.detail is not None and hours.detail["next_allowed_at"] == "2026-03-05T14:00:00Z"
    dlt = next(r for r in rows if r.reason == "dlt_missing")
    assert dlt.detail is not None and dlt.detail["missing"] == ["header"]


async def test_account_rate(db: Database, rest: FakeTwilioRest, control: CallControl, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, outbound=OutboundSettings(account_calls_per_second=0.5))
    sleeps = Sleeps()
    placer = OutboundPlacer(db, settings, control, clock=Clock(NOON_NY), sleep=sleeps)
    await placer.place(OutboundRequest(to=NY, from_=FROM, flow="sales"))
    await placer.place(OutboundRequest(to="+12125550010", from_=FROM, flow="sales"))
    assert sleeps.waits == [2.0]  # the second call waits for its slot, 1 / 0.5 s later
    async with db.engine.begin() as conn:  # the schedule is full for the next minute
        await conn.execute(
            RateSlot.__table__.update().values(next_at=NOON_NY + dt.timedelta(seconds=60))  # type: ignore[attr-defined]
        )
    with pytest.raises(Refused) as info:
        await placer.place(OutboundRequest(to="+12125550011", from_=FROM, flow="sales"))
    assert (info.value.refusal.reason, info.value.refusal.rule) == ("rate_limited", "twilio.account_cps")
    assert info.value.refusal.detail["retry_after_s"] >= 1
    assert len(rest.creates) == 2


async def test_fast_webhook_row_is_merged(
    db: Database, rest: FakeTwilioRest, control: CallControl, tmp_path: Path
) -> None:
    async def webhook_first(call: FakeCall) -> None:  # /twilio/voice lands before the REST answer
        await record_call(
            db,
            sid=call.sid,
            direction="outbound",
            from_number=call.from_,
            to_number=call.to,
            flow="scheduling",
            thread_id=call.sid,
            status="in-progress",
        )

    rest.on_create = webhook_first
    placer = placer_for(db, make_settings(tmp_path), control)
    sid = await placer.place(
        OutboundRequest(to=NY, from_=FROM, flow="sales", purpose="transactional", context={"name": "Jo"})
    )
    call = await get_call(db, sid)
    assert call is not None
    assert (call.flow, call.context, call.purpose, call.status) == (
        "sales",
        {"name": "Jo"},
        "transactional",
        "in-progress",
    )
    assert [r.decision for r in await audit_rows(db)] == ["placed"]


async def test_rest_failure_is_audited(
    db: Database, rest: FakeTwilioRest, control: CallControl, tmp_path: Path
) -> None:
    rest.fail_next(status=400, code=21211, message="Invalid 'To' Phone Number")
    placer = placer_for(db, make_settings(tmp_path), control)
    with pytest.raises(CallControlError) as info:
        await placer.place(OutboundRequest(to=NY, from_=FROM, flow="sales", campaign_id="d" * 32))
    assert info.value.code == 21211 and not info.value.retryable
    (failed,) = await audit_rows(db)
    assert (failed.decision, failed.rule, failed.to_number, failed.campaign_id) == (
        "failed",
        "twilio.rest",
        NY,
        "d" * 32,
    )
    assert failed.detail == {"status": 400, "code": 21211, "retryable": False}
    assert len(rest.creates) == 1 and not rest.calls


async def test_detection_off_and_unknown_flow(
    sqlite_url: str, rest: FakeTwilioRest, control: CallControl, tmp_path: Path
) -> None:
    db = Database(sqlite_url)
    await db.upgrade()
    try:
        settings = make_settings(tmp_path, outbound=OutboundSettings(machine_detection="off", ring_timeout_s=12))
        placer = placer_for(db, settings, control)
        with pytest.raises(ValueError):
            await placer.place(OutboundRequest(to=NY, from_=FROM, flow="nope"))
        with pytest.raises(ValueError):
            await placer.place(OutboundRequest(to="2125551234", from_=FROM, flow="sales"))
        assert rest.requests == []
        await placer.place(OutboundRequest(to=NY, from_=FROM, flow="sales"))
        form = rest.creates[0].form
        assert "MachineDetection" not in form and "AsyncAmd" not in form and form["Timeout"] == "12"
    finally:
        await db.aclose()


# --- the shared rate schedule ------------------------------------------------------------------
async def _take_many(url: str, interval: float, now: dt.datetime, count: int) -> list[dt.datetime]:
    db = Database(url, pool_size=2)  # an engine of its own: another instance
    try:
        reserved = []
        for _ in range(count):
            wait = await rates.take_slot(db, "account", interval, now, max_wait_s=3600)
            assert wait is not None
            reserved.append(now + dt.timedelta(seconds=wait))
        return reserved
    finally:
        await db.aclose()


async def _slots_are_spaced(url: str) -> None:
    migrated = Database(url)
    await migrated.upgrade()
    await migrated.aclose()
    interval, now = 0.25, NOON_NY
    results = await asyncio.gather(*(_take_many(url, interval, now, 5) for _ in range(6)))
    instants = sorted(at for batch in results for at in batch)
    assert len(instants) == 30 and len(set(instants)) == 30  # never shared
    gaps = [(b - a).total_seconds() for a, b in zip(instants, instants[1:], strict=False)]
    assert min(gaps) >= interval - 1e-6  # spaced at least one interval apart
    assert instants[0] == now and instants[-1] == now + dt.timedelta(seconds=interval * 29)  # and packed


async def test_rate_slots_across_engines_postgres(pg_dsn: str) -> None:
    await _slots_are_spaced(pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1))


async def test_rate_slots_across_engines_sqlite(sqlite_url: str) -> None:
    await _slots_are_spaced(sqlite_url)


async def test_take_slot_over_max_wait_reserves_nothing(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    await db.upgrade()
    try:
        assert await rates.take_slot(db, "k", 2.0, NOON_NY, max_wait_s=3) == 0.0
        assert await rates.take_slot(db, "k", 2.0, NOON_NY, max_wait_s=3) == 2.0
        assert await rates.take_slot(db, "k", 2.0, NOON_NY, max_wait_s=3) is None  # 4 s away
        later = NOON_NY + dt.timedelta(seconds=1)
        assert await rates.take_slot(db, "k", 2.0, later, max_wait_s=3) == 3.0  # the refused slot was not kept
        assert await rates.take_slot(db, "other", 2.0, later, max_wait_s=0) == 0.0  # keys are separate
        past = NOON_NY + dt.timedelta(hours=1)
        assert await rates.take_slot(db, "k", 2.0, past, max_wait_s=0) == 0.0  # an idle schedule starts now
    finally:
        await db.aclose()
