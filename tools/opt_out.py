"""The person on the line does not want our calls: ``opt_out``.

It puts the number of the other party (``CallContext.caller``: the caller on an inbound
call, the person we called on an outbound one; never a number from the model's arguments)
on the business's opt-out list (``tools.do_not_call``) and ends the call: its ``Command``
sets ``pending_end`` with reason ``opted_out``. The flow then says a fixed confirmation
(``graphs.flows.base.OPT_OUT_CONFIRM``, no model call) and the session hangs up. The flow's
opt-out digit (``FlowSettings.opt_out_digit``) reaches the same tool: the keypad node asks
for it as a tool call of its own.
"""

from __future__ import annotations

from typing import Any

import structlog
from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from langgraph.types import Command

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.turns import EndCallRequest
from dialgraph.tools.do_not_call import add_opt_out
from dialgraph.tools.runtime import answer, caller_number, clean, speak_errors
from dialgraph.tools.state import OPTED_OUT

log = structlog.get_logger(__name__)

KEYPAD_REASON = "pressed the opt-out key"
DONE = (
    "Done: this number is off our call list for good. The call ends after your next reply: confirm it and say goodbye."
)
HIDDEN = (
    "Your number is hidden, so there's no number to take off our list, and we can't call it. "
    "Apologise for any trouble and call end_call."
)
FAILED = (
    "Sorry, I couldn't update our call list just now because of a system problem. "
    "Tell them we'll make sure they're not called again, and offer to take a message."
)


def opt_out_tools(*, db: Database) -> list[BaseTool]:
    """opt_out."""

    @tool(parse_docstring=True)
    async def opt_out(reason: str, runtime: ToolRuntime[CallContext]) -> Command[Any] | str:
        """Take this person's number off our call list for good and end the call. Use it when they say they don't want calls from us ("stop calling me", "don't call again", "remove me from your list", "mujhe call mat karo").

        Args:
            reason: what they said, in a few words.
        """
        ctx = runtime.context
        phone = caller_number(ctx)
        if phone is None:
            log.info("opt_out_without_number", call_sid=ctx.call_sid, flow=ctx.flow)
            return HIDDEN
        why = clean(reason, 128) or "caller asked"
        rule = "opt_out.keypad" if why == KEYPAD_REASON else "opt_out.spoken"

        async def run() -> bool:
            await add_opt_out(db, phone, reason=why, call_sid=ctx.call_sid, audit_rule=rule)
            return True

        if not await speak_errors("opt_out", ctx, run, False):
            return FAILED
        log.info("opted_out", call_sid=ctx.call_sid, flow=ctx.flow, direction=ctx.direction, rule=rule)
        return answer(runtime, DONE, {"pending_end": {"reason": OPTED_OUT}}, artifact=EndCallRequest(OPTED_OUT))

    return [opt_out]


__all__ = ["KEYPAD_REASON", "opt_out_tools"]
