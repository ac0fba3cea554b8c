"""Checks a scenario's ``expect:`` block against what happened on the call.

What the simulator saw itself (how the call ended, barge-ins, protocol violations, what the
agent said) is checked directly; outcomes stored by the server come from its admin API
(the call record) and, for appointments and messages, from the database by URL.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from dialgraph.telephony.simulator.scenario import AppointmentExpectation, Expectations

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"(\d{1,2})(?::(\d{2}))?\s*(am|pm|a\.m\.|p\.m\.)?", re.I)


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    label: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Observed:
    """What the simulator itself knows about the call."""

    call_sid: str
    from_number: str
    ended_by: str
    agent_text: Sequence[str]
    barge_ins: int
    barge_ins_cleared: int
    violations: int
    dial_statuses: Sequence[str]


def parse_local_spec(spec: str) -> tuple[dt.datetime | None, int | None, dt.time | None]:
    """ "2026-12-01T14:30" -> exact datetime; "tuesday 2:30 pm" -> (None, weekday, time)."""
    spec = spec.strip()
    try:
        return dt.datetime.fromisoformat(spec), None, None
    except ValueError:
        pass
    lowered = spec.lower()
    weekday = next((i for i, name in enumerate(WEEKDAYS) if name in lowered or name[:3] == lowered[:3]), None)
    match = _TIME.search(lowered)
    if match is None:
        if weekday is None:
            raise ValueError(f"cannot read a local time in {spec!r}")
        return None, weekday, None
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    meridiem = (match.group(3) or "").replace(".", "").lower()
    if meridiem == "pm" and hour < 12:
        hour += 12
    if meridiem == "am" and hour == 12:
        hour = 0
    return None, weekday, dt.time(hour, minute)


def appointment_matches(starts_at: dt.datetime, expected: AppointmentExpectation) -> bool:
    local = starts_at.astimezone(ZoneInfo(expected.timezone))
    exact, weekday, at = parse_local_spec(expected.local)
    if exact is not None:
        return local.replace(tzinfo=None, second=0, microsecond=0) == exact.replace(second=0, microsecond=0)
    if weekday is not None and local.weekday() != weekday:
        return False
    return at is None or (local.hour, local.minute) == (at.hour, at.minute)


async def _db_rows(database_url: str, call_sid: str, phone: str) -> tuple[list[Any], list[Any]]:
    from dialgraph.server.core.db import Database
    from dialgraph.server.core.models import Appointment, Message

    db = Database(database_url)
    try:
        async with db.sessionmaker() as s:
            appts = list(
                await s.scalars(select(Appointment).where(Appointment.phone == phone, Appointment.status == "booked"))
            )
            msgs = list(
                await s.scalars(select(Message).where((Message.call_sid == call_sid) | (Message.from_number == phone)))
            )
    finally:
        await db.aclose()
    return appts, msgs


async def check_expectations(
    expect: Expectations,
    observed: Observed,
    *,
    server_call: dict[str, Any] | None,
    database_url: str | None,
) -> list[Check]:
    """One ``Check`` per expectation (protocol violations are always checked)."""
    checks: list[Check] = [
        Check(
            observed.violations <= expect.max_protocol_violations,
            "protocol",
            f"{observed.violations} violation(s) of Twilio's Media Streams protocol",
        )
    ]
    needs_db = expect.appointment is not None or expect.appointments is not None or expect.message_left is not None
    appts: list[Any] = []
    msgs: list[Any] = []
    if needs_db:
        if database_url is None:
            checks.append(Check(False, "database", "appointment/message expectations need --database-url"))
        else:
            appts, msgs = await _db_rows(database_url, observed.call_sid, observed.from_number)
            msgs = [m for m in msgs if m.call_sid == observed.call_sid] or msgs
    if expect.appointment is not None and database_url is not None:
        exp = expect.appointment
        zone = ZoneInfo(exp.timezone)
        found = [a.starts_at.astimezone(zone) for a in appts]
        ok = any(appointment_matches(a.starts_at, exp) for a in appts)
        seen = ", ".join(f.strftime("%a %Y-%m-%d %H:%M") for f in found) or "none"
        checks.append(Check(ok, f"appointment at {exp.local} ({exp.timezone})", f"booked: {seen}"))
    if expect.appointments is not None and database_url is not None:
        checks.append(
            Check(len(appts) == expect.appointments, f"{expect.appointments} appointment(s)", f"found {len(appts)}")
        )
    if expect.message_left is not None and database_url is not None:
        checks.append(
            Check(bool(msgs) == expect.message_left, f"message left: {expect.message_left}", f"{len(msgs)} message(s)")
        )
    if expect.transfer_to is not None:
        target = (server_call or {}).get("transfer_target")
        detail = f"call record says {target!r}" if server_call is not None else "no call record (admin API unreachable)"
        checks.append(
            Check(
                target == expect.transfer_to and bool(observed.dial_statuses),
                f"transfer to {expect.transfer_to}",
                detail,
            )
        )
    if expect.transfer_status is not None:
        statuses = list(observed.dial_statuses)
        checks.append(
            Check(expect.transfer_status in statuses, f"transfer {expect.transfer_status}", f"dial outcomes {statuses}")
        )
    if expect.ended_by_agent is not None:
        checks.append(
            Check(
                (observed.ended_by == "agent") == expect.ended_by_agent,
                f"ended by agent: {expect.ended_by_agent}",
                f"ended by {observed.ended_by}",
            )
        )
    if expect.barge_in_cleared is not None:
        ok = observed.barge_ins > 0 and (observed.barge_ins_cleared == observed.barge_ins) == expect.barge_in_cleared
        checks.append(
            Check(
                ok,
                "barge-in cleared the agent",
                f"{observed.barge_ins_cleared}/{observed.barge_ins} barge-ins got a clear",
            )
        )
    said = " | ".join(observed.agent_text)
    for pattern in expect.agent_said:
        checks.append(Check(re.search(pattern, said) is not None, f"agent said /{pattern}/"))
    return checks
