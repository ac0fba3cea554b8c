"""Messages the agent takes for a human: who it is for, who called, how to call back, what about."""

from __future__ import annotations

import re
from typing import Any

from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from langgraph.types import Command

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Message
from dialgraph.server.core.redaction import Redactor, default_redactor
from dialgraph.tools.runtime import answer, caller_number, clean, given, sorry, speak_errors, style_of
from dialgraph.tools.speech_format import spoken_digits

MAX_BODY = 2000
# How a result that took the message begins, per language (the offline model and the
# post-call analysis read it).
TAKEN_PREFIXES = ("Message taken", "Message le liya")


def normalise_number(text: str | None) -> str | None:
    """A callback number as said or typed ("(555) 010-0199", "+44 20 7946 0958") -> digits
    with a leading + when one was given; None when it is not plausibly a phone number."""
    if not text:
        return None
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15:
        return None
    return f"+{digits}" if text.strip().startswith("+") else digits


async def save_message(
    db: Database,
    *,
    from_number: str,
    body: str,
    call_sid: str | None = None,
    for_whom: str | None = None,
    caller_name: str | None = None,
    callback_number: str | None = None,
    redactor: Redactor | None = None,
) -> Message:
    """Write one row into the messages table, its body redacted (the caller's name and the
    callback number are what the message is for: they stay)."""
    row = Message(
        call_sid=call_sid,
        from_number=from_number[:32],
        body=(redactor or default_redactor()).redact(body[:MAX_BODY]),
        for_whom=for_whom and for_whom[:64],
        caller_name=caller_name and caller_name[:128],
        callback_number=callback_number,
    )
    async with db.sessionmaker() as s, s.begin():
        s.add(row)
    return row


def message_tools(*, db: Database, redactor: Redactor | None = None) -> list[BaseTool]:
    """take_message (its body redacted by ``redactor``, every category by default)."""

    async def take(
        ctx: CallContext,
        message: str,
        for_whom: str | None,
        caller_name: str | None,
        callback_number: str | None,
        style: str = "en",
    ) -> str:
        body = clean(message, MAX_BODY)
        if not body:
            return "The message is empty. Ask the caller what they'd like to say."
        callback = normalise_number(callback_number)
        if callback_number and callback is None:
            return "That callback number doesn't look complete. Ask the caller to repeat it."
        callback = callback or caller_number(ctx)
        recipient = clean(for_whom, 64)

        async def run() -> str:
            await save_message(
                db,
                from_number=ctx.caller or "unknown",
                body=body,
                call_sid=ctx.call_sid,
                for_whom=recipient,
                caller_name=clean(caller_name, 128),
                callback_number=callback,
                redactor=redactor,
            )
            if style == "hi-en":
                to = f", {recipient} ke liye" if recipient else ""
                if callback is None:
                    return (
                        f"Message le liya hai{to}. Aapka number hidden hai, so ask for a callback number if they "
                        "want a call back."
                    )
                return f"Message le liya hai{to}. Woh aapko {spoken_digits(callback)} par khatam hone wale number par call back karenge."
            to = f" for {recipient}" if recipient else ""
            if callback is None:
                return f"Message taken{to}. The caller's number is hidden, so ask for a callback number if they want a call back."
            return f"Message taken{to}. They'll call back on the number ending in {spoken_digits(callback)}."

        return await speak_errors("take_message", ctx, run, sorry("save the message"))

    @tool(parse_docstring=True)
    async def take_message(
        message: str,
        runtime: ToolRuntime[CallContext],
        for_whom: str | None = None,
        caller_name: str | None = None,
        callback_number: str | None = None,
    ) -> Command[Any] | str:
        """Take a message for a person or team; they will call the caller back.

        Args:
            message: what the message is about, in the caller's words.
            for_whom: who it is for (a person or a team such as billing), if the caller said.
            caller_name: the caller's name, if they gave it.
            callback_number: a number to call back on, only if the caller gives a different one.
        """
        words = await take(runtime.context, message, for_whom, caller_name, callback_number, style_of(runtime))
        return answer(runtime, words, {"caller_name": given(caller_name)})

    return [take_message]
