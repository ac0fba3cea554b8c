"""Requests the call session carries out: transfer to a configured human, end the call.

Targets come only from the flow's ``transfer_targets``: the model names one ("billing",
"the front desk"), never a number. A request names the target's config key; the session
looks up the number to ``<Dial>``. Both tools answer with a ``Command`` that puts the
request into the call's state (``pending_transfer`` / ``pending_end``); their
``ToolMessage`` carries the request as its artifact, for the record.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from langgraph.types import Command

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.flow_config import TransferTarget
from dialgraph.server.core.turns import EndCallRequest, TransferRequest
from dialgraph.tools.runtime import answer, style_of
from dialgraph.tools.speech_format import spoken_list
from dialgraph.tools.state import TransferState

log = structlog.get_logger(__name__)

# Words that say "a human" without saying which one.
_GENERIC_TEXT = """a an the to my me with for of please someone somebody anyone person people human real live agent
    representative operator staff team department dept desk transfer connect speak talk"""
_GENERIC = frozenset(_GENERIC_TEXT.split())
_WORD = re.compile(r"[a-z]+")


def _words(text: str) -> set[str]:
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _WORD.findall(text.lower())}


def looks_like_number(text: str) -> bool:
    return bool(re.search(r"\d{3,}|\d[\s().-]+\d|^\s*\+|sip:|tel:", text, re.I))


def resolve_target(requested: str, targets: dict[str, TransferTarget]) -> str | None:
    """The key of the configured target meant by ``requested``, or None (unknown,
    ambiguous, or a phone number)."""
    if not targets or looks_like_number(requested):
        return None
    wanted = requested.strip().lower()
    by_key = {key.lower(): key for key in targets}
    if (exact := re.sub(r"[\s-]+", "_", wanted)) in by_key:
        return by_key[exact]
    asked = _words(wanted) - _GENERIC
    if not asked:  # "a person": fine when there is only one human to hand to
        return next(iter(targets)) if len(targets) == 1 else None
    scores = {key: len(asked & (_words(key.replace("_", " ")) | _words(t.description))) for key, t in targets.items()}
    best = max(scores.values())
    winners = [k for k, v in scores.items() if v == best]
    return winners[0] if best > 0 and len(winners) == 1 else None


def target_names(targets: dict[str, TransferTarget], style: str = "en") -> str:
    names = [t.description or key.replace("_", " ") for key, t in targets.items()]
    return spoken_list(names, conjunction="or", style=style)


def handoff_tools() -> list[BaseTool]:
    """request_transfer, end_call."""

    @tool(parse_docstring=True)
    async def request_transfer(
        target: str, reason: str, summary: str, runtime: ToolRuntime[CallContext]
    ) -> Command[Any] | str:
        """Transfer the caller to a person or team from this line's list (by name, such as "billing"; never a phone number).

        Args:
            target: the name of the team or person to transfer to.
            reason: why the caller needs a human, in a few words.
            summary: one or two sentences for the human, who hears it before the caller is connected.
        """
        ctx = runtime.context
        style = style_of(runtime)
        targets = ctx.flow_settings.transfer_targets
        key = resolve_target(target, targets)
        if key is None:
            log.info("transfer_refused", call_sid=ctx.call_sid, flow=ctx.flow, number_like=looks_like_number(target))
            if style == "hi-en":
                if not targets:
                    return "Is line par transfer nahi ho sakta. Offer to take a message instead."
                return f"Wahan transfer nahi ho sakta. Hum {target_names(targets, style)} ko transfer kar sakte hain."
            if not targets:
                return "Transfers aren't available on this line. Offer to take a message instead."
            return f"I can't transfer to that. I can transfer to {target_names(targets)}."
        name = targets[key].description or key.replace("_", " ")
        log.info("transfer_requested", call_sid=ctx.call_sid, flow=ctx.flow, target=key)
        transfer = TransferState(target=key, reason=reason.strip()[:300], summary=summary.strip()[:500])
        arranged = (
            f"{name[:1].upper()}{name[1:]} ko transfer arrange ho gaya."
            if style == "hi-en"
            else f"Transfer to the {name} arranged."
        )
        return answer(
            runtime,
            f"{arranged} Tell the caller you're connecting them now.",
            {"pending_transfer": transfer, "last_transfer": transfer},
            artifact=TransferRequest(**transfer),
        )

    @tool(parse_docstring=True)
    async def end_call(runtime: ToolRuntime[CallContext], reason: str = "completed") -> Command[Any] | str:
        """End the call after your next sentence. Use when the caller is done or says goodbye.

        Args:
            reason: why the call ends, e.g. completed, caller_request, wrong_number.
        """
        log.info("end_call_requested", call_sid=runtime.context.call_sid, reason=reason)
        request = EndCallRequest(reason=reason[:64] or "completed")
        return answer(
            runtime,
            "The call will end after your next reply. Say a short goodbye.",
            {"pending_end": {"reason": request.reason}},
            artifact=request,
        )

    return [request_transfer, end_call]
