"""The appointment book over the SQL ``appointments`` table, per flow settings.

Slots lie on a grid: from each day's opening time, every ``slot_minutes + buffer_minutes``,
ending by closing time, in the flow's zone (wall-clock grid, so DST days stay regular).
Starts are stored in UTC. While an appointment is booked its ``slot_key`` is
``"<calendar>|<start UTC ISO>"``; the unique constraint on it turns two concurrent bookings
of one slot into one row and one ``IntegrityError`` (reported as "just taken"). Overlaps
with neighbours (plus the buffer) are checked too, for rows booked under other settings.

Ownership: every query that reads, moves or cancels filters on the caller's number, so
someone else's appointment id simply is not found.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.models import Appointment, Contact
from dialgraph.server.core.redaction import default_redactor
from dialgraph.tools.runtime import Clock, now_utc
from dialgraph.tools.timeparse import NewStart, RequestedTime, TimeParseError, localize, parse_when

DEFAULT_CALENDAR = "default"
DAYS_BEFORE, DAYS_AFTER = 7, 21  # search window around a requested time
HORIZON_DAYS = 366  # furthest bookable day
_ID_PREFIX = re.compile(r"^[0-9a-f]{6,32}$")

Status = Literal[
    "booked",
    "moved",
    "cancelled",
    "past",
    "closed",
    "off_grid",
    "too_far",
    "taken",
    "raced",
    "yours",
    "not_found",
    "ambiguous",
]
Attempt = Callable[[AsyncSession], Awaitable["Outcome | Appointment"]]


@dataclass(frozen=True, slots=True)
class AppointmentView:
    """A detached, read-only copy of an appointment row (times in UTC)."""

    id: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    name: str | None
    purpose: str | None

    @classmethod
    def of(cls, row: Appointment) -> AppointmentView:
        return cls(row.id, row.starts_at, row.ends_at, row.name, row.purpose)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a booking, move or cancellation did; ``alternatives`` are local slot starts."""

    status: Status
    appointment: AppointmentView | None = None
    previous: AppointmentView | None = None
    alternatives: tuple[dt.datetime, ...] = ()


class Occupancy:
    """Busy intervals, answering "does [start, end) come within ``buffer`` of any?" in
    O(log n): intervals sorted by start, with the running maximum of their ends."""

    def __init__(self, intervals: Sequence[tuple[dt.datetime, dt.datetime]], buffer: dt.timedelta) -> None:
        ordered = sorted(intervals)
        self.starts = [a for a, _ in ordered]
        self.max_end = list(itertools.accumulate((b for _, b in ordered), max))
        self.buffer = buffer

    def clashes(self, start: dt.datetime, end: dt.datetime) -> bool:
        before = bisect.bisect_left(self.starts, end + self.buffer)  # intervals starting early enough
        return before > 0 and self.max_end[before - 1] + self.buffer > start


class Calendar:
    """One calendar under one flow's hours, slot length, buffer and time zone."""

    def __init__(self, db: Database, flow: FlowSettings, *, clock: Clock, name: str = DEFAULT_CALENDAR) -> None:
        self.db = db
        self.flow = flow
        self.zone = flow.zone
        self.clock = clock
        self.name = name
        self.slot = dt.timedelta(minutes=flow.slot_minutes)
        self.buffer = dt.timedelta(minutes=flow.buffer_minutes)

    # --- pure slot arithmetic -----------------------------------------------------------
    def now(self) -> dt.datetime:
        return now_utc(self.clock)

    def today(self) -> dt.date:
        return self.now().astimezone(self.zone).date()

    def grid(self, day: dt.date) -> list[dt.datetime]:
        """Slot starts on a local ``day`` (aware, in the flow's zone)."""
        hours = self.flow.hours_on(day)
        if hours is None:
            return []
        opening = dt.datetime.combine(day, hours[0])
        closing = (
            dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
            if hours[1] == dt.time.max
            else dt.datetime.combine(day, hours[1])
        )
        starts: list[dt.datetime] = []
        wall = opening
        while wall + self.slot <= closing:
            local = localize(wall, self.zone)
            if local.replace(tzinfo=None) == wall:  # skip wall times that a DST gap erases
                starts.append(local)
            wall += self.slot + self.buffer
        return starts

    def problem(self, start: dt.datetime) -> Status | None:
        """Why ``start`` (aware) cannot be booked regardless of other bookings, or None."""
        if start <= self.now():
            return "past"
        local = start.astimezone(self.zone)
        if local.date() > self.today() + dt.timedelta(days=HORIZON_DAYS):
            return "too_far"
        starts = self.grid(local.date())
        if not starts or not (starts[0] <= local < starts[-1] + self.slot):
            return "closed"
        if local not in starts:
            return "off_grid"
        return None

    # --- queries ------------------------------------------------------------------------
    async def free_slots(
        self, near: RequestedTime, count: int = 3, *, exclude_id: str | None = None
    ) -> list[dt.datetime]:
        """Up to ``count`` free future slots nearest ``near`` (for a whole day: that day
        first, then later days, then earlier ones), in time order, local."""
        today = self.today()
        first = max(near.day - dt.timedelta(days=DAYS_BEFORE), today)
        last = min(max(near.day, today) + dt.timedelta(days=DAYS_AFTER), today + dt.timedelta(days=HORIZON_DAYS))
        now = self.now()
        candidates = [
            s
            for offset in range((last - first).days + 1)
            for s in self.grid(first + dt.timedelta(days=offset))
            if s > now
        ]
        if not candidates:
            return []
        async with self.db.sessionmaker() as s:
            query = self._active_query(candidates[0], candidates[-1] + self.slot, exclude_id=exclude_id)
            rows = (await s.execute(query.with_only_columns(Appointment.starts_at, Appointment.ends_at))).all()
        busy = Occupancy([(r[0], r[1]) for r in rows], self.buffer)
        free = [c for c in candidates if not busy.clashes(c, c + self.slot)]
        if near.has_time:
            free.sort(key=lambda c: (abs(c - near.at), c < near.at))
        else:
            free.sort(key=lambda c: (0, c.timestamp()) if c.date() >= near.day else (1, -c.timestamp()))
        return sorted(free[: max(1, min(count, 10))])

    async def upcoming(self, phone: str) -> list[AppointmentView]:
        """The caller's booked appointments from now on, earliest first."""
        async with self.db.sessionmaker() as s:
            rows = await s.scalars(self._own(phone).order_by(Appointment.starts_at))
            return [AppointmentView.of(r) for r in rows]

    # --- changes ------------------------------------------------------------------------
    async def book(
        self,
        phone: str,
        start: dt.datetime,
        *,
        name: str | None = None,
        purpose: str | None = None,
        call_sid: str | None = None,
    ) -> Outcome:
        """Book ``start`` for ``phone``; when not possible say why and offer the nearest slots."""
        if problem := self.problem(start):
            return await self._refused(problem, start)
        start_utc = start.astimezone(dt.UTC)

        async def attempt(s: AsyncSession) -> Outcome | Appointment:
            busy = await self._active_between(s, start_utc, start_utc + self.slot)
            clashing = [b for b in busy if self._clashes(start_utc, [b])]
            if clashing:
                mine = any(b.phone == phone and b.starts_at == start_utc for b in clashing)
                return Outcome("yours", AppointmentView.of(clashing[0])) if mine else Outcome("taken")
            contact_name = name or await s.scalar(select(Contact.name).where(Contact.phone == phone))
            row = Appointment(
                calendar=self.name,
                phone=phone,
                name=contact_name,
                starts_at=start_utc,
                ends_at=start_utc + self.slot,
                status="booked",
                slot_key=self.slot_key(start_utc),
                # the model writes it from the caller's words: stored redacted, like every transcript
                purpose=(purpose or None) and default_redactor().redact(purpose[:256]),
                call_sid=call_sid,
            )
            s.add(row)
            await s.flush()
            return row

        result = await self._write(attempt)
        if isinstance(result, Appointment):
            return Outcome("booked", AppointmentView.of(result))
        if result.status in ("taken", "raced"):
            return await self._refused(result.status, start)
        return result

    async def reschedule(self, phone: str, new_start: dt.datetime | NewStart, ref: str | None = None) -> Outcome:
        """Move the caller's appointment ``ref`` (None: the next one) to ``new_start``; a
        ``NewStart`` naming only a time or only a day keeps the other half of the old start."""
        async with self.db.sessionmaker() as s:
            found = await self._find_own(s, phone, ref)
        if not isinstance(found, Appointment):
            return found
        old = AppointmentView.of(found)
        if isinstance(new_start, NewStart):
            new_start = new_start.on(old.starts_at, self.zone)
        new_utc = new_start.astimezone(dt.UTC)
        if new_utc == old.starts_at:
            return Outcome("yours", old)
        if problem := self.problem(new_start):
            return await self._refused(problem, new_start, exclude_id=old.id, previous=old)

        async def attempt(s: AsyncSession) -> Outcome | Appointment:
            row = await s.get(Appointment, old.id)
            if row is None or row.slot_key is None or row.phone != phone:
                return Outcome("not_found")
            busy = await self._active_between(s, new_utc, new_utc + self.slot, exclude_id=old.id)
            if self._clashes(new_utc, busy):
                return Outcome("taken")
            row.starts_at, row.ends_at = new_utc, new_utc + self.slot
            row.slot_key = self.slot_key(new_utc)
            await s.flush()
            return row

        result = await self._write(attempt)
        if isinstance(result, Appointment):
            return Outcome("moved", AppointmentView.of(result), previous=old)
        if result.status in ("taken", "raced"):
            return await self._refused(result.status, new_start, exclude_id=old.id, previous=old)
        return result

    async def cancel(self, phone: str, ref: str | None = None) -> Outcome:
        """Cancel the caller's appointment ``ref`` (None: the next one); frees its slot."""

        async def attempt(s: AsyncSession) -> Outcome | Appointment:
            found = await self._find_own(s, phone, ref)
            if isinstance(found, Appointment):
                found.status, found.slot_key = "cancelled", None
                await s.flush()
            return found

        result = await self._write(attempt)
        if isinstance(result, Appointment):
            return Outcome("cancelled", AppointmentView.of(result))
        return result

    # --- helpers ------------------------------------------------------------------------
    def slot_key(self, start_utc: dt.datetime) -> str:
        return f"{self.name}|{start_utc.astimezone(dt.UTC).isoformat()}"

    def _clashes(self, start: dt.datetime, busy: Sequence[Appointment]) -> bool:
        return Occupancy([(b.starts_at, b.ends_at) for b in busy], self.buffer).clashes(start, start + self.slot)

    async def _active_between(
        self, s: AsyncSession, start: dt.datetime, end: dt.datetime, *, exclude_id: str | None = None
    ) -> list[Appointment]:
        return list(await s.scalars(self._active_query(start, end, exclude_id=exclude_id)))

    def _active_query(self, start: dt.datetime, end: dt.datetime, *, exclude_id: str | None) -> Select[Appointment]:
        """Booked rows of this calendar that come within ``buffer`` of [start, end)."""
        query = select(Appointment).where(
            Appointment.calendar == self.name,
            Appointment.slot_key.is_not(None),
            Appointment.starts_at < end + self.buffer,
            Appointment.ends_at > start - self.buffer,
        )
        if exclude_id is not None:
            query = query.where(Appointment.id != exclude_id)
        return query

    def _own(self, phone: str) -> Select[Appointment]:
        return select(Appointment).where(
            Appointment.phone == phone,
            Appointment.calendar == self.name,
            Appointment.slot_key.is_not(None),
            Appointment.starts_at > self.now(),
        )

    async def _find_own(self, s: AsyncSession, phone: str, ref: str | None) -> Outcome | Appointment:
        """The caller's upcoming appointment named by ``ref``: an id (or its first 6+
        characters), a local date-time or date; None means the next one."""
        query = self._own(phone).order_by(Appointment.starts_at)
        ref = (ref or "").strip().lower()
        if ref and _ID_PREFIX.match(ref):
            query = query.where(Appointment.id.startswith(ref, autoescape=True))
        elif ref:
            try:
                when = parse_when(ref, self.zone)
            except TimeParseError:
                return Outcome("not_found")
            if when.has_time:
                query = query.where(Appointment.starts_at == when.at.astimezone(dt.UTC))
            else:
                day_end = localize(dt.datetime.combine(when.day + dt.timedelta(days=1), dt.time()), self.zone)
                query = query.where(Appointment.starts_at >= when.at, Appointment.starts_at < day_end)
        rows = list(await s.scalars(query.limit(2)))
        if not rows:
            return Outcome("not_found")
        if len(rows) > 1 and ref and not _ID_PREFIX.match(ref):
            return Outcome("ambiguous", alternatives=tuple(r.starts_at.astimezone(self.zone) for r in rows))
        return rows[0]

    async def _refused(
        self,
        status: Status,
        wanted: dt.datetime,
        *,
        exclude_id: str | None = None,
        previous: AppointmentView | None = None,
    ) -> Outcome:
        near = RequestedTime(at=wanted.astimezone(self.zone), has_time=True)
        return Outcome(
            status, previous=previous, alternatives=tuple(await self.free_slots(near, exclude_id=exclude_id))
        )

    async def _write(self, attempt: Attempt) -> Outcome | Appointment:
        """Run ``attempt`` in a transaction; a unique violation means the slot was taken.
        SQLite may refuse a write whose read snapshot went stale (WAL): retry a few times."""
        for tries in range(5):
            try:
                async with self.db.sessionmaker() as s, s.begin():
                    return await attempt(s)
            except IntegrityError:  # the slot_key constraint: a concurrent call won the slot
                return Outcome("raced")
            except OperationalError as exc:
                if not (self.db.is_sqlite and "locked" in str(exc)) or tries == 4:
                    raise
        raise AssertionError("unreachable")
