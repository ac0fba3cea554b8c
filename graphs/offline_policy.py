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
followed. Its fixed sentences have Hinglish versions (Roman script, ``HINGLISH``); the
tools already answer in the same language.
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
from dialgraph.graphs.spoken_time import When, normalise, parse_date, parse_time, parse_when
from dialgraph.graphs.state import DIALOG_ACT, OFFER
from dialgraph.server.core.language import Spoken
from dialgraph.tools.booking import OUTCOME_PREFIXES
from dialgraph.tools.speech_format import turn_language
from dialgraph.tools.state import NOT_INTERESTED

FRAME_KEY = "offline_frame"

ASK_WHEN = "What day and time would suit you?"
ASK_WHEN_MOVE = "Sure. What day and time would you like to move it to?"
ASK_NAME = "Can I have your name for the booking, please?"
ASK_MESSAGE = "Of course. What message would you like me to pass on?"
ASK_ELSE = "Is there anything else I can help you with?"
ASK_WHAT_ELSE = "Of course. What else can I do for you?"
ASK_CHOICE = "Which time would suit you?"
ASK_NEED = "Happy to help. What are you looking for, and what would you use it for?"
ASK_TIMELINE = "Thanks. When are you hoping to get started?"
ASK_BUDGET = "And do you have a budget in mind?"
ASK_DECISION = "Are you the person who makes the decision, or is someone else involved?"
ASK_HOT = "Would you like me to connect you with our sales team right now, or book a follow-up call?"
ASK_FOLLOWUP = "Would you like to book a follow-up call with our team?"
SORRY = "Sorry, I didn't quite catch that."
ASK_QUESTION = "Of course. What would you like to know?"
# Said (fixed words, no model) once a call's spend cap is reached; the offline model answers
# what the caller says next (``ask == "message_or_transfer"``).
BUDGET_OFFER = (
    "I'm sorry, I can't go further with that on this call. I can take a message for the team, "
    "or transfer you to someone who can help. Which would you prefer?"
)
BUDGET_OFFER_ACT = "budget_offer"
GOODBYE = "Thank you for calling {company}. Goodbye!"
GOODBYE_OUT = "Thank you for your time. Goodbye!"
NOT_INTERESTED_BYE = "No problem at all. Thank you for your time, and have a good day. Goodbye!"
KEEP_BYE = "Great, your appointment stays as it is. We'll see you then. Goodbye!"
ASK_MOVE_OR_CANCEL = "No problem. Would you like to move it to another time, or cancel it?"
ASK_NEED_OUT = "Great, thank you. To start, what are you looking for, and what would you use it for?"
ASK_LATER = "No problem. Would you like to book a better time for a follow-up call?"
LATER_BYE = "No problem, we'll try you another time. Thank you, goodbye!"
HELP = {
    "scheduling": "I can book, move or cancel an appointment, or take a message. What would you like to do?",
    "support": "You can ask me a question about our services, or I can take a message. What would you like to do?",
    "sales": ASK_NEED,
}
QUALIFY = (("need", ASK_NEED), ("timeline", ASK_TIMELINE), ("budget", ASK_BUDGET), ("decision_maker", ASK_DECISION))

# Every fixed sentence above in Hinglish (Roman script), sentence by sentence, as a
# receptionist in India says it; "hum" (we) keeps the agent's words free of grammatical gender.
HINGLISH: dict[str, str] = {
    "What day and time would suit you?": "Aap kis din aur kitne baje aana chahenge?",
    "Sure.": "Zaroor.",
    "What day and time would you like to move it to?": "Aap ise kis din aur kitne baje par shift karna chahenge?",
    "Can I have your name for the booking, please?": "Booking ke liye aapka naam bata dijiye?",
    "Of course.": "Zaroor.",
    "What message would you like me to pass on?": "Aap kya message dena chahenge?",
    "Is there anything else I can help you with?": "Aur kuch madad chahiye aapko?",
    "What else can I do for you?": "Bataiye, aur kya kar sakte hain aapke liye?",
    "Which time would suit you?": "Aapko kaunsa time theek rahega?",
    "Happy to help.": "Zaroor, bataiye.",
    "What are you looking for, and what would you use it for?": "Aapko kya chahiye, aur kis kaam ke liye?",
    "Thanks.": "Thank you.",
    "When are you hoping to get started?": "Aap kab tak shuru karna chahte hain?",
    "And do you have a budget in mind?": "Aur aapka budget kitna hai?",
    "Are you the person who makes the decision, or is someone else involved?": (
        "Decision aap khud lenge, ya koi aur bhi involved hai?"
    ),
    "Would you like me to connect you with our sales team right now, or book a follow-up call?": (
        "Kya main aapko abhi hamari sales team se connect kar doon, ya follow-up call book kar doon?"
    ),
    "Would you like to book a follow-up call with our team?": "Kya hamari team ke saath follow-up call book kar doon?",
    "Sorry, I didn't quite catch that.": "Maaf kijiye, mujhe theek se samajh nahi aaya.",
    "I'm sorry, I can't go further with that on this call.": "Maaf kijiye, is call par isse aage madad nahi ho payegi.",
    "I can take a message for the team, or transfer you to someone who can help.": (
        "Team ke liye message le sakte hain, ya aapko kisi aise vyakti se connect kar sakte hain jo madad kar sake."
    ),
    "Which would you prefer?": "Aap kya chahenge?",
    "Goodbye!": "Namaste!",
    "Thank you for your time.": "Aapke time ke liye dhanyavaad.",
    "No problem at all.": "Koi baat nahi.",
    "Thank you for your time, and have a good day.": "Aapke time ke liye dhanyavaad, aapka din achha rahe.",
    "Great, your appointment stays as it is.": "Theek hai, aapka appointment waise hi rahega.",
    "We'll see you then.": "Tab milte hain.",
    "No problem.": "Koi baat nahi.",
    "Would you like to move it to another time, or cancel it?": (
        "Aap ise kisi aur time par shift karna chahenge, ya cancel karna hai?"
    ),
    "Great, thank you.": "Bahut achha, thank you.",
    "To start, what are you looking for, and what would you use it for?": (
        "Pehle bataiye, aapko kya chahiye, aur kis kaam ke liye?"
    ),
    "Would you like to book a better time for a follow-up call?": (
        "Kya follow-up call ke liye koi behtar time book kar doon?"
    ),
    "No problem, we'll try you another time.": "Koi baat nahi, hum phir kabhi call karenge.",
    "Thank you, goodbye!": "Dhanyavaad, namaste!",
    "I can book, move or cancel an appointment, or take a message.": (
        "Appointment book karna ho, shift karna ho ya cancel, ya koi message dena ho, sab ho jayega."
    ),
    "You can ask me a question about our services, or I can take a message.": (
        "Aap hamari services ke baare mein kuch bhi pooch sakte hain, ya message chhod sakte hain."
    ),
    "What would you like to do?": "Bataiye, kya karna hai?",
    "Thank you, I've noted all of that.": "Thank you, maine sab note kar liya hai.",
    "Would you like to leave a message?": "Kya aap message chhodna chahenge?",
    "Do you have a minute?": "Kya aapke paas ek minute hai?",
    "Please hold.": "Kripya line par bane rahiye.",
    "What would you like to know?": "Bataiye, kya jaanna chahenge?",
}
_HINGLISH_FORMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^Thank you for calling (.+)\.$"), r"\1 ko call karne ke liye dhanyavaad."),
    (re.compile(r"^Thanks, (.+)\.$"), r"Thank you, \1 ji."),
    (re.compile(r"^I'm connecting you to the (.+) now\.$"), r"Aapko abhi \1 se connect kar rahe hain."),
    (re.compile(r"^I'm calling from (.+) about (.+)\.$"), r"Hum \1 se call kar rahe hain, \2 ke baare mein."),
)
_SENTENCE = re.compile(r"(?<=[.?!])\s+")


def in_language(text: str, language: Spoken) -> str:
    """``text`` (the policy's English) in ``language``: each fixed sentence replaced by its
    Hinglish version (Hindi replies use the same Roman-script words); anything else (a
    tool's words, already in the reply's language) is kept as it is."""
    if language == "en" or not text:
        return text
    out: list[str] = []
    for sentence in _SENTENCE.split(text):
        said = HINGLISH.get(sentence)
        if said is None:
            for pattern, template in _HINGLISH_FORMS:
                if pattern.match(sentence):
                    said = pattern.sub(template, sentence)
                    break
        out.append(said if said is not None else sentence)
    return " ".join(out)


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
        reply = policy.after_tools(_tool_results(messages))
    else:
        human = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
        reply = Reply(HELP[policy.flow], frame=frame) if human is None else policy.on_caller(str(human.content))
    return replace(reply, text=in_language(reply.text, language)) if language != "en" else reply


@dataclass(frozen=True, slots=True)
class ToolResult:
    name: str
    content: str
    args: dict[str, Any]
    artifact: Any = None


def _tool_results(messages: list[BaseMessage]) -> list[ToolResult]:
    """The tool results after the last tool-calling reply, in call order."""
    results: list[ToolMessage] = []
    for m in reversed(messages):
        if isinstance(m, ToolMessage):
            results.append(m)
        elif isinstance(m, AIMessage):
            calls = {c["id"]: c for c in m.tool_calls}
            out = []
            for r in reversed(results):
                call = calls.get(r.tool_call_id)
                name = r.name or (call["name"] if call else "")
                out.append(ToolResult(name, str(r.content), dict(call["args"]) if call else {}, r.artifact))
            return out
    return []


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
            if _TRANSFER_WORDS.search(norm):
                return self.transfer(norm, text)
            if intent in (None, "yes", "message", "question"):
                return self.say(ASK_MESSAGE, ask="message", task="message")
            if intent == "no":
                return self.say(f"No problem. {ASK_ELSE}", ask="anything_else", task=None)
        if self.flow == "support" and f.ask != "message" and _WANTS_TO_ASK.search(norm) and len(norm.split()) <= 8:
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
            intent in ("yes", "question") or (intent is None and _HEAR.search(norm) is not None)
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
        if intent == "book" and self.flow == "sales" and f.task in (None, "lead") and _PRODUCT.search(norm):
            intent = None  # "appointment booking software": what they want to buy, not a booking
        if self.flow == "sales" and f.task in (None, "lead") and intent not in ("book", "reschedule"):
            return self.qualify(text, norm)
        if intent == "reschedule" and f.task == "book" and not _NAMES_BOOKED.search(norm):
            intent = "book"  # "can we make it 4 instead" while booking: "it" is the time being booked
        if intent is None and f.task is None and _INSTEAD.search(norm) and "reschedule_appointment" in self.tools:
            intent = "reschedule"  # "4 pm instead", just after a booking or a move
        if intent == "reschedule" or (f.task == "reschedule" and intent in (None, "yes", "no", "question")):
            return self.reschedule(text, norm)
        if intent == "book" or f.task == "book" or f.ask in ("when", "choice", "name"):
            return self.book(text, norm)
        if intent in (None, "question", "yes") and "book_appointment" in self.tools and parse_when(text, self.now):
            return self.book(text, norm)
        if f.ask == "name" and f.name:
            return self.say(f"Thanks, {f.name}. " + HELP[self.flow])
        if _HELLO.match(norm):  # "Namaste", "Hello?": nothing asked yet
            return self.say(HELP[self.flow], task=None)
        return self.say(SORRY + " " + HELP[self.flow], task=None)

    def on_minute(self, norm: str, intent: str | None) -> Reply | None:
        """The answer to our outbound greeting's "do you have a minute?"; None: handle the
        words as any other turn (they went straight to what they want)."""
        if _LATER.search(norm) or _NOT_NOW.search(norm):
            if self.flow == "sales" and "book_appointment" in self.tools:
                return self.say(ASK_LATER, ask="followup_book", task="lead")
            return self.call("end_call", {"reason": "call_later"}, task="later")
        if intent in ("bye", "no") or (intent is None and is_no(norm)):
            return self.call("end_call", {"reason": NOT_INTERESTED}, task=None)
        if intent == "yes":
            if self.flow == "sales":
                return self.say(ASK_NEED_OUT, ask="need", task="lead")
            return self.say(f"Great, thank you. {HELP[self.flow]}", task=None)
        if _WHO_WHAT.search(norm):
            about = self.facts.purpose or "a quick follow-up"
            return self.say(f"I'm calling from {self.facts.company} about {about}. Do you have a minute?", ask="minute")
        return None

    def on_reminder(self, norm: str, intent: str | None) -> Reply | None:
        """The answer to "would you like to keep it, move it, or cancel it?"; None: moving,
        cancelling and anything else take their usual paths (the tools find the
        appointment by the number we called)."""
        if intent in ("reschedule", "cancel", "human", "message", "list", "bye"):
            return None
        if _CANT.search(norm) or (intent == "no" and not _KEEP.search(norm)):
            return self.say(ASK_MOVE_OR_CANCEL, ask="reminder")
        if _KEEP.search(norm) or intent == "yes":
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
        if when is not None and f.day and when.time and not _names_day(norm):
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
        if when.approximate or (when.time is None and _ASKS_OPTIONS.search(norm)):  # "anything on Thursday?"
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
            if decides is None and _OTHERS_DECIDE.search(norm):
                decides = "no"
            elif decides is None and _I_DECIDE.search(norm):
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
            if is_no(norm) or _NOT_NOW.search(norm):
                return self.say(f"No problem. {ASK_FOLLOWUP}", ask="followup_book", task="lead")
            if is_yes(norm) or re.search(r"\b(connect|now)\b", norm):
                return self.transfer(norm, text)
        elif "need" not in lead and len(norm.split()) > 2 and not _vague(norm):
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
            hot = _is_hot(f.lead)
            return self.say(
                f"Thank you, I've noted all of that. {ASK_HOT if hot else ASK_FOLLOWUP}",
                ask="hot" if hot else "followup_book",
                task="lead",
            )
        last = results[-1] if results else None
        if last and last.name in ("find_free_slots", "book_appointment", "reschedule_appointment"):
            done = last.name != "find_free_slots" and last.content.startswith(_DONE_PREFIXES)
            if not done:
                offered = _times_in(last.content, f.day, self.now)
                if offered:
                    question = "" if text.endswith("?") else f" {ASK_CHOICE}"
                    return self.say(text + question, ask="choice", offered=offered, start=None)
                return self.say(f"{text} {ASK_WHEN}".strip(), ask="when", start=None)
        if offers_message:
            return self.say(f"{text} Would you like to leave a message?".strip(), ask="message_or_callback", task=None)
        if text.endswith("?"):
            return self.say(text)
        return self.say(f"{text} {ASK_ELSE}".strip(), ask="anything_else", task=None, start=None, day=None, offered=[])


_DONE_PREFIXES = ("Booked", "Done", "You already have", *(p for ps in OUTCOME_PREFIXES.values() for p in ps))
_INSTRUCTION = re.compile(r"^(Tell|Offer|Ask|Say|Pass|Use|Confirm|Read|Let) ")


def speakable(content: str) -> tuple[str, bool]:
    """A tool result with its notes to the agent ("Ask the caller...", "Offer to take a
    message...") taken out; the flag says whether a note suggested taking a message."""
    kept: list[str] = []
    offers_message = False
    for sentence in re.split(r"(?<=[.?!])\s+", content.strip()):
        if _INSTRUCTION.match(sentence):
            offers_message = offers_message or "message" in sentence
            continue
        if sentence:
            kept.append(sentence)
    return " ".join(kept), offers_message


def _when_of(iso: str) -> When:
    d = dt.datetime.fromisoformat(iso)
    return When(date=d.date(), time=d.time())


_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
_DAY_WORDS = re.compile(
    r"\b(today|tomorrow|monday|tuesday|wednesday|thursday|friday|saturday|sunday|\d+(st|nd|rd|th)|\d+/\d+"
    r"|aaj|kal|parson|parso|somvar|somwar|mangalvar|mangalwar|budhvar|budhwar|guruvar|guruwar|brihaspativar"
    r"|veervar|shukravar|shukrawar|shanivar|shaniwar|ravivar|raviwar|itvaar|itwar|itvar"
    rf"|\d{{1,2}} ({_MONTHS}))\b"
)


def _names_day(norm: str) -> bool:
    return _DAY_WORDS.search(norm) is not None


_NAMES_BOOKED = re.compile(r"\b(my|the|our|that|mera|meri|apna|apni) (appointment|booking|visit)\b")
_INSTEAD = re.compile(r"\b(instead|ki jagah|ke jagah|ke bajaye|ki bajaye)\b")
_NOT_NOW = re.compile(r"\bnot (right )?now\b|\babhi nahi(n)?\b")
_LATER = re.compile(
    r"\b(i'm busy|i am busy|busy right now|bad time|not a good time|call (me )?(back )?later|another time|in a meeting"
    r"|driving|busy (hoon|hu|hun)|baad mein (call|baat|phone)|abhi time nahi|meeting mein|drive kar raha)\b"
)
_WHO_WHAT = re.compile(
    r"\b(who (is|'s) (this|it|calling|speaking)|who are you|what (is|'s) (this|it|that) (about|regarding|for)"
    r"|what is this|why (are you|did you|do you) call|what do you want|which company|where are you calling from"
    r"|kaun bol (raha|rahi|rahe)|aap kaun|kis (baare|liye|cheez)|kahan se (bol|call)|kyun call)\b"
)
_KEEP = re.compile(
    r"\b(keep (it|that|the appointment|my appointment)|i'll be there|i will be there|i'll come|i will come"
    r"|that's fine|that is fine|still (good|fine|on|works)|works for me|confirm(ed)?|see you then"
    r"|rehne do|rakh do|rakhiye|aa (jaunga|jaungi|jayenge|jaenge)|aaunga|aaungi|wahi (rakho|theek)|same rakho|pakka)\b"
)
_CANT = re.compile(
    r"\b(can't|cannot|can not|won't be able to) (make|come|do)\b"
    r"|\bnahi(n)? aa (paunga|paungi|paenge|payenge|sakta|sakti|sakte|sakunga|sakungi)\b"
)
_ASKS_OPTIONS = re.compile(
    r"\b(what|which|any|anything|available|free|open|options?|koi|kuch|khali|kaunsa|konsa|kya kya)\b"
)
_HEAR = re.compile(r"\b(hear|read|tell|remind|what|when|batao|bataiye|bata do|bata dijiye|kab|kitne baje)\b")
_SPOKEN_TIME = re.compile(r"\b\d{1,2}(?::\d{2})?\s?(?:am|pm)\b|\b12:00\b")
# a time as the Hinglish tool results say it ("subah 9:30 baje", "dopahar 12 baje", "raat 12 baje")
_HINDI_TIME = re.compile(r"\b(subah|dopahar|shaam|raat) (\d{1,2})(?::([0-5]\d))? baje\b", re.I)


def _hindi_clock(m: re.Match[str]) -> str:
    part, hour, minute = m.group(1).lower(), int(m.group(2)), m.group(3) or "00"
    pm = (part == "dopahar" and hour != 12 and hour < 12) or part == "shaam" or (part == "raat" and 6 <= hour < 12)
    if part == "dopahar" and hour == 12:
        return f"12:{minute} pm"
    if part == "raat" and hour == 12:
        return f"12:{minute} am"
    return f"{hour}:{minute} {'pm' if pm else 'am'}"


def _times_in(text: str, day: str | None, now: dt.datetime) -> list[str]:
    """ISO datetimes a tool result offers ("Friday the 27th of November at 9 in the
    morning or 9:30 in the morning, or Monday ..."; "Friday, 27 November ko subah 9 baje ya
    subah 9:30 baje"): each time takes the day named since the previous time, else the day
    before it, else ``day``."""
    norm = normalise(_HINDI_TIME.sub(_hindi_clock, text))
    out: list[str] = []
    date = dt.date.fromisoformat(day) if day else None
    cursor = 0
    for m in _SPOKEN_TIME.finditer(norm):
        before = norm[cursor : m.start()]
        cursor = m.end()
        if _names_day(before) and (named := parse_date(before, now)) is not None:
            date = named
        time, _, _ = parse_time(m.group(0))
        if date is None or time is None:
            continue
        iso = f"{date.isoformat()}T{time.strftime('%H:%M')}"
        if iso not in out:
            out.append(iso)
    return out


def _is_hot(lead: dict[str, str]) -> bool:
    timeline = normalise(lead.get("timeline", ""))
    soon = bool(
        re.search(
            r"\b(asap|soon|now|immediately|this (week|month)|next (week|month)|right away|days?|weeks?"
            r"|jaldi|abhi|turant|is (hafte|mahine)|agle (hafte|mahine)|din|dino|hafte|hafton)\b",
            timeline,
        )
    )
    decides = lead.get("decision_maker") == "yes"
    budget = normalise(lead.get("budget", ""))
    has_budget = bool(budget) and not is_no(budget) and not re.search(r"\b(nahi|nahin|pata nahi|no budget)\b", budget)
    return soon and decides and has_budget


_WANTS_TO_ASK = re.compile(
    r"\b(i have a (question|query|doubt)|i want to ask|can i ask|i wanted to ask|i had a (question|query|doubt)"
    r"|kuch (poochna|puchna|janna|jaanna)|ek (sawaal|sawal|query|doubt)|(poochna|puchna) (hai|tha|chahta|chahti))\b"
)
# what a sales caller wants to buy, even when its name has "appointment" or "booking" in it
_PRODUCT = re.compile(
    r"\b(software|system|app|application|tool|platform|solution|crm|erp|website|portal|engine|module|saas)\b"
)
_VAGUE = re.compile(r"\b(information|info|details|jaankari|jankari|know more|enquiry|inquiry|brochure)\b")
_HELLO = re.compile(
    r"^(hi|hello|hey|hallo|namaste|namaskar|namaskaram|vanakkam|good (morning|afternoon|evening)|haan ji|ji|hello ji)"
    r"( (there|ji|sir|madam|ma'am))?[ .!?]*$"
)
_YOURS = re.compile(
    r"\b(your|aapke|aapka|aapki|aap ke|aap ka|aap ki) (\w+ )?(software|products?|services?|solutions?)\b"
)


def _vague(norm: str) -> bool:
    """ "I want some information about your software": interest, but no need said yet."""
    return _VAGUE.search(norm) is not None and _PRODUCT.search(_YOURS.sub(" ", norm)) is None


_I_DECIDE = re.compile(r"\b(i am|i'm|i do|i decide|myself|me only|main hi|mai hi|main khud|mai khud|khud|hum hi)\b")
_OTHERS_DECIDE = re.compile(
    r"\b(boss|partner|manager|director|owner|committee|board|management|someone else|somebody else|koi aur"
    r"|papa|father|husband|wife|malik)\b"
)
_TRANSFER_WORDS = re.compile(
    r"\b(transfer|connect|put me through|someone|somebody|person|human|agent|insaan|aadmi|kisi se|baat (karao|karwao|karwa do|kara do))\b"
)


def frame_metadata(frame: Frame | None) -> dict[str, Any]:
    return {FRAME_KEY: json.loads(json.dumps(asdict(frame)))} if frame is not None else {}
