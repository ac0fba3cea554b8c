"""Rate limits on incoming calls, shared by all instances: the state is the ``calls`` table.

The rules (``[limits]`` of ``dialgraph.toml``, overridden per flow by ``[flows.NAME.limits]``;
0 or unset means no limit):

- ``caller_calls_per_hour`` / ``caller_calls_per_day``: calls admitted from one number in the
  last 60 minutes / 24 hours;
- ``caller_concurrent``: live calls (status not terminal) from one number;
- ``deployment_concurrent``: live calls of the whole deployment, every instance, both directions;
- ``anonymous_calls_per_hour``: calls admitted in the last 60 minutes from withheld caller IDs,
  ALL of them together (they are indistinguishable); the per-number rules do not apply to them;
- ``allow``: numbers exempt from every rule (staff, test phones);
- ``max_call_minutes``: the longest a call may last; then a fixed goodbye after the reply in progress (telephony/call/session.py; a reconnected stream keeps the deadline);
- ``callee_attempts_per_day``: outbound attempts to one number (``server/outbound/compliance``);
- ``caller_daily_budget`` / ``deployment_daily_budget``: money (USD, the ``[prices]`` of
  ``server/core/costs.py``) one number / the whole deployment may spend on calls started
  the same UTC day. A call is refused when the budget is already spent (the sum of
  ``calls.cost_total``: calls in progress count once a stream of theirs has ended); mid-call
  the session stops spending on the hosted model once this call's running cost spends it
  (a fixed offer to take a message or transfer, then the free offline model).

``admit`` decides with ONE statement, one round trip: the caller's calls of the last day
(``ix_calls_from_started``, and their cost today), the deployment's live calls (the partial index
``ix_calls_live`` of migration 0005, which holds only calls whose status is not terminal),
and the deployment's cost today (``ix_calls_started``, migration 0006).
A refused call does not count against the caller, so ringing back while refused never
extends the wait. Two calls admitted by two instances in the same millisecond can both pass
(check, then insert): a limit may be overshot by the calls that race it, never for longer.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Executable, Integer, and_, bindparam, case, func, or_, select, text
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from dialgraph.server.core.db import Database
from dialgraph.server.core.enums import CallOutcome, CallStatus
from dialgraph.server.core.models import Call, CallEvent, utcnow

E164 = r"^\+[1-9]\d{6,14}$"
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
# A call whose status never turned terminal (its status callback was lost) stops counting as
# live after this long: Twilio ends calls at 4 hours unless told otherwise.
LIVE_HORIZON = dt.timedelta(hours=4)

# What Twilio sends as ``From`` when the caller ID is withheld: the words (alpha since 2022),
# their keypad digits (how Twilio spelled them before), or nothing.
WITHHELD_WORDS = ("ANONYMOUS", "RESTRICTED", "UNKNOWN", "UNAVAILABLE", "BLOCKED", "PRIVATE", "WITHHELD")
_KEYPAD = {
    c: str(d) for d, cs in enumerate(("", "", "ABC", "DEF", "GHI", "JKL", "MNO", "PQRS", "TUV", "WXYZ")) for c in cs
}
WITHHELD_DIGITS = tuple("+" + "".join(_KEYPAD[c] for c in word) for word in WITHHELD_WORDS)  # +266696687 ...
# Every spelling stored in ``calls.from_number`` for a withheld ID, for counting them.
WITHHELD_FROM = tuple(
    sorted({""} | set(WITHHELD_DIGITS) | {f(w) for w in WITHHELD_WORDS for f in (str.upper, str.lower, str.title)})
)

# A live call: its status is not terminal, and it was not refused. This literal text is the
# predicate of the partial index ``ix_calls_live`` (migration 0005), so the planner of either
# database can prove a query's condition implies it, and counts without reading the table.
LIVE_STATUS_SQL = "status NOT IN ('busy', 'canceled', 'completed', 'failed', 'no-answer')"
LIVE_SQL = f"{LIVE_STATUS_SQL} AND (outcome IS NULL OR outcome <> 'rate_limited')"
assert sorted(s.value for s in CallStatus if s.terminal) == ["busy", "canceled", "completed", "failed", "no-answer"]

DEFAULT_REFUSE_MESSAGE = "Sorry, we cannot take your call right now. Please try again later. Goodbye."
# The refusal in a flow's language (``FlowSettings.language``), and Twilio's <Say language>.
REFUSE_MESSAGES = {
    "en": DEFAULT_REFUSE_MESSAGE,
    "hi": "क्षमा करें, हम अभी आपकी कॉल नहीं ले सकते। कृपया बाद में फिर से कॉल करें। धन्यवाद।",
    "es": "Lo sentimos, ahora no podemos atender su llamada. Por favor, inténtelo más tarde. Adiós.",
    "fr": "Désolé, nous ne pouvons pas prendre votre appel pour le moment. Veuillez rappeler plus tard. Au revoir.",
    "de": "Leider können wir Ihren Anruf gerade nicht annehmen. Bitte versuchen Sie es später noch einmal. Auf Wiederhören.",
}
SAY_LANGUAGES = {"en": "en-US", "hi": "hi-IN", "es": "es-ES", "fr": "fr-FR", "de": "de-DE"}


def is_withheld(caller: str) -> bool:
    """True when ``caller`` (Twilio's ``From``) is a withheld caller ID, in any spelling."""
    value = caller.strip()
    return not value or value.upper().lstrip("+") in WITHHELD_WORDS or value in WITHHELD_DIGITS


def _numbers(v: list[str] | None) -> list[str] | None:
    if v is None:
        return None
    bad = [n for n in v if not re.match(E164, n)]
    if bad:
        raise ValueError(f"allow: {len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} not E.164 (+ and digits)")
    return v


class Limits(BaseModel):
    """The rules in force (``[limits]``, and a flow's after its overrides). 0: no limit.

    On by default (DESIGN: guardrails are on unless turned off) at levels no genuine caller
    meets: 20 calls an hour / 60 a day / 3 at once from one number, 60 an hour from all
    withheld IDs together, 30 minutes a call, USD 2 a day per caller; the deployment-wide
    caps need the deployment's own numbers, so they stay off."""

    model_config = ConfigDict(extra="forbid")

    caller_calls_per_hour: int = Field(default=20, ge=0, description="calls from one number per 60 minutes")
    caller_calls_per_day: int = Field(default=60, ge=0, description="calls from one number per 24 hours")
    caller_concurrent: int = Field(default=3, ge=0, description="live calls from one number")
    max_call_minutes: float = Field(default=30, ge=0, description="longest call; then a polite goodbye")
    deployment_concurrent: int = Field(default=0, ge=0, description="live calls of the deployment, all instances")
    callee_attempts_per_day: int = Field(default=3, ge=0, description="outbound calls to one number per 24 h; 0: none")
    allow: list[str] = Field(default_factory=list, description="E.164 numbers exempt from every limit")
    anonymous_calls_per_hour: int = Field(default=60, ge=0, description="calls per 60 min from ALL withheld IDs")
    refuse_with: Literal["say", "reject"] = Field(default="say", description="<Say> then <Hangup/>, or <Reject>")
    refuse_message: str | None = Field(default=None, description="the <Say>; default: one in the flow's language")
    caller_daily_budget: float = Field(default=2.0, ge=0, description="USD one number may spend per UTC day")
    deployment_daily_budget: float = Field(default=0, ge=0, description="USD the deployment may spend per UTC day")

    @field_validator("allow")
    @classmethod
    def _e164(cls, v: list[str] | None) -> list[str] | None:
        return _numbers(v)

    @property
    def budgets(self) -> bool:
        """Whether a spend cap is set (the session then watches its running cost)."""
        return bool(self.caller_daily_budget or self.deployment_daily_budget)

    @property
    def active(self) -> bool:
        """Whether an inbound call needs the database to be admitted at all."""
        return bool(
            self.caller_calls_per_hour
            or self.caller_calls_per_day
            or self.caller_concurrent
            or self.deployment_concurrent
            or self.anonymous_calls_per_hour
            or self.budgets
        )

    def merged(self, overrides: LimitOverrides | None) -> Limits:
        """These rules with a flow's overrides (its keys that are set) on top."""
        if overrides is None:
            return self
        changes = overrides.model_dump(exclude_none=True)
        return self.model_copy(update=changes) if changes else self

    def message(self, language: str = "en") -> tuple[str, str | None]:
        """The refusal's words and Twilio's ``<Say language>`` for a flow in ``language``."""
        base = language.split("-")[0].lower()
        if self.refuse_message:
            return self.refuse_message, SAY_LANGUAGES.get(base)
        if base in REFUSE_MESSAGES:
            return REFUSE_MESSAGES[base], SAY_LANGUAGES[base]
        return DEFAULT_REFUSE_MESSAGE, SAY_LANGUAGES["en"]


class LimitOverrides(BaseModel):
    """``[flows.NAME.limits]``: the keys of ``[limits]`` this flow sets differently."""

    model_config = ConfigDict(extra="forbid")

    caller_calls_per_hour: int | None = Field(default=None, ge=0)
    caller_calls_per_day: int | None = Field(default=None, ge=0)
    caller_concurrent: int | None = Field(default=None, ge=0)
    max_call_minutes: float | None = Field(default=None, ge=0)
    deployment_concurrent: int | None = Field(default=None, ge=0)
    callee_attempts_per_day: int | None = Field(default=None, ge=0)
    allow: list[str] | None = None
    anonymous_calls_per_hour: int | None = Field(default=None, ge=0)
    refuse_with: Literal["say", "reject"] | None = None
    refuse_message: str | None = None
    caller_daily_budget: float | None = Field(default=None, ge=0)
    deployment_daily_budget: float | None = Field(default=None, ge=0)

    @field_validator("allow")
    @classmethod
    def _e164(cls, v: list[str] | None) -> list[str] | None:
        return _numbers(v)


@dataclass(frozen=True, slots=True)
class LimitDecision:
    """``admit``'s answer: ``rule`` names the limit that refused (or ``limits.allow`` for an
    exempt caller); ``retry_after_s`` is when the caller could be admitted again, when known."""

    allowed: bool
    rule: str | None = None
    retry_after_s: int | None = None


ADMITTED = LimitDecision(True)
EXEMPT = LimitDecision(True, "limits.allow")


# --- the statement --------------------------------------------------------------------------------
def _count(cond: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0).cast(Integer)


_COUNTED = or_(Call.outcome.is_(None), Call.outcome != CallOutcome.RATE_LIMITED.value)


@cache
def _statement(who: Literal["number", "withheld", "none"], live: bool, spend: bool) -> Executable:
    """One row: what was decided before for this CallSid (NULL: a new call, not in the table,
    so not in the counts; '': admitted before, a Twilio retry); with ``who``, the caller's admitted calls since ``:since`` (in the last
    hour, the last day, live, and what those started today cost) and the oldest of them (when one ages out); with ``live``, the
    deployment's live calls; with ``spend``, what the deployment's calls started today cost.
    Built once per shape (a cached, compiled statement)."""
    sid: BindParameter[str] = bindparam("sid")
    columns: list[ColumnElement[object]] = [
        select(func.coalesce(Call.outcome, "")).where(Call.sid == sid).scalar_subquery().label("earlier")
    ]
    if who != "none":
        callers = Call.from_number == bindparam("caller") if who == "number" else Call.from_number.in_(WITHHELD_FROM)
        in_hour = Call.started_at > bindparam("hour_ago")
        in_day = Call.started_at > bindparam("day_ago")
        mine = (
            select(
                _count(in_hour).label("hour"),
                _count(in_day).label("day"),
                _count(and_(Call.started_at > bindparam("live_since"), text(LIVE_STATUS_SQL))).label("live"),
                func.min(case((in_hour, Call.started_at))).label("hour_oldest"),
                func.min(case((in_day, Call.started_at))).label("day_oldest"),
                func.coalesce(func.sum(case((Call.started_at >= bindparam("today"), Call.cost_total))), 0.0).label(
                    "spent"
                ),
            )
            .where(callers, Call.started_at > bindparam("since"), _COUNTED)
            .subquery()
        )
        columns += [mine.c.hour, mine.c.day, mine.c.live, mine.c.hour_oldest, mine.c.day_oldest, mine.c.spent]
    if live:
        all_live = (
            select(func.count())
            .select_from(Call)
            .where(text(LIVE_SQL), Call.started_at > bindparam("live_since"))
            .scalar_subquery()
        )
        columns.append(all_live.label("all_live"))
    if spend:
        all_spent = (
            select(func.coalesce(func.sum(Call.cost_total), 0.0))
            .where(Call.started_at >= bindparam("today"))
            .scalar_subquery()
        )
        columns.append(all_spent.label("all_spent"))
    return select(*columns)


def _retry(oldest: dt.datetime | None, window: dt.timedelta, now: dt.datetime) -> int | None:
    if oldest is None:
        return None
    if oldest.tzinfo is None:  # SQLite's aggregate drops the type decorator: stored as UTC
        oldest = oldest.replace(tzinfo=dt.UTC)
    return max(1, math.ceil((oldest + window - now).total_seconds()))


def _parse_time(value: object) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))  # SQLite returns an aggregate's datetime as text


async def admit(db: Database, limits: Limits, *, caller: str, now: dt.datetime, call_sid: str = "") -> LimitDecision:
    """Whether an incoming call from ``caller`` may be answered at ``now`` under ``limits``
    (a flow's, after ``Limits.merged``): at most one SQL statement, one round trip, none when
    the caller is allow-listed or no rule is set. ``call_sid`` is the call being decided: it
    is not counted, and a Twilio retry of a call decided before gets the same answer."""
    if caller in limits.allow:
        return EXEMPT
    if not limits.active:
        return ADMITTED
    withheld = is_withheld(caller)
    if withheld:
        who: Literal["number", "withheld", "none"] = "withheld" if limits.anonymous_calls_per_hour else "none"
        window = HOUR
    else:
        per_caller = (
            limits.caller_calls_per_hour,
            limits.caller_calls_per_day,
            limits.caller_concurrent,
            limits.caller_daily_budget,
        )
        who = "number" if any(per_caller) else "none"
        window = DAY if limits.caller_calls_per_day else LIVE_HORIZON if limits.caller_concurrent else HOUR
    today = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)  # budgets: the UTC day
    since = now - window
    if who == "number" and limits.caller_daily_budget:
        since = min(since, today)
    deployment = limits.deployment_concurrent > 0
    spend = limits.deployment_daily_budget > 0
    if who == "none" and not deployment and not spend:
        return ADMITTED
    params = {
        "sid": call_sid,
        "caller": caller,
        "hour_ago": now - HOUR,
        "day_ago": now - DAY,
        "since": since,
        "live_since": now - LIVE_HORIZON,
        "today": today,
    }
    async with db.engine.connect() as conn:
        row = (await conn.execute(_statement(who, deployment, spend), params)).one()._mapping
    earlier = row["earlier"]
    if earlier is not None:  # decided before: Twilio retried the webhook
        return LimitDecision(False, "limits.already_refused") if earlier == CallOutcome.RATE_LIMITED else ADMITTED
    if who == "withheld":
        if row["hour"] >= limits.anonymous_calls_per_hour:
            hour_oldest = _parse_time(row["hour_oldest"])
            return LimitDecision(False, "limits.anonymous_calls_per_hour", _retry(hour_oldest, HOUR, now))
    elif who == "number":
        if limits.caller_concurrent and row["live"] >= limits.caller_concurrent:
            return LimitDecision(False, "limits.caller_concurrent")
        if limits.caller_calls_per_hour and row["hour"] >= limits.caller_calls_per_hour:
            hour_oldest = _parse_time(row["hour_oldest"])
            return LimitDecision(False, "limits.caller_calls_per_hour", _retry(hour_oldest, HOUR, now))
        if limits.caller_calls_per_day and row["day"] >= limits.caller_calls_per_day:
            day_oldest = _parse_time(row["day_oldest"])
            return LimitDecision(False, "limits.caller_calls_per_day", _retry(day_oldest, DAY, now))
        if limits.caller_daily_budget and float(row["spent"] or 0) >= limits.caller_daily_budget:
            return LimitDecision(False, "limits.caller_daily_budget", _until_tomorrow(today, now))
    if deployment and row["all_live"] >= limits.deployment_concurrent:
        return LimitDecision(False, "limits.deployment_concurrent")
    if spend and float(row["all_spent"] or 0) >= limits.deployment_daily_budget:
        return LimitDecision(False, "limits.deployment_daily_budget", _until_tomorrow(today, now))
    return ADMITTED


def _until_tomorrow(today: dt.datetime, now: dt.datetime) -> int:
    return max(1, math.ceil((today + DAY - now).total_seconds()))


async def record_refusal(
    db: Database,
    decision: LimitDecision,
    *,
    sid: str,
    from_number: str,
    to_number: str,
    flow: str,
    status: str,
) -> None:
    """The refused call's row (outcome ``rate_limited``) and its event (``{"rule": ...}``),
    in one transaction; a Twilio retry of the same call adds nothing."""
    async with db.sessionmaker() as s, s.begin():
        if await s.get(Call, sid) is not None:
            return
        s.add(
            Call(
                sid=sid,
                direction="inbound",
                from_number=from_number,
                to_number=to_number,
                flow=flow,
                thread_id=sid,
                status=status,
                outcome=CallOutcome.RATE_LIMITED,
            )
        )
        await s.flush()  # the call row first: the event's foreign key names it
        data: dict[str, object] = {"rule": decision.rule}
        if decision.retry_after_s is not None:
            data["retry_after_s"] = decision.retry_after_s
        s.add(CallEvent(call_sid=sid, kind="rate_limited", role="system", at=utcnow(), data=data))
