"""Who is calling: the contact of the caller's number (name, notes, sales lead) and their calls.

``Contact.notes`` holds JSON written by these tools (``{"text": ..., "lead": {...}}``);
notes that are not JSON (typed by a human) are kept and read as free text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from langgraph.types import Command
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Call, Contact, utcnow
from dialgraph.server.core.redaction import default_redactor
from dialgraph.tools.calendar import Calendar
from dialgraph.tools.runtime import NO_CALLER_ID, Clock, answer, caller_number, clean, given, sorry, speak_errors
from dialgraph.tools.speech_format import spoken_datetime, spoken_list

LEAD_FIELDS = ("need", "timeline", "budget", "decision_maker")
_LEAD_WORDS = {"need": "what they need", "timeline": "timeline", "budget": "budget", "decision_maker": "who decides"}


@dataclass(frozen=True, slots=True)
class CallerProfile:
    name: str | None
    notes: str | None
    lead: dict[str, str]
    calls: list[Call]  # earlier calls, most recent first


def parse_notes(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {"text": raw}
    return data if isinstance(data, dict) else {"text": raw}


async def caller_profile(db: Database, phone: str, *, exclude_sid: str = "", calls: int = 3) -> CallerProfile:
    async with db.sessionmaker() as s:
        contact = await s.scalar(select(Contact).where(Contact.phone == phone))
        rows = await s.scalars(
            select(Call)
            .where(Call.from_number == phone, Call.sid != exclude_sid)
            .order_by(Call.started_at.desc())
            .limit(calls)
        )
        recent = list(rows)
    notes = parse_notes(contact.notes if contact else None)
    lead = {k: str(v) for k, v in (notes.get("lead") or {}).items() if k in LEAD_FIELDS and v}
    return CallerProfile(contact.name if contact else None, notes.get("text"), lead, recent)


async def update_contact(
    db: Database, phone: str, *, name: str | None = None, lead: dict[str, str] | None = None
) -> Contact:
    """Create or update the contact of ``phone``: set ``name``, merge ``lead`` fields into notes."""
    for _ in range(3):
        try:
            async with db.sessionmaker() as s, s.begin():
                contact = await s.scalar(select(Contact).where(Contact.phone == phone))
                if contact is None:
                    contact = Contact(phone=phone)
                    s.add(contact)
                if name:
                    contact.name = name
                if lead:  # the model's notes of what the caller said: stored redacted
                    lead = {k: default_redactor().redact(v) for k, v in lead.items()}
                    notes = parse_notes(contact.notes)
                    notes["lead"] = {**(notes.get("lead") or {}), **lead}
                    contact.notes = json.dumps(notes, ensure_ascii=False)
                contact.updated_at = utcnow()
                await s.flush()
                return contact
        except IntegrityError:  # a concurrent call created the contact first: update it
            continue
    raise RuntimeError("contact upsert kept conflicting")


def describe_profile(profile: CallerProfile, cal: Calendar) -> str:
    today = cal.today()
    parts = [f"The caller is {profile.name}." if profile.name else "No name on file for this caller."]
    if profile.notes:
        parts.append(f"Notes: {profile.notes}.")
    if profile.lead:
        parts.append("Sales notes: " + "; ".join(f"{_LEAD_WORDS[k]}: {v}" for k, v in profile.lead.items()) + ".")
    if profile.calls:
        last = profile.calls[0]
        when = spoken_datetime(last.started_at.astimezone(cal.zone), today=today)
        count = "once before" if len(profile.calls) == 1 else f"{len(profile.calls)} times recently"
        detail = f" ({last.outcome})" if last.outcome else ""
        if last.transfer_target:
            detail = f" (transferred to {last.transfer_target})"
        parts.append(f"They have called {count}, most recently on {when}{detail}.")
    else:
        parts.append("No earlier calls from this number.")
    return " ".join(parts)


def contact_tools(*, db: Database, clock: Clock) -> list[BaseTool]:
    """lookup_caller, save_caller_name, save_lead."""

    @tool(parse_docstring=True)
    async def lookup_caller(runtime: ToolRuntime[CallContext]) -> str:
        """Look up the caller by their phone number: name, notes, earlier calls and next appointment."""
        ctx = runtime.context
        phone = caller_number(ctx)
        if phone is None:
            return "The caller's number is hidden, so I can't look them up."
        cal = Calendar(db, ctx.flow_settings, clock=clock)

        async def run() -> str:
            text = describe_profile(await caller_profile(db, phone, exclude_sid=ctx.call_sid), cal)
            upcoming = await cal.upcoming(phone)
            if upcoming:
                text += f" Next appointment: {spoken_datetime(upcoming[0].starts_at.astimezone(cal.zone), today=cal.today())}."
            return text

        return await speak_errors("lookup_caller", ctx, run, sorry("look up the caller"))

    async def save_name(ctx: CallContext, name: str) -> str:
        phone = caller_number(ctx)
        if phone is None:
            return NO_CALLER_ID
        cleaned = clean(name, 128)
        if not cleaned or any(c.isdigit() for c in cleaned):
            return "I didn't catch a name. Ask the caller to say it again."

        async def run() -> str:
            await update_contact(db, phone, name=cleaned)
            return f"Saved the name {cleaned}."

        return await speak_errors("save_caller_name", ctx, run, sorry("save the name"))

    @tool(parse_docstring=True)
    async def save_caller_name(name: str, runtime: ToolRuntime[CallContext]) -> Command[Any] | str:
        """Remember the caller's name for their phone number.

        Args:
            name: the caller's name as they said it.
        """
        return answer(runtime, await save_name(runtime.context, name), {"caller_name": given(name)})

    async def save_answers(ctx: CallContext, lead: dict[str, str]) -> str:
        phone = caller_number(ctx)
        if phone is None:
            return NO_CALLER_ID

        async def run() -> str:
            contact = await update_contact(db, phone, lead=lead)
            stored = parse_notes(contact.notes).get("lead") or {}
            missing = [_LEAD_WORDS[k] for k in LEAD_FIELDS if not stored.get(k)]
            saved = "Saved." if lead else "Nothing new to save."
            if not missing:
                return f"{saved} All four are known: need, timeline, budget and who decides."
            return f"{saved} Still missing: {spoken_list(missing)}."

        return await speak_errors("save_lead", ctx, run, sorry("save those details"))

    @tool(parse_docstring=True)
    async def save_lead(
        runtime: ToolRuntime[CallContext],
        need: str | None = None,
        timeline: str | None = None,
        budget: str | None = None,
        decision_maker: str | None = None,
    ) -> Command[Any] | str:
        """Record sales qualification answers for the caller; says which ones are still missing.

        Args:
            need: what the caller needs, in a few words.
            timeline: when they need it.
            budget: their budget.
            decision_maker: who makes the buying decision.
        """
        given_answers = dict(zip(LEAD_FIELDS, (need, timeline, budget, decision_maker), strict=True))
        lead = {k: c for k, v in given_answers.items() if (c := clean(v))}
        said = {k: v for k, v in given_answers.items() if isinstance(v, str) and v.strip()}
        return answer(runtime, await save_answers(runtime.context, lead), {"lead": said})

    return [lookup_caller, save_caller_name, save_lead]
