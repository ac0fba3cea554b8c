"""What the offline model reads in the tools' results (pure): the results after its last
tool-calling reply, which of them did what was asked, the notes to the agent to leave
unsaid, and the times a result offers, in English or Hinglish words."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from dialgraph.graphs.spoken_time import MONTH_NAMES, normalise, parse_date, parse_time
from dialgraph.tools.booking import OUTCOME_PREFIXES


@dataclass(frozen=True, slots=True)
class ToolResult:
    """One tool's result, with the arguments it was called with."""

    name: str
    content: str
    args: dict[str, Any]
    artifact: Any = None


def tool_results(messages: list[BaseMessage]) -> list[ToolResult]:
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


# How a calendar result that did what was asked begins (``tools.booking``), in any language.
DONE_PREFIXES = ("Booked", "Done", "You already have", *(p for ps in OUTCOME_PREFIXES.values() for p in ps))
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


_MONTHS = "|".join(MONTH_NAMES)
_DAY_WORDS = re.compile(
    r"\b(today|tomorrow|monday|tuesday|wednesday|thursday|friday|saturday|sunday|\d+(st|nd|rd|th)|\d+/\d+"
    r"|aaj|kal|parson|parso|somvar|somwar|mangalvar|mangalwar|budhvar|budhwar|guruvar|guruwar|brihaspativar"
    r"|veervar|shukravar|shukrawar|shanivar|shaniwar|ravivar|raviwar|itvaar|itwar|itvar"
    rf"|\d{{1,2}} ({_MONTHS}))\b"
)


def names_day(norm: str) -> bool:
    """True when normalised text names a day, in English or Hinglish."""
    return _DAY_WORDS.search(norm) is not None


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


def times_in(text: str, day: str | None, now: dt.datetime) -> list[str]:
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
        if names_day(before) and (named := parse_date(before, now)) is not None:
            date = named
        time, _, _ = parse_time(m.group(0))
        if date is None or time is None:
            continue
        iso = f"{date.isoformat()}T{time.strftime('%H:%M')}"
        if iso not in out:
            out.append(iso)
    return out
