"""The offline model's dialogue rules: history in, one reply (text and/or tool calls) out.

Pure and deterministic. It reads what a hosted model is told — the call's facts (local
time, transfer targets, the caller's name: a ``CallFacts``, not prompt text), the caller's
words, its own earlier replies and the tools' results — and decides like a careful
receptionist: pick the tool the caller's words ask for, fill its arguments, ask for what
is missing, then say the tool's (already speakable) result and move the call on.

On a call we placed (``facts.outbound``) the greeting already said who we are and why; it
asked for a minute (sales, support) or whether to keep, move or cancel the appointment
(a reminder). "Not interested" ends the call politely (reason ``not_interested``); "stop
calling me" (any flow, any direction) calls ``opt_out``.

Its working memory is a small ``Frame`` (task, what it last asked, collected slots) that
it attaches to each reply's ``response_metadata``; the next call reads the newest one
back. A reply without a frame (an interrupted one, or history from another model) simply
starts from an empty frame.

Language: it answers in ``speech_format.turn_language(facts.language, caller's turns)``
(``server.core.language.reply_language`` of the flow's language and the newest caller turn
that shows one), so a caller who switches between English and Hinglish mid-call is
followed. Its fixed sentences and their Hinglish versions (Roman script) are
``offline_phrases``; the tools already answer in the same language. What the caller's words
show beyond ``intents`` is ``offline_cues``; what it reads in the tools' results,
``offline_results``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from dialgraph.graphs.facts import CallFacts
from dialgraph.graphs.intents import classify, extract_name, is_no, is_yes, pick_ordinal
from dialgraph.graphs.offline_cues import (
    ASKS_OPTIONS,
    CANT,
    HEAR,
    HELLO,
    I_DECIDE,
    INSTEAD,
    KEEP,
    LATER,
    NAMES_BOOKED,
    NOT_NOW,
    OTHERS_DECIDE,
    PRODUCT,
    TRANSFER_WORDS,
    WANTS_TO_ASK,
    WHO_WHAT,
    is_hot,
    vague,
)

# The `X as X` imports name sentences the policy itself does not say: the runner and the
# tests read every fixed sentence from here.
from dialgraph.graphs.offline_phrases import ASK_BUDGET as ASK_BUDGET
from dialgraph.graphs.offline_phrases import (
    ASK_CHOICE,
    ASK_ELSE,
    ASK_FOLLOWUP,
    ASK_HOT,
    ASK_LATER,
    ASK_MESSAGE,
    ASK_MOVE_OR_CANCEL,
    ASK_NAME,
    ASK_NEED_OUT,
    ASK_QUESTION,
    ASK_WHAT_ELSE,
    ASK_WHEN,
    ASK_WHEN_MOVE,
    BUDGET_OFFER_ACT,
    GOODBYE,
    GOODBYE_OUT,
    HELP,
    KEEP_BYE,
    LATER_BYE,
    NOT_INTERESTED_BYE,
    QUALIFY,
    SORRY,
    in_language,
)
from dialgraph.graphs.offline_phrases import ASK_DECISION as ASK_DECISION
from dialgraph.graphs.offline_phrases import ASK_NEED as ASK_NEED
from dialgraph.graphs.offline_phrases import ASK_TIMELINE as ASK_TIMELINE
from dialgraph.graphs.offline_phrases import BUDGET_OFFER as BUDGET_OFFER
from dialgraph.graphs.offline_results import DONE_PREFIXES, ToolResult, names_day, speakable, times_in, tool_results
from dialgraph.graphs.spoken_time import When, normalise, parse_when
from dialgraph.graphs.state import DIALOG_ACT, OFFER
from dialgraph.tools.speech_format import turn_language
from dialgraph.tools.state import NOT_INTERESTED

FRAME_KEY = "offline_frame"


@dataclass(slots=True)
class Frame:
    """What the receptionist is doing and has gathered (plain data: stored in metadata)."""

    task: str | None = None  # book | reschedule | message | lead | keep | later | None
    ask: str | None = None  # what the last reply asked for
    start: str | None = None  # ISO local datetime chosen
    day: str | None = None  # ISO local date mentioned without a time
    offered: list[str] = field(default_factory=list)  # ISO datetimes offered
    name: str | None = None
    purpose: str | None = None
    for_whom: str | None = None
    lead: dict[str, str] = field(default_factory=dict)
    topic: str | None = None  # first thing the caller asked for (for transfer summaries)
    topic_text: str | None = None

    @classmethod
    def load(cls, data: Any) -> Frame:
        if not isinstance(data, dict):
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Reply:
    text: str = ""
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    frame: Frame | None = None


def flow_of(tool_names: set[str]) -> str:
    if "save_lead" in tool_names:
        return "sales"
    if "search_knowledge" in tool_names:
        return "support"
    return "scheduling"


def decide(messages: list[BaseMessage], tool_names: set[str], facts: CallFacts, now: dt.datetime) -> Reply:
    """The next reply for this history, on a call with ``facts``, at local time ``now``."""
    frame = Frame()
    for m in reversed(messages):
        if isinstance(m, AIMessage) and FRAME_KEY in m.response_metadata:
            frame = Frame.load(m.response_metadata[FRAME_KEY])
            break
    latest = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
    if latest is not None and latest.response_metadata.get(DIALOG_ACT) == "offer_message_or_callback":
        frame.ask, frame.task = "message_or_callback", None
        frame.for_whom = latest.response_metadata.get("for_whom")
    if latest is not None and latest.response_metadata.get(DIALOG_ACT) == BUDGET_OFFER_ACT:
        frame.ask, frame.task = "message_or_transfer", None
    if latest is not None and latest.response_metadata.get(OFFER) == "appointment":  # welcome back
        frame.ask, frame.task = "hear_or_change", None
    if latest is not None and latest.response_metadata.get("outbound"):  # our greeting asked
        frame.ask, frame.task = str(latest.response_metadata.get(OFFER) or "minute"), None
    if facts.caller_name and not frame.name:
        frame.name = facts.caller_name
    language = turn_language(facts.language, [str(m.content) for m in messages if isinstance(m, HumanMessage)])
    policy = _Policy(facts, now, frame, tool_names)
    last = messages[-1] if messages else None
    if isinstance(last, ToolMessage):
        reply = policy.after_tools(tool_results(messages))
    else:
        human = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
        reply = Reply(HELP[policy.flow], frame=frame) if human is None else policy.on_caller(str(human.content))
    return replace(reply, text=in_language(reply.text, language)) if language != "en" else reply


class _Policy:
    def __init__(self, facts: CallFacts, now: dt.datetime, frame: Frame, tools: set[str]) -> None:
        self.facts = facts
        self.now = now
        self.frame = frame
        self.tools = tools
        self.flow = flow_of(tools)

    # --- replies -----------------------------------------------------------------------
    def say(self, text: str, *, ask: str | None = None, **changes: Any) -> Reply:
        return Reply(text, frame=replace(self.frame, ask=ask, **changes))

    def call(self, name: str, args: dict[str, Any], **changes: Any) -> Reply:
        if name not in self.tools:
            return self.say(SORRY + " " + HELP[self.flow], task=None)
        return Reply("", ((name, args),), frame=replace(self.frame, ask=None, **changes))

    # --- caller's turn ------------------------------------------------------------------
    def on_caller(self, text: str) -> Reply:
        f = self.frame
        norm = normalise(text)
        intent = classify(norm, self.flow, self.facts.targets)
        if intent == "opt_out" and "opt_out" in self.tools:
            return self.call("opt_out", {"reason": "asked not to be called again"}, task=None)
        if intent == "not_interested":
            reason = NOT_INTERESTED if self.facts.outbound else "completed"
            return self.call("end_call", {"reason": reason}, task=None)
        if f.ask == "minute" and (reply := self.on_minute(norm, intent)):
            return reply
        if f.ask == "reminder" and (reply := self.on_reminder(norm, intent)):
            return reply
        if f.topic is None and intent not in (None, "yes", "no", "bye", "human"):
            f.topic = "question" if self.flow == "support" else intent
            f.topic_text = " ".join(text.split()[:16])
        if f.ask == "message" and intent not in ("human", "bye"):
            return self.call(
                "take_message",
                {"message": text.strip(), "for_whom": f.for_whom, "caller_name": f.name},
                task=None,
            )
        if intent == "bye" or (f.ask in ("anything_else", "followup_book") and intent in (None, "no") and is_no(norm)):
            return self.call("end_call", {"reason": "completed"}, task=None)
        if intent == "human":
            return self.transfer(norm, text)
        if name := extract_name(text, expecting=f.ask == "name"):
            f.name = name
        if f.ask == "message_or_transfer":
            if TRANSFER_WORDS.search(norm):
                return self.transfer(norm, text)
            if intent in (None, "yes", "message", "question"):
                return self.say(ASK_MESSAGE, ask="message", task="message")
            if intent == "no":
                return self.say(f"No problem. {ASK_ELSE}", ask="anything_else", task=None)
        if self.flow == "support" and f.ask != "message" and WANTS_TO_ASK.search(norm) and len(norm.split()) <= 8:
            return self.say(ASK_QUESTION, ask=None, task=None)  # "I have a question": no question yet
        if (
            f.ask == "message_or_callback"
            and self.flow == "support"
            and intent in (None, "question")
            and text.strip().endswith("?")  # a new question instead of a message
        ):
            return self.call("search_knowledge", {"question": text.strip()}, task=None)
        if f.ask == "message_or_callback":
            if "call" in norm and "back" in norm or intent == "book":
                intent = "book" if "book_appointment" in self.tools else "message"
                f.purpose = "Call back"
            elif intent in (None, "yes", "message"):
                return self.say(ASK_MESSAGE, ask="message", task="message")
            elif intent == "no":
                return self.say(f"No problem. {ASK_ELSE}", ask="anything_else", task=None)
        if f.ask == "hear_or_change" and (
            intent in ("yes", "question") or (intent is None and HEAR.search(norm) is not None)
        ):
            return self.call("list_my_appointments", {}, task=None)  # "change it" goes on below
        if f.ask == "hear_or_change" and intent == "no":
            return self.say("No problem. " + HELP[self.flow], task=None)
        if intent == "message":
            who = next((t for t in self.facts.targets if t.replace("_", " ") in norm), None)
            return self.say(ASK_MESSAGE, ask="message", task="message", for_whom=who)
        if f.ask == "anything_else" and is_yes(norm) and intent in (None, "yes"):
            return self.say(ASK_WHAT_ELSE, ask=None, task=None)
        if intent == "cancel" and "cancel_appointment" in self.tools:
            return self.call("cancel_appointment", {}, task=None)
        if intent == "list" and "list_my_appointments" in self.tools:
            return self.call("list_my_appointments", {}, task=None)
        if self.flow == "support" and intent not in ("message", "human", "bye", "no") and f.ask != "name":
            return self.call("search_knowledge", {"question": text.strip()}, task=None)
        if intent == "book" and self.flow == "sales" and f.task in (None, "lead") and PRODUCT.search(norm):
            intent = None  # "appointment booking software": what they want to buy, not a booking
        if self.flow == "sales" and f.task in (None, "lead") and intent not in ("book", "reschedule"):
            return self.qualify(text, norm)
        if intent == "reschedule" and f.task == "book" and not NAMES_BOOKED.search(norm):
            intent = "book"  # "can we make it 4 instead" while booking: "it" is the time being booked
        if intent is None and f.task is None and INSTEAD.search(norm) and "reschedule_appointment" in self.tools:
            intent = "reschedule"  # "4 pm instead", just after a booking or a move
        if intent == "reschedule" or (f.task == "reschedule" and intent in (None, "yes", "no", "question")):
            return self.reschedule(text, norm)
        if intent == "book" or f.task == "book" or f.ask in ("when", "choice", "name"):
            return self.book(text, norm)
        if intent in (None, "question", "yes") and "book_appointment" in self.tools and parse_when(text, self.now):
            return self.book(text, norm)
        if f.ask == "name" and f.name:
            return self.say(f"Thanks, {f.name}. " + HELP[self.flow])
        if HELLO.match(norm):  # "Namaste", "Hello?": nothing asked yet
            return self.say(HELP[self.flow], task=None)
        return self.say(SORRY + " " + HELP[self.flow], task=None)

    def on_minute(self, norm: str, intent: str | None) -> Reply | None:
        """The answer to our outbound greeting's "do you have a minute?"; None: handle the
        words as any other turn (they went straight to what they want)."""
        if LATER.search(norm) or NOT_NOW.search(norm):
            if self.flow == "sales" and "book_appointment" in self.tools:
                return self.say(ASK_LATER, ask="followup_book", task="lead")
            return self.call("end_call", {"reason": "call_later"}, task="later")
        if intent in ("bye", "no") or (intent is None and is_no(norm)):
            return self.call("end_call", {"reason": NOT_INTERESTED}, task=None)
        if intent == "yes":
            if self.flow == "sales":
                return self.say(ASK_NEED_OUT, ask="need", task="lead")
            return self.say(f"Great, thank you. {HELP[self.flow]}", task=None)
        if WHO_WHAT.search(norm):
            about = self.facts.purpose or "a quick follow-up"
            return self.say(f"I'm calling from {self.facts.company} about {about}. Do you have a minute?", ask="minute")
        return None

    def on_reminder(self, norm: str, intent: str | None) -> Reply | None:
        """The answer to "would you like to keep it, move it, or cancel it?"; None: moving,
        cancelling and anything else take their usual paths (the tools find the
        appointment by the number we called)."""
        if intent in ("reschedule", "cancel", "human", "message", "list", "bye"):
            return None
        if CANT.search(norm) or (intent == "no" and not KEEP.search(norm)):
            return self.say(ASK_MOVE_OR_CANCEL, ask="reminder")
        if KEEP.search(norm) or intent == "yes":
            return self.call("end_call", {"reason": "completed"}, task="keep")
        return None

    def when(self, text: str, norm: str) -> When | None:
        f = self.frame
        if f.ask == "choice" and f.offered:
            if (i := pick_ordinal(norm, len(f.offered))) is not None:
                return _when_of(f.offered[i])
            if is_yes(norm) and len(f.offered) == 1:
                return _when_of(f.offered[0])
        when = parse_when(text, self.now)
        if when is not None and when.time and not when.approximate and not when.dated and f.ask == "choice":
            # "4 pm, please" picks the offered 4 pm, whichever day it is on.
            same = [o for o in f.offered if _when_of(o).time == when.time]
            if len(same) == 1:
                return _when_of(same[0])
        if when is not None and f.day and when.time and not names_day(norm):
            when = When(date=dt.date.fromisoformat(f.day), time=when.time)
        return when

    def which_time(self, task: str) -> Reply | None:
        """ "Yes please" to several offered times: ask which, keeping the offer open."""
        if self.frame.ask == "choice" and len(self.frame.offered) > 1:
            return self.say(ASK_CHOICE, ask="choice", task=task)
        return None

    def book(self, text: str, norm: str) -> Reply:
        f = self.frame
        when = self.when(text, norm)
        if when is not None and when.time is not None and not when.approximate:
            f.start, f.day = when.iso(), when.date.isoformat()
        elif when is not None:
            day = when.iso()
            return self.call("find_free_slots", {"when": day, "count": 3}, task="book", day=when.date.isoformat())
        if f.start is None:
            if is_yes(norm) and (again := self.which_time("book")):
                return again
            return self.say(ASK_WHEN, ask="when", task="book")
        if not f.name:
            return self.say(ASK_NAME, ask="name", task="book")
        purpose = f.purpose or ("Sales follow-up" if self.flow == "sales" else None)
        args = {"start": f.start, "name": f.name, "purpose": purpose}
        return self.call("book_appointment", args, task="book")

    def reschedule(self, text: str, norm: str) -> Reply:
        """Move the appointment. Only what the caller said goes to the tool: a bare time
        ("move it to 3 pm") keeps the appointment's day and a bare day ("to Thursday") its
        time of day; the tool knows the appointment, the words do not."""
        when = self.when(text, norm)
        if when is None:
            if is_yes(norm) and (again := self.which_time("reschedule")):
                return again
            return self.say(ASK_WHEN_MOVE, ask="when", task="reschedule")
        if when.approximate or (when.time is None and ASKS_OPTIONS.search(norm)):  # "anything on Thursday?"
            slots = {"when": when.iso(), "count": 3}
            return self.call("find_free_slots", slots, task="reschedule", day=when.date.isoformat())
        day = when.date.isoformat() if when.dated else None
        if when.time is None:
            new_start = when.date.isoformat()
        elif when.dated:
            new_start = when.iso()
        else:
            new_start = when.time.strftime("%H:%M")
        return self.call("reschedule_appointment", {"new_start": new_start}, task="reschedule", day=day)

    def qualify(self, text: str, norm: str) -> Reply:
        f = self.frame
        lead = dict(f.lead)
        asked = f.ask if f.ask in dict(QUALIFY) else None
        if asked == "decision_maker":
            decides = "yes" if is_yes(norm) else ("no" if is_no(norm) else None)
            if decides is None and OTHERS_DECIDE.search(norm):
                decides = "no"
            elif decides is None and I_DECIDE.search(norm):
                decides = "yes"
            lead[asked] = decides or text.strip()
        elif asked:
            lead[asked] = text.strip()
        elif f.ask == "followup_book" and (is_yes(norm) or parse_when(text, self.now)):
            f.task, f.purpose = "book", "Sales follow-up"
            return self.book(text, norm)
        elif f.ask == "hot":
            if "book" in norm or "follow" in norm or parse_when(text, self.now):
                f.task = "book"
                f.purpose = "Sales follow-up"
                return self.book(text, norm)
            if is_no(norm) or NOT_NOW.search(norm):
                return self.say(f"No problem. {ASK_FOLLOWUP}", ask="followup_book", task="lead")
            if is_yes(norm) or re.search(r"\b(connect|now)\b", norm):
                return self.transfer(norm, text)
        elif "need" not in lead and len(norm.split()) > 2 and not vague(norm):
            lead["need"] = text.strip()
        if asked is None and lead == f.lead and all(k in lead for k, _ in QUALIFY):
            return self.say(f"{SORRY} {ASK_FOLLOWUP}", ask="followup_book", task="lead")
        f.lead = lead
        for key, question in QUALIFY:
            if key not in lead:
                return self.say(question, ask=key, task="lead")
        return self.call("save_lead", {k: lead.get(k) for k, _ in QUALIFY}, task="lead", lead=lead)

    def transfer(self, norm: str, text: str) -> Reply:
        targets = self.facts.targets
        target = next((t for t in targets if t.replace("_", " ") in norm), None)
        target = target or next((t for t, d in targets.items() if d and d.lower() in norm), None)
        target = target or next((t for t in targets if t == self.flow), None) or next(iter(targets), "front_desk")
        who = self.frame.name or "The caller"
        about = {
            "book": "booking an appointment",
            "reschedule": "moving an appointment",
            "cancel": "cancelling an appointment",
            "question": "a question",
            "message": "leaving a message",
            "lead": "buying",
        }.get(self.frame.topic or "", "")
        lead = self.frame.lead
        if lead:
            facts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in lead.items())
            summary = f"{who} is a sales lead ({facts})."
        else:
            topic = (self.frame.topic_text or "").strip().rstrip(".!?")
            said = f' They said: "{topic}."' if topic else ""
            summary = f"{who} is calling about {about}.{said}" if about else f"{who} asked to speak to a person.{said}"
        return self.call(
            "request_transfer", {"target": target, "reason": "caller asked for a person", "summary": summary}, task=None
        )

    # --- after tools --------------------------------------------------------------------
    def after_tools(self, results: list[ToolResult]) -> Reply:
        f = self.frame
        names = [r.name for r in results]
        text, offers_message = speakable(" ".join(r.content for r in results))
        if "end_call" in names:
            reason = next((r.args.get("reason") for r in results if r.name == "end_call"), None)
            if reason == NOT_INTERESTED:
                return self.say(NOT_INTERESTED_BYE, task=None)
            if f.task == "keep":
                return self.say(KEEP_BYE, task=None)
            if f.task == "later":
                return self.say(LATER_BYE, task=None)
            bye = GOODBYE_OUT if self.facts.outbound else GOODBYE.format(company=self.facts.company)
            return self.say(bye, task=None)
        for r in results:
            if r.name == "request_transfer":
                target = getattr(r.artifact, "target", None)
                if target:
                    desc = self.facts.targets.get(target) or target.replace("_", " ")
                    return self.say(f"Of course. I'm connecting you to the {desc} now. Please hold.", task=None)
                return self.say(text or SORRY, ask="message_or_callback" if offers_message else None, task=None)
        if "save_lead" in names:
            hot = is_hot(f.lead)
            return self.say(
                f"Thank you, I've noted all of that. {ASK_HOT if hot else ASK_FOLLOWUP}",
                ask="hot" if hot else "followup_book",
                task="lead",
            )
        last = results[-1] if results else None
        if last and last.name in ("find_free_slots", "book_appointment", "reschedule_appointment"):
            done = last.name != "find_free_slots" and last.content.startswith(DONE_PREFIXES)
            if not done:
                offered = times_in(last.content, f.day, self.now)
                if offered:
                    question = "" if text.endswith("?") else f" {ASK_CHOICE}"
                    return self.say(text + question, ask="choice", offered=offered, start=None)
                return self.say(f"{text} {ASK_WHEN}".strip(), ask="when", start=None)
        if offers_message:
            return self.say(f"{text} Would you like to leave a message?".strip(), ask="message_or_callback", task=None)
        if text.endswith("?"):
            return self.say(text)
        return self.say(f"{text} {ASK_ELSE}".strip(), ask="anything_else", task=None, start=None, day=None, offered=[])


def _when_of(iso: str) -> When:
    d = dt.datetime.fromisoformat(iso)
    return When(date=d.date(), time=d.time())


def frame_metadata(frame: Frame | None) -> dict[str, Any]:
    return {FRAME_KEY: json.loads(json.dumps(asdict(frame)))} if frame is not None else {}
