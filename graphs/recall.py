"""Callback memory: what we know about a caller who rings back, for the greeting.

``build_recall(db=..., saver=...)`` returns ``recall(ctx)``, which the runner awaits before
the greeting of a new call. It reads, concurrently and without any model call:

- the contact of the caller's number (their name);
- when ``ctx.previous_thread_id`` is set (the same number called within
  ``Settings.callback_window_hours``) and that call was on the same flow as this one (the
  flow is in the thread's checkpoint metadata, see ``GraphRunner``): that thread's newest
  checkpoint (the name the caller gave, whether the conversation was left open and about
  what) and whether the caller has an upcoming appointment.

Caller ID can be spoofed, so the greeting (``graphs.flows.base.welcome_back``) says only the
first name and offers the appointment without reading it; its details are read when the
caller asks (the ``list_my_appointments`` tool). Nothing is recalled across flows: a call to
the sales line does not learn of a booking made on the dental line.

The new call keeps its own thread (its CallSid); the link to the old one is
``Call.previous_thread_id`` and the ``callback`` field of the new thread's state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy import select

from dialgraph.graphs.state import DIALOG_ACT, CallbackState
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Contact
from dialgraph.tools.calendar import Calendar
from dialgraph.tools.runtime import caller_number, utc_clock
from dialgraph.tools.speech_format import spoken_datetime

log = structlog.get_logger(__name__)

Recall = Callable[[CallContext], Awaitable[CallbackState | None]]

# What the caller was doing, by the ``intent`` label of their last turn (graphs.intents).
TOPICS = {
    "book": "booking an appointment",
    "reschedule": "moving your appointment",
    "cancel": "cancelling your appointment",
    "list": "checking your appointments",
    "message": "taking a message for you",
    "human": "putting you through to someone",
}
_FIXED_ACTS = frozenset({"greeting", "reconnected"})


def left_open(values: dict[str, Any]) -> bool:
    """True when a checkpointed conversation stopped with something unanswered: it ended
    neither with the agent's goodbye nor with a transfer, and its last word was the
    caller's, or the agent's question (not the greeting)."""
    if values.get("pending_end") or values.get("pending_transfer"):
        return False
    messages: Sequence[AnyMessage] = values.get("messages") or []
    for m in reversed(messages):
        if isinstance(m, AIMessage):
            act = m.response_metadata.get(DIALOG_ACT)
            if act == "reconnected":
                continue
            if m.tool_calls or act in _FIXED_ACTS:
                return False
            return str(m.content).rstrip().endswith("?")
        return isinstance(m, (HumanMessage, ToolMessage))
    return False


def open_topic(values: dict[str, Any]) -> str | None:
    """What the previous conversation was about, when it was left open and we can say it."""
    if not left_open(values):
        return None
    return TOPICS.get(str(values.get("intent") or ""))


def build_recall(
    *, db: Database, saver: BaseCheckpointSaver[Any] | None, clock: Callable[[], dt.datetime] | None = None
) -> Recall:
    """``recall(ctx)``: the callback facts for ``ctx``'s caller, or None when we know nothing."""
    now = clock or utc_clock

    async def contact_name(phone: str) -> str | None:
        async with db.sessionmaker() as s:
            return await s.scalar(select(Contact.name).where(Contact.phone == phone))

    async def next_appointment(ctx: CallContext, phone: str) -> str | None:
        cal = Calendar(db, ctx.flow_settings, clock=now)
        upcoming = await cal.upcoming(phone)
        if not upcoming:
            return None
        return spoken_datetime(upcoming[0].starts_at.astimezone(cal.zone), today=cal.today())

    async def previous_values(ctx: CallContext) -> dict[str, Any]:
        """The previous thread's state, when it was a call on this same flow."""
        if not ctx.previous_thread_id or saver is None:
            return {}
        config = {"configurable": {"thread_id": ctx.previous_thread_id, "checkpoint_ns": ""}}
        tup = await saver.aget_tuple(config)  # type: ignore[arg-type]
        if tup is None or (tup.metadata or {}).get("flow") != ctx.flow:
            return {}
        return dict(tup.checkpoint.get("channel_values") or {})

    async def recall(ctx: CallContext) -> CallbackState | None:
        phone = caller_number(ctx)
        if phone is None:  # a withheld number is nobody we know
            return None
        try:
            name, previous = await asyncio.gather(contact_name(phone), previous_values(ctx))
            # An appointment is only mentioned to a caller who rang this same flow recently.
            appointment = await next_appointment(ctx, phone) if previous else None
        except Exception:  # the greeting must go out whatever the database does
            log.exception("recall_failed", call_sid=ctx.call_sid)
            return None
        name = name or previous.get("caller_name")
        topic = open_topic(previous)
        if not (name or appointment or topic):
            return None
        log.info(
            "caller_recalled",
            call_sid=ctx.call_sid,
            previous_thread_id=ctx.previous_thread_id,
            same_flow=bool(previous),
            named=bool(name),
            appointment=bool(appointment),
            topic=topic,
        )
        return {
            "name": name,
            "appointment": appointment,
            "topic": topic,
            "previous_thread_id": ctx.previous_thread_id,
        }

    return recall
