"""What every tool shares: who is calling (from the run context), errors turned into words,
and answers that change the call's state.

Identity comes only from ``CallContext.caller`` (Twilio's From), never from the model's
arguments. A withheld caller ID owns nothing: Twilio sends it as an alpha string
("anonymous") or, on older paths, as the keypad spelling of one ("+266696687").
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolRuntime
from langgraph.types import Command
from pydantic import BaseModel

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.language import Spoken
from dialgraph.tools.speech_format import speech_style, turn_language
from dialgraph.tools.state import ToolState

log = structlog.get_logger(__name__)

T = TypeVar("T")
Clock = Callable[[], dt.datetime]

_EMPTY = frozenset({"", "none", "null", "n/a", "na", "-"})
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# Keypad spellings of ANONYMOUS, RESTRICTED, BLOCKED, UNKNOWN, UNAVAILABLE, PRIVATE.
_WITHHELD = frozenset({"+266696687", "+7378742833", "+2562533", "+8656696", "+86282452253", "+7748283"})

# A tool's metadata key: True when it may run before the caller's turn is confirmed (a
# preemptive reply on an interim transcript, ``graphs.runner.PreemptiveReply``): it only reads,
# or only changes the graph's state (which a discarded run drops). Unmarked tools wait.
EARLY_TOOL = "dialgraph_early"

NO_CALLER_ID = (
    "I can't do that on this call because the caller's number is hidden. "
    "Ask them to call back from a number that shows, or offer to take a message."
)


def utc_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def now_utc(clock: Clock) -> dt.datetime:
    """The clock's reading as an aware UTC datetime (a naive reading is taken as UTC)."""
    now = clock()
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


def caller_number(ctx: CallContext) -> str | None:
    """The caller's E.164 number, or None when it is withheld or not a phone number."""
    number = (ctx.caller or "").strip()
    if not _E164.match(number) or number in _WITHHELD:
        return None
    return number


async def speak_errors(tool: str, ctx: CallContext, action: Callable[[], Awaitable[T]], fallback: T) -> T:
    """Run ``action``; on any error log it (with the call id) and return ``fallback``, words
    the agent can say instead of a stack trace."""
    try:
        return await action()
    except Exception:
        log.exception("tool_failed", tool=tool, call_sid=ctx.call_sid, flow=ctx.flow)
        return fallback


def clean(value: str | None, limit: int = 256) -> str | None:
    """Trimmed text, or None for empty/placeholder values a model may send."""
    if value is None:
        return None
    text = re.sub(r"\s+", " ", str(value)).strip()
    return None if text.lower() in _EMPTY else text[:limit]


def given(value: str | None) -> str | None:
    """A value the model passed, trimmed; None when it passed nothing but blanks."""
    return value.strip() if isinstance(value, str) and value.strip() else None


def answer(
    runtime: ToolRuntime[CallContext], content: str, update: ToolState, *, artifact: object = None
) -> Command[Any] | str:
    """The tool's words for the model and what they change in the call's state: a
    ``Command`` whose ``ToolMessage`` answers this tool call (and carries ``artifact``);
    the bare words when nothing changes."""
    changes = {k: v for k, v in update.items() if v is not None}
    if not changes and artifact is None:
        return content
    message = ToolMessage(content, tool_call_id=runtime.tool_call_id or "", artifact=artifact)
    return Command(update={"messages": [message], **changes})


def caller_turns(runtime: ToolRuntime[CallContext]) -> list[str]:
    """The caller's turns so far (oldest first), from the run's state."""
    state = getattr(runtime, "state", None)
    messages = state.get("messages", []) if isinstance(state, dict) else getattr(state, "messages", [])
    return [str(m.content) for m in messages or [] if isinstance(m, HumanMessage)]


def reply_language_of(runtime: ToolRuntime[CallContext]) -> Spoken:
    """The language the agent answers in now: the flow's language, following the caller's
    latest turns (``speech_format.turn_language``)."""
    return turn_language(runtime.context.flow_settings.language, caller_turns(runtime))


def style_of(runtime: ToolRuntime[CallContext]) -> str:
    """How this call's tool results say dates, times and lists (``speech_format.speech_style``)."""
    return speech_style(runtime.context.flow_settings.language, reply_language_of(runtime))


def hidden_number(style: str) -> str:
    """``NO_CALLER_ID`` in the reply's language (the note to the agent stays English)."""
    if style != "hi-en":
        return NO_CALLER_ID
    return (
        "Aapka number hidden hai, isliye is call par yeh nahi ho sakta. "
        "Ask them to call back from a number that shows, or offer to take a message."
    )


def sorry(what: str) -> str:
    return f"Sorry, I couldn't {what} just now because of a system problem. Offer to take a message instead."


def model_args_schema(tool: BaseTool) -> BaseTool:
    """Validate a tool call against the arguments the model gives, not the injected runtime.

    LangChain validates tool input with the tool's full argument schema and then
    ``model_dump``s the result (langchain-ai/langchain#34770), which walks the injected
    ``ToolRuntime``: the whole call state, every message, on every tool call. The
    model-facing schema (``tool_call_schema``) holds the same arguments the model sees;
    the runtime is still injected (LangChain re-adds it from the function's signature).
    A tool the model calls without arguments keeps its schema: LangChain calls a tool whose
    schema has no fields with no arguments at all, the runtime included.
    """
    if not tool._injected_args_keys or tool.args_schema is None or isinstance(tool.args_schema, dict):
        return tool
    model_schema = tool.tool_call_schema
    if isinstance(model_schema, type) and issubclass(model_schema, BaseModel) and model_schema.model_fields:
        tool.args_schema = model_schema
    return tool
