"""Post-call analysis, the flow-facing half: what a flow declares, the offline extraction,
and the prompt and schema a hosted model answers.

A flow declares its fields as data on its ``FlowSpec``: ``analysis=AnalysisSpec(fields, offline)``
where ``fields`` is a pydantic model (field names, types, descriptions: what the hosted
model fills and what the call row stores) and ``offline`` the deterministic extraction the
offline model uses. The extraction reads a ``CallRecord``: the call row's facts (outcome,
transfer), the transcript as heard, and the thread's final checkpoint state (the tool calls
and their results: bookings, messages, transfers, opt-outs, sales answers). The summary is
a templated sentence or two. Pure functions: no I/O, no clock (``server/analysis.py`` runs
them off the event loop and stores the result, redacted).

A hosted model answers one structured-output request (``with_structured_output``, OpenAI's
``response_format: json_schema``) built by ``hosted_messages`` and ``analysis_schema``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, ConfigDict, Field, create_model

from dialgraph.graphs.spoken_time import parse_when
from dialgraph.tools.booking import OUTCOME_PREFIXES
from dialgraph.tools.knowledge import DONT_KNOW, DONT_KNOW_HI
from dialgraph.tools.messages import TAKEN_PREFIXES
from dialgraph.tools.state import NOT_INTERESTED, OPTED_OUT

OFFLINE = "offline"  # the ``model`` of an analysis made by the rules here

# What the calendar tools say when they did what was asked (``tools/booking.py``
# ``describe_outcome``), in every reply language; anything else (taken, closed, not
# found...) changed nothing.
_BOOKED = OUTCOME_PREFIXES["booked"]
_MOVED = OUTCOME_PREFIXES["moved"]
_CANCELLED = OUTCOME_PREFIXES["cancelled"]
_MESSAGE_TAKEN = TAKEN_PREFIXES
_DONT_KNOW = (DONT_KNOW, DONT_KNOW_HI)
_ANSWERED_DIAL = frozenset({"completed", "answered"})
_GREETING = re.compile(r"^(hi|hello|hey|yes|yeah|well|so|um+|uh+|ok|okay)\b[ ,.!]*", re.I)


# --- what a flow declares --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallRecord:
    """Everything an analysis reads about one ended call (plain values)."""

    flow: str
    direction: str = "inbound"
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    started_at: dt.datetime | None = None  # aware
    status: str | None = None
    outcome: str | None = None
    transfer_target: str | None = None
    transfer_status: str | None = None
    contact_name: str | None = None  # outbound: who we called
    targets: Mapping[str, str] = field(default_factory=dict)  # transfer target name -> its description
    transcript: tuple[tuple[str, str], ...] = ()  # (role, text) as heard: caller | agent
    state: Mapping[str, Any] = field(default_factory=dict)  # the thread's final checkpoint values

    @property
    def messages(self) -> list[BaseMessage]:
        return [m for m in self.state.get("messages") or [] if isinstance(m, BaseMessage)]

    @property
    def steps(self) -> list[ToolStep]:
        return tool_steps(self.messages)

    @property
    def caller_turns(self) -> list[str]:
        turns = [text for role, text in self.transcript if role == "caller" and text]
        if turns:
            return turns
        return [str(m.content) for m in self.messages if isinstance(m, HumanMessage) and str(m.content).strip()]

    @property
    def caller_name(self) -> str | None:
        name = self.state.get("caller_name")
        if isinstance(name, str) and name.strip():
            return name.strip()
        for step in reversed(self.steps):
            given = step.args.get("caller_name") or step.args.get("name")
            if step.ok and isinstance(given, str) and given.strip():
                return given.strip()
        return self.contact_name

    @property
    def local_start(self) -> dt.datetime | None:
        return self.started_at.astimezone(self.zone) if self.started_at is not None else None

    @property
    def transferred_to(self) -> str | None:
        """The target a human answered for (a transfer that went through)."""
        if self.outcome == "transferred" or (self.transfer_status or "") in _ANSWERED_DIAL:
            return self.transfer_target
        return None

    @property
    def transfer_failed(self) -> bool:
        return bool(self.transfer_target) and self.transferred_to is None and self.transfer_status is not None

    def target_words(self, name: str | None) -> str:
        """How a summary names a transfer target: "the billing team"."""
        return f"the {self.targets.get(name or '') or _words(name) or 'team'}"

    @property
    def end_reason(self) -> str | None:
        end = self.state.get("pending_end")
        return end.get("reason") if isinstance(end, Mapping) else None


@dataclass(frozen=True, slots=True)
class ToolStep:
    """One tool call of the conversation and what it answered."""

    name: str
    args: Mapping[str, Any]
    result: str
    ok: bool  # the tool ran (not an error); whether it did what was asked is in ``result``


@dataclass(frozen=True, slots=True)
class Extracted:
    """What an offline extraction found: the summary and the field values."""

    summary: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AnalysisSpec:
    """A flow's post-call analysis: its fields (a pydantic model) and how the offline model
    fills them. ``offline`` may be None: then the fields keep their defaults."""

    fields: type[BaseModel]
    offline: Callable[[CallRecord], Extracted] | None = None
    instructions: str = ""  # what the hosted model is told about this flow


@dataclass(frozen=True, slots=True)
class Analysis:
    """A finished analysis (before redaction)."""

    summary: str
    fields: dict[str, Any]
    model: str


def tool_steps(messages: Sequence[BaseMessage]) -> list[ToolStep]:
    """The tool calls in ``messages`` paired with their results, in order."""
    results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    steps: list[ToolStep] = []
    for m in messages:
        if not isinstance(m, AIMessage):
            continue
        for call in m.tool_calls:
            answer = results.get(call.get("id") or "")
            if answer is None:
                continue  # never ran (the call ended first)
            steps.append(
                ToolStep(call["name"], dict(call.get("args") or {}), str(answer.content), answer.status != "error")
            )
    return steps


# --- the offline extraction ------------------------------------------------------------------
def offline_analysis(spec: AnalysisSpec | None, record: CallRecord) -> Analysis:
    """The deterministic analysis of ``record`` (no model call)."""
    if not record.caller_turns and not record.steps:
        return Analysis(no_conversation(record), _defaults(spec), OFFLINE)
    if spec is None or spec.offline is None:
        return Analysis(generic_summary(record), _defaults(spec), OFFLINE)
    found = spec.offline(record)
    fields = spec.fields.model_validate(found.fields).model_dump(mode="json")
    return Analysis(found.summary, fields, OFFLINE)


def _defaults(spec: AnalysisSpec | None) -> dict[str, Any]:
    if spec is None:
        return {}
    try:
        return spec.fields().model_dump(mode="json")
    except ValueError:  # a field without a default: nothing to say offline
        return {}


def no_conversation(record: CallRecord) -> str:
    what = record.outcome or record.status or "ended"
    return f"No conversation took place: the call ended ({what.replace('_', ' ').replace('-', ' ')})."


def generic_summary(record: CallRecord) -> str:
    who = record.caller_name or "The caller"
    parts = [f"{who} called the {record.flow.replace('_', ' ')} line."]
    parts.extend(_ending(record))
    return " ".join(parts)


def _ending(record: CallRecord) -> list[str]:
    """Sentences for how the call ended: transfers, messages, opt-outs."""
    out: list[str] = []
    for step in record.steps:
        if step.name == "take_message" and step.result.startswith(_MESSAGE_TAKEN):
            target = step.args.get("for_whom")
            out.append(f"A message was left for {record.target_words(target)}." if target else "A message was left.")
    if record.transferred_to:
        out.insert(0, f"The call was transferred to {record.target_words(record.transferred_to)}.")
    elif record.transfer_failed:
        status = _words(record.transfer_status).replace("-", " ")
        out.insert(0, f"A transfer to {record.target_words(record.transfer_target)} failed ({status}).")
    if record.end_reason == OPTED_OUT or record.outcome == OPTED_OUT:
        out.append("They asked not to be called again and were taken off the list.")
    elif record.end_reason == NOT_INTERESTED or record.outcome == NOT_INTERESTED:
        out.append("They were not interested.")
    return out


def _words(name: str | None) -> str:
    return (name or "").replace("_", " ")


def local_iso(when: dt.datetime, zone: ZoneInfo) -> str:
    """An ISO-8601 instant in the flow's zone (with its offset), to the minute."""
    aware = when.replace(tzinfo=zone) if when.tzinfo is None else when.astimezone(zone)
    return aware.replace(second=0, microsecond=0).isoformat()


def _when_text(when: dt.datetime) -> str:
    hour = when.strftime("%I").lstrip("0")
    minutes = "" if when.minute == 0 else when.strftime(":%M")
    return f"{when.strftime('%A')} {when.day} {when.strftime('%B %Y')} at {hour}{minutes} {when.strftime('%p').lower()}"


def read_time(text: object, record: CallRecord, *, previous: dt.datetime | None = None) -> dt.datetime | None:
    """A tool's time argument as a local datetime: ISO (what the tools ask for), else the
    words; a bare time keeps ``previous``'s day and a bare date its time (a move)."""
    if not isinstance(text, str) or not text.strip():
        return None
    raw = text.strip()
    try:
        parsed = dt.datetime.fromisoformat(raw)
    except ValueError:
        parsed = None
    if parsed is not None:
        return parsed.astimezone(record.zone).replace(tzinfo=None) if parsed.tzinfo else parsed
    try:
        only_time = dt.time.fromisoformat(raw)
    except ValueError:
        only_time = None
    if only_time is not None:
        return dt.datetime.combine(previous.date(), only_time) if previous is not None else None
    now = record.local_start
    when = parse_when(raw, (now or dt.datetime.now(record.zone)).replace(tzinfo=None))
    if when is None:
        return None
    if when.time is None:
        return dt.datetime.combine(when.date, previous.time()) if previous is not None else None
    if not when.dated and previous is not None:
        return dt.datetime.combine(previous.date(), when.time)
    return dt.datetime.combine(when.date, when.time)


@dataclass(slots=True)
class _Booking:
    """What the calendar tools did in the call, in order."""

    outcome: Literal["booked", "moved", "cancelled", "none"] = "none"
    when: dt.datetime | None = None
    was: dt.datetime | None = None  # before a move
    booked_here: bool = False
    actions: list[str] = field(default_factory=list)


def bookings(record: CallRecord) -> _Booking:
    """The net effect of the call on the caller's appointments: ``booked`` (a new one, even
    if moved later in the call), ``moved`` (an existing one), ``cancelled``, or ``none``."""
    b = _Booking()
    for step in record.steps:
        if not step.ok:
            continue
        if step.name == "book_appointment" and step.result.startswith(_BOOKED):
            b.when, b.was, b.booked_here = read_time(step.args.get("start"), record), None, True
            b.outcome = "booked"
            b.actions.append("booked")
        elif step.name == "reschedule_appointment" and step.result.startswith(_MOVED):
            b.was = b.when
            b.when = read_time(step.args.get("new_start"), record, previous=b.when)
            b.outcome = "booked" if b.booked_here else "moved"
            b.actions.append("moved")
        elif step.name == "cancel_appointment" and step.result.startswith(_CANCELLED):
            b.outcome, b.booked_here = "cancelled", False
            b.actions.append("cancelled")
    return b


def scheduling_offline(record: CallRecord) -> Extracted:
    """scheduling: outcome booked / moved / cancelled / none, the appointment time, the name."""
    b = bookings(record)
    who = record.caller_name
    subject = who or "The caller"
    sentences: list[str] = []
    when = _when_text(b.when) if b.when is not None else None
    at = f" for {when}" if when else ""
    if b.outcome == "booked" and "moved" in b.actions and b.was is not None:
        sentences.append(f"{subject} booked an appointment and moved it to {when}.")
    elif b.outcome == "booked":
        sentences.append(f"{subject} booked an appointment{at}.")
    elif b.outcome == "moved":
        sentences.append(
            f"{subject} moved their appointment to {when}." if when else f"{subject} moved their appointment."
        )
    elif b.outcome == "cancelled":
        sentences.append(f"{subject} cancelled their appointment{' on ' + when if when else ''}.")
    else:
        sentences.append(f"{subject} called; no appointment was booked, moved or cancelled.")
    sentences.extend(_ending(record))
    return Extracted(
        " ".join(sentences),
        {
            "outcome": b.outcome,
            "appointment_time": local_iso(b.when, record.zone) if b.when is not None else None,
            "caller_name": who,
        },
    )


# issue categories of the support flow, by transfer target and by the caller's words
_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("billing", r"\b(bill|billing|invoice|charge[ds]?|payment|pay|refund|price|cost|receipt)\b"),
    (
        "technical",
        r"\b(not working|doesn't work|does not work|broken|error|crash\w*|bug|technical|login|log in|password)\b",
    ),
    ("account", r"\b(account|address|details|profile|sign ?up|cancel my)\b"),
    ("appointment", r"\b(appointment|booking|reschedule|visit)\b"),
    ("hours_location", r"\b(hours|open|opening|closed?|where are you|address|park|parking|location|directions)\b"),
)


def issue_category(record: CallRecord) -> str:
    """The support call's category: the team it went to, else the caller's words."""
    if record.transfer_target:
        target = record.transfer_target.lower()
        for name, _ in _CATEGORIES:
            if name in target:
                return name
        if target in ("support", "tech", "tech_support", "technical_support"):
            return "technical"
    text = " ".join(record.caller_turns).lower()
    for name, pattern in _CATEGORIES:
        if re.search(pattern, text):
            return name
    return "general"


def support_offline(record: CallRecord) -> Extracted:
    """support: issue category, resolved, needs follow-up, transferred to."""
    steps = record.steps
    answered = [s for s in steps if s.name == "search_knowledge" and s.ok and s.result and s.result not in _DONT_KNOW]
    unknown = [s for s in steps if s.name == "search_knowledge" and (not s.ok or s.result in _DONT_KNOW)]
    message = any(s.name == "take_message" and s.result.startswith(_MESSAGE_TAKEN) for s in steps)
    transferred_to = record.transferred_to
    asked_transfer = any(s.name == "request_transfer" and s.ok for s in steps) or bool(record.transfer_target)
    resolved = bool(answered) and not asked_transfer and not message and not unknown
    needs_follow_up = (
        message or (record.transfer_failed and transferred_to is None) or (bool(unknown) and not asked_transfer)
    )
    category = issue_category(record)
    subject = record.caller_name or "The caller"
    about = "a billing matter" if category == "billing" else _words(category).replace("hours location", "opening hours")
    sentences = [
        f"{subject} contacted support about {about}." if category != "general" else f"{subject} contacted support."
    ]
    if answered:
        sentences.append(
            "The agent answered from the knowledge base."
            if resolved
            else "The agent started to answer from the knowledge base."
        )
    if unknown and not answered:
        sentences.append("The knowledge base had no answer.")
    sentences.extend(_ending(record))
    return Extracted(
        " ".join(sentences),
        {
            "issue_category": category,
            "resolved": resolved,
            "needs_follow_up": needs_follow_up,
            "transferred_to": transferred_to,
        },
    )


_LEAD_LEAD_INS = {
    "need": re.compile(
        r"^(i'?m|i am|we'?re|we are) (really )?(interested in|looking for|after)\s+|^(we|i) (need|want|would like)\s+",
        re.I,
    ),
    "timeline": re.compile(
        r"^(we|i) (want|hope|plan|need|would like) to (start|begin|buy|get started|go live)\s+", re.I
    ),
    "budget": re.compile(r"^(our|my|the) budget is\s+|^(we|i) (have|can spend)\s+", re.I),
}


def _answer(text: object, key: str = "") -> str | None:
    """A sales answer as a field value: without greetings, lead-ins ("we want to start") or
    the final full stop."""
    if not isinstance(text, str):
        return None
    clean = _GREETING.sub("", text.strip()).strip().rstrip(".!").strip()
    if key in _LEAD_LEAD_INS:
        clean = _LEAD_LEAD_INS[key].sub("", clean).strip() or clean
    return clean[:1].upper() + clean[1:] if clean else None


def _decides(text: object) -> bool | None:
    if not isinstance(text, str) or not text.strip():
        return None
    low = text.strip().lower()
    if re.match(
        r"^(no|nope|not me|not really)\b|\b(my (boss|manager|partner|wife|husband)|someone else|not the)\b", low
    ):
        return False
    if re.match(r"^(yes|yeah|yep|i do|i am|me|sure|of course|correct)\b|\bi (make|decide|own)\b", low):
        return True
    return None


def sales_offline(record: CallRecord) -> Extracted:
    """sales: interest, budget, timeline, decision maker, next step (and its time)."""
    lead = record.state.get("lead") or {}
    lead = lead if isinstance(lead, Mapping) else {}
    interest = _answer(lead.get("need"), "need")
    budget, timeline = _answer(lead.get("budget"), "budget"), _answer(lead.get("timeline"), "timeline")
    decides = _decides(lead.get("decision_maker"))
    b = bookings(record)
    follow_up = local_iso(b.when, record.zone) if b.booked_here and b.when is not None else None
    message = any(s.name == "take_message" and s.result.startswith(_MESSAGE_TAKEN) for s in record.steps)
    if record.end_reason == OPTED_OUT or record.outcome == OPTED_OUT:
        next_step = "opted_out"
    elif record.transferred_to:
        next_step = "transferred"
    elif follow_up:
        next_step = "follow_up_booked"
    elif message:
        next_step = "callback_requested"
    elif record.end_reason == NOT_INTERESTED or record.outcome == NOT_INTERESTED:
        next_step = "not_interested"
    else:
        next_step = "none"
    subject = record.caller_name or "The caller"
    first = interest[:1].lower() + interest[1:] if interest else ""
    sentences = [f"{subject} is interested in {first}." if interest else f"{subject} talked to sales."]
    known = [
        f"budget {budget[:1].lower() + budget[1:]}" if budget else "",
        f"timeline {timeline.lower()}" if timeline else "",
    ]
    if decides is not None:
        known.append("makes the decision" if decides else "does not decide alone")
    if any(known):
        text = ", ".join(k for k in known if k)
        sentences.append(text[:1].upper() + text[1:] + ".")
    if follow_up and b.when is not None:
        sentences.append(f"A follow-up call is booked for {_when_text(b.when)}.")
    sentences.extend(_ending(record))
    return Extracted(
        " ".join(sentences),
        {
            "interest": interest,
            "budget": budget,
            "timeline": timeline,
            "decision_maker": decides,
            "next_step": next_step,
            "follow_up_at": follow_up,
        },
    )


# --- the hosted model ------------------------------------------------------------------------
SUMMARY_RULES = """You analyse a finished phone call handled by an AI receptionist.
Write a short summary (one or two sentences, plain text, past tense) of what the caller wanted
and what came of it, and fill the fields from what actually happened: trust the tool results
(bookings, messages, transfers) over what was merely said. Dates and times as ISO-8601 with the
business's UTC offset. Use null for what the call did not reveal. Never include phone numbers,
card numbers or other identifiers in the summary."""


def analysis_schema(spec: AnalysisSpec | None) -> type[BaseModel]:
    """The structured output a hosted model answers: the summary and the flow's fields."""
    fields_model: type[BaseModel] = spec.fields if spec is not None else _NoFields
    return create_model(
        "CallAnalysis",
        __config__=ConfigDict(extra="forbid"),
        summary=(str, Field(description="one or two sentences: what the caller wanted and what came of it")),
        fields=(fields_model, Field(description="the flow's structured fields")),
    )


class _NoFields(BaseModel):
    model_config = ConfigDict(extra="forbid")


def hosted_messages(spec: AnalysisSpec | None, record: CallRecord) -> list[BaseMessage]:
    """The request for a hosted model: the rules, the flow's instructions, and the call."""
    facts: dict[str, Any] = {
        "flow": record.flow,
        "direction": record.direction,
        "time_zone": str(record.zone),
        "call_started_local": record.local_start.replace(microsecond=0).isoformat() if record.local_start else None,
        "outcome": record.outcome,
        "transfer": {"target": record.transfer_target, "status": record.transfer_status}
        if record.transfer_target
        else None,
        "caller_name": record.caller_name,
        "sales_answers": record.state.get("lead") or None,
    }
    steps = [{"tool": s.name, "args": dict(s.args), "result": s.result[:500]} for s in record.steps]
    lines = "\n".join(f"{role}: {text}" for role, text in record.transcript if text)
    system = SUMMARY_RULES + (f"\n\n{spec.instructions}" if spec is not None and spec.instructions else "")
    call = (
        f"Call facts:\n{json.dumps(facts, ensure_ascii=False, default=str)}\n\n"
        f"Tool calls and results, in order:\n{json.dumps(steps, ensure_ascii=False, default=str)}\n\n"
        f"Transcript (as the caller heard it):\n{lines or '(none)'}"
    )
    return [SystemMessage(system), HumanMessage(call)]


async def hosted_analysis(model: BaseChatModel, spec: AnalysisSpec | None, record: CallRecord) -> Analysis:
    """One structured-output request to ``model`` (OpenAI ``json_schema``)."""
    schema = analysis_schema(spec)
    structured = model.with_structured_output(schema, method="json_schema")
    answer = await structured.ainvoke(hosted_messages(spec, record))
    if not isinstance(answer, BaseModel):
        raise ValueError("the model gave no structured answer")
    data = answer.model_dump(mode="json")
    name = str(getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__)
    return Analysis(str(data["summary"]).strip(), dict(data["fields"]), name)
