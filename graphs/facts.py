"""What a model may know about the call it is on: ``CallFacts``.

The flow's agent node builds them for every model call from the run's context (the flow's
settings, the call's direction and, on an outbound call, the contact it was placed with),
the state (the caller's name) and the clock; never the other party's number. A hosted
model reads them as lines of its system prompt (``CallFacts.prompt``); the offline model
reads the object itself from the model call's metadata (``facts_config`` in, ``facts_in``
out), so no one parses prompt text.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from langchain_core.runnables import RunnableConfig

from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.tools.speech_format import WEEKDAY_NAMES, spoken_date, spoken_time

FACTS_KEY = "dialgraph_call_facts"

# Contact keys with a meaning of their own; the rest are custom fields the model is told.
CONTACT_KEYS = frozenset({"name", "purpose", "appointment"})
# Never told to the model: the numbers (the model must not read out, or be asked for, them).
_NUMBER_KEYS = re.compile(r"(^|_)(to|from|phone|number|mobile|msisdn|tel|caller|called|cell)($|_)", re.I)
_NUMBER_LIKE = re.compile(r"\+?\d[\d\s().-]{5,}\d")
_MAX_FIELDS = 12


@dataclass(frozen=True, slots=True)
class CallFacts:
    """The call's facts as the model is told them."""

    company: str = "us"
    timezone: str = "UTC"
    now: dt.datetime | None = None  # local wall time (naive), to the minute; None: not stated
    hours: Mapping[str, str] = field(default_factory=dict)  # weekday (mon..sun) -> "HH:MM-HH:MM"
    targets: Mapping[str, str] = field(default_factory=dict)  # transfer target key -> spoken description
    caller_name: str | None = None
    # outbound calls: we placed the call, to this person, about this, with these fields
    direction: str = "inbound"
    contact_name: str | None = None
    purpose: str | None = None
    appointment: dt.datetime | None = None  # the contact's appointment, local wall time (naive)
    fields: Mapping[str, str] = field(default_factory=dict)  # custom contact fields (never a number)
    # the flow's language (``server.core.language``: en, en-IN, hi, hi-en) and how Hindi is written
    language: str = "en"
    script: str = "roman"  # roman | devanagari

    @classmethod
    def of(
        cls,
        flow: FlowSettings,
        *,
        now: dt.datetime,
        caller_name: str | None = None,
        direction: str = "inbound",
        contact: Mapping[str, Any] | None = None,
    ) -> CallFacts:
        """The facts of a call on ``flow`` at ``now`` (aware, or naive UTC); ``contact`` is
        what an outbound call was placed with (``CallContext.contact``)."""
        aware = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
        local = aware.astimezone(flow.zone).replace(second=0, microsecond=0, tzinfo=None)
        contact = contact or {}
        name = contact_text(contact.get("name"), 80)
        return cls(
            company=flow.company,
            timezone=flow.timezone,
            now=local,
            hours=dict(flow.business_hours),
            targets={k: t.description or k.replace("_", " ") for k, t in flow.transfer_targets.items()},
            caller_name=caller_name or (name if direction == "outbound" else None),
            direction=direction,
            contact_name=name,
            purpose=contact_text(contact.get("purpose"), 200),
            appointment=local_datetime(contact.get("appointment"), flow.zone),
            fields=custom_fields(contact),
            language=flow.language,
            script=str(getattr(flow, "script", "roman") or "roman"),
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def outbound(self) -> bool:
        return self.direction == "outbound"

    def local_now(self) -> dt.datetime:
        """The stated local time; without one, the wall clock in the call's zone (aware,
        never the host's zone)."""
        return self.now if self.now is not None else dt.datetime.now(self.zone)

    def appointment_words(self) -> str | None:
        """The contact's appointment as said on the phone: "tomorrow at 10 in the morning"."""
        if self.appointment is None:
            return None
        return spoken_when(self.appointment, self.local_now().date())

    def prompt(self) -> str:
        """The facts as lines of a system prompt."""
        local = self.local_now()
        targets = "; ".join(f"{key} = {desc}" for key, desc in self.targets.items())
        hours = ", ".join(f"{day} {span}" for day, span in self.hours.items()) or "closed"
        text = (
            f"Company: {self.company}.\n"
            f"Local time now: {local.strftime('%Y-%m-%dT%H:%M')} ({local.strftime('%A %d %B %Y, %H:%M')}). "
            f"Time zone: {self.timezone}.\n"
            f"Opening hours: {hours}.\n"
            f"Transfer targets: {targets or 'none'}.\n"
            f"Caller's name: {self.caller_name or 'unknown'}."
        )
        text = f"{text}\n{self.outbound_prompt()}" if self.outbound else text
        rules = self.language_prompt()
        return f"{text}\n{rules}" if rules else text

    def language_prompt(self) -> str:
        """What the model is told of the language to answer in; empty for an English flow
        (its prompt stays as it always was)."""
        if self.language not in ("en-IN", "hi", "hi-en"):
            return ""
        script = (
            "Write Hindi in Devanagari script."
            if self.script == "devanagari"
            else 'Write Hindi words in Roman script (as in "kal subah 10 baje"), never in Devanagari.'
        )
        lead = {
            "en-IN": "Callers are in India and speak Indian English; many mix in Hindi.",
            "hi": "Callers speak Hindi, often with English words.",
            "hi-en": "Callers mix Hindi and English in one sentence (Hinglish).",
        }[self.language]
        return (
            f"Language: {lead} Answer in the caller's own mix of Hindi and English, following them if they "
            f"switch: English to an English sentence, Hinglish to a Hinglish one. {script} "
            'Keep replies short and spoken. Say dates the Indian way ("Thursday, 8 December") and times '
            'as people say them ("subah 10 baje", "shaam 5 baje", or "10 in the morning" in English); '
            "amounts in rupees with lakh and crore."
        )

    def outbound_prompt(self) -> str:
        """What the model is told of a call we placed (no number, ever)."""
        who = self.contact_name or "this person (name unknown)"
        about = self.purpose or "a follow-up from us"
        lines = [
            f"You placed this call to {who} about {about}; you have already greeted them and said why you call.",
        ]
        if self.appointment is not None:
            lines.append(
                f"Their appointment: {self.appointment.strftime('%Y-%m-%dT%H:%M')} ({self.appointment_words()}); "
                "ask whether they keep it, move it (reschedule_appointment) or cancel it (cancel_appointment)."
            )
        if self.fields:
            lines.append("What we know of them: " + "; ".join(f"{k}: {v}" for k, v in self.fields.items()) + ".")
        lines.append(
            "If they say they don't want calls from us, call opt_out. If they are not interested, "
            "thank them, say goodbye and call end_call with reason not_interested."
        )
        return "\n".join(lines)


def contact_text(value: Any, limit: int) -> str | None:
    """A contact's text value, trimmed; None when blank or not text."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return None
    text = " ".join(str(value).split())
    return text[:limit] or None


def custom_fields(contact: Mapping[str, Any]) -> dict[str, str]:
    """The contact's custom fields the model may see: short text values, never a number
    (by key, such as ``phone``, or by looks) and never the keys with a meaning of their own."""
    out: dict[str, str] = {}
    for key, value in contact.items():
        k = str(key).strip()
        if not k or k.lower() in CONTACT_KEYS or _NUMBER_KEYS.search(k):
            continue
        text = contact_text(value, 120)
        if text is None or _NUMBER_LIKE.search(text):
            continue
        out[k[:40]] = text
        if len(out) >= _MAX_FIELDS:
            break
    return out


def local_datetime(value: Any, zone: ZoneInfo) -> dt.datetime | None:
    """An ISO date-time as local wall time in ``zone`` (naive); an offset is converted, a
    naive value is taken as local already. None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        at = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if at.tzinfo is not None:
        at = at.astimezone(zone).replace(tzinfo=None)
    return at.replace(second=0, microsecond=0)


def spoken_when(at: dt.datetime, today: dt.date) -> str:
    """A local date-time relative to ``today``, as said on the phone: "today at 3 in the
    afternoon", "tomorrow at 10 in the morning", "on Tuesday at 9 in the morning" (this
    week), else "on Tuesday the 5th of May at 9 in the morning"."""
    time = spoken_time(at.time())
    days = (at.date() - today).days
    if days == 0:
        return f"today at {time}"
    if days == 1:
        return f"tomorrow at {time}"
    if 1 < days < 7:
        return f"on {WEEKDAY_NAMES[at.weekday()]} at {time}"
    return f"on {spoken_date(at.date(), today=today)} at {time}"


def facts_config(facts: CallFacts) -> RunnableConfig:
    """The config of a model call that carries ``facts`` in its metadata."""
    return {"metadata": {FACTS_KEY: facts}}


def facts_in(metadata: Mapping[str, Any] | None) -> CallFacts:
    """The facts a model call's metadata carries (empty facts when it carries none)."""
    facts = (metadata or {}).get(FACTS_KEY)
    return facts if isinstance(facts, CallFacts) else CallFacts()
