"""SQL tables of dialgraph (SQLAlchemy 2, typed mappings).

Times are stored as timezone-aware UTC instants; local time only exists in what is spoken.
Phone numbers and transcript text are PII: never put them into log messages.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from dialgraph.server.core.enums import CallStatus


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware datetime that round-trips as UTC on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: pass an aware datetime")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite drops the offset; we only ever store UTC
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


LIVE_CALLS = (
    "status NOT IN ('busy', 'canceled', 'completed', 'failed', 'no-answer')"
    " AND (outcome IS NULL OR outcome <> 'rate_limited')"
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class Call(Base):
    """One phone call (a CallSid), inbound or outbound."""

    __tablename__ = "calls"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    direction: Mapped[str] = mapped_column(String(16), default="inbound")  # inbound | outbound
    from_number: Mapped[str] = mapped_column(String(32), default="")
    to_number: Mapped[str] = mapped_column(String(32), default="")
    flow: Mapped[str] = mapped_column(String(64), default="")
    thread_id: Mapped[str] = mapped_column(String(128), default="")
    previous_thread_id: Mapped[str | None] = mapped_column(String(128), default=None)
    # status, outcome and transfer_status hold the values of CallStatus, CallOutcome and
    # TransferStatus (core/enums.py); read back they are plain strings.
    status: Mapped[str] = mapped_column(String(32), default=CallStatus.RINGING.value)
    outcome: Mapped[str | None] = mapped_column(String(64), default=None)
    transfer_target: Mapped[str | None] = mapped_column(String(64), default=None)
    transfer_status: Mapped[str | None] = mapped_column(String(32), default=None)
    transfer_reason: Mapped[str | None] = mapped_column(Text, default=None)
    transfer_summary: Mapped[str | None] = mapped_column(Text, default=None)
    stream_sid: Mapped[str | None] = mapped_column(String(64), default=None)
    reconnects: Mapped[int] = mapped_column(Integer, default=0)
    # What the caller has heard of the agent's reply in progress (NULL: none in progress),
    # written by the media session from mark echoes, so another instance can repair the
    # checkpoint after this one died mid-reply.
    reply_heard: Mapped[str | None] = mapped_column(Text, default=None)
    # Outbound calls: what the agent knows of the person it calls (name, purpose, custom
    # fields), why it calls, and the campaign contact it serves; AMD's verdict.
    context: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)
    purpose: Mapped[str | None] = mapped_column(String(16), default=None)
    campaign_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    contact_id: Mapped[int | None] = mapped_column(Integer, default=None)
    answered_by: Mapped[str | None] = mapped_column(String(32), default=None)
    # What the call used (stream seconds, ASR audio seconds, tokens, TTS characters) and what
    # that cost with the price table (``server/core/costs.py``); ``cost_total`` for SQL sums
    # (daily budgets, daily totals). NULL until a stream of the call has ended.
    usage: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)
    cost: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)
    cost_total: Mapped[float | None] = mapped_column(Float, default=None)
    analysis: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)  # post-call (server/analysis.py)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_calls_from_started", "from_number", "started_at"),
        # The day's calls (the deployment's daily budget, daily cost totals, call lists).
        Index("ix_calls_started", "started_at"),
        # The live calls only (limits.deployment_concurrent counts them on every incoming
        # call); the predicate is the text of core/limits.py LIVE_SQL and migration 0005.
        Index("ix_calls_live", "started_at", postgresql_where=text(LIVE_CALLS), sqlite_where=text(LIVE_CALLS)),
    )


class CallEvent(Base):
    """A transcript turn or a call event (transfer, barge-in, reconnect...) with timings."""

    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(ForeignKey("calls.sid", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32), default="turn")  # turn | barge_in | transfer | dtmf | ...
    role: Mapped[str | None] = mapped_column(String(16), default=None)  # caller | agent | system
    text: Mapped[str | None] = mapped_column(Text, default=None)
    interrupted: Mapped[bool] = mapped_column(default=False)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    data: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)


class Contact(Base):
    """A known caller, keyed by phone number."""

    __tablename__ = "contacts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    phone: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str | None] = mapped_column(String(128), default=None)
    email: Mapped[str | None] = mapped_column(String(256), default=None)
    notes: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Appointment(Base):
    """A booked slot. ``slot_key`` makes a double booking a constraint violation.

    ``slot_key`` is ``<calendar>|<start UTC ISO>`` while the appointment is active and NULL
    once cancelled, so a cancelled slot can be booked again (NULLs never collide).
    """

    __tablename__ = "appointments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    calendar: Mapped[str] = mapped_column(String(64), default="default")
    phone: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str | None] = mapped_column(String(128), default=None)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="booked")  # booked | cancelled
    slot_key: Mapped[str | None] = mapped_column(String(128), default=None)
    purpose: Mapped[str | None] = mapped_column(String(256), default=None)
    call_sid: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("slot_key", name="uq_appointments_slot_key"),
        Index("ix_appointments_calendar_start", "calendar", "starts_at"),
    )


class Message(Base):
    """A message the agent took for a human."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    call_sid: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    from_number: Mapped[str] = mapped_column(String(32))
    caller_name: Mapped[str | None] = mapped_column(String(128), default=None)
    callback_number: Mapped[str | None] = mapped_column(String(32), default=None)
    for_whom: Mapped[str | None] = mapped_column(String(64), default=None)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="new")  # new | handled
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConsumedStreamToken(Base):
    """A media stream token that has opened its one socket (``jti`` from the token).

    The primary key makes spending a token twice a constraint violation, so two sockets
    racing with one token cannot both win on any instance. Rows are only needed until the
    token expires; ``dialgraph db prune`` deletes them after that. No foreign key to
    ``calls``: a token may name a call that has no row, and pruning must not depend on it.
    """

    __tablename__ = "consumed_stream_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class Campaign(Base):
    """A batch of outbound calls: one flow, one caller ID, limits that hold across instances.

    ``next_dial_at`` is the campaign's token schedule: a dispatcher may start a call only at
    or after it, and moves it on by ``1 / calls_per_second`` under the campaign row's lock.
    """

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    flow: Mapped[str] = mapped_column(String(64))
    from_number: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | paused | cancelled | completed
    purpose: Mapped[str] = mapped_column(String(16), default="service")  # promotional | service | transactional
    dlt: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)
    window: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)
    max_concurrent: Mapped[int] = mapped_column(Integer, default=1)
    calls_per_second: Mapped[float] = mapped_column(Float, default=1.0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    retry_after_s: Mapped[int] = mapped_column(Integer, default=3600)
    next_dial_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class CampaignContact(Base):
    """One person a campaign calls, and where that stands.

    ``state``: queued -> claimed (an instance took it) -> dialing (REST request made) ->
    live (answered) -> done; ``outcome`` says how it ended (completed, no_answer, busy,
    voicemail, failed, canceled, opted_out, skipped_dnd, skipped_opted_out, skipped_hours,
    skipped_dlt, skipped_rate_limited, skipped_overloaded). A retry puts it back to queued with a later
    ``next_attempt_at``.
    """

    __tablename__ = "campaign_contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(Integer, default=0)
    to_number: Mapped[str] = mapped_column(String(32))
    context: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)
    timezone: Mapped[str | None] = mapped_column(String(64), default=None)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    outcome: Mapped[str | None] = mapped_column(String(32), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    call_sid: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("campaign_id", "to_number", name="uq_campaign_contacts_number"),
        Index("ix_campaign_contacts_queue", "campaign_id", "state", "next_attempt_at"),
    )


class DoNotCall(Base):
    """A number that must not be called: from the national registry (NCPR/DND, with its
    preference categories) or the business's own opt-out list."""

    __tablename__ = "do_not_call"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)  # ncpr | opt_out
    categories: Mapped[str | None] = mapped_column(String(64), default=None)  # "0": fully blocked; "1,2,7"
    reason: Mapped[str | None] = mapped_column(String(128), default=None)
    call_sid: Mapped[str | None] = mapped_column(String(64), default=None)
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OutboundAudit(Base):
    """Every outbound decision and the rule that made it: placed, skipped (why), refused,
    opted out, voicemail left, fax hung up, failed."""

    __tablename__ = "outbound_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32), default=None)
    rule: Mapped[str] = mapped_column(String(64))
    to_number: Mapped[str] = mapped_column(String(32))
    call_sid: Mapped[str | None] = mapped_column(String(64), default=None)
    campaign_id: Mapped[str | None] = mapped_column(String(32), default=None)
    contact_id: Mapped[int | None] = mapped_column(Integer, default=None)
    detail: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)

    __table_args__ = (Index("ix_outbound_audit_number_at", "to_number", "at"),)


class RateSlot(Base):
    """A shared token schedule (``account``: Twilio's calls per second across instances).
    Taking a slot moves ``next_at`` on by one interval under the row's lock."""

    __tablename__ = "rate_slots"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(Base):
    """One POST of one event to one webhook endpoint, and how it went (``server/webhooks``).

    The queue every instance shares: ``pending`` rows due at ``next_attempt_at`` are claimed
    (``delivering``, ``claimed_by``, until ``claim_expires_at``), POSTed, then ``delivered``,
    back to ``pending`` with a later ``next_attempt_at`` (backoff) or ``failed`` (410, or
    still failing a day after ``created_at``). ``body`` is the exact JSON sent (a call.ended
    report is built at its first attempt, then kept: retries send the same bytes).
    ``dedupe_key`` makes a second call.ended / campaign.finished of one subject a no-op.
    ``last_error`` names what went wrong (``HTTP 503``, ``ConnectTimeout``), never content.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    endpoint: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(64), default="")  # call sid or campaign id
    dedupe_key: Mapped[str | None] = mapped_column(String(160), default=None)
    body: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivering|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    claim_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)

    __table_args__ = (
        UniqueConstraint("endpoint", "dedupe_key", name="uq_webhook_deliveries_dedupe"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_created", "created_at", "id"),
    )
