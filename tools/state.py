"""The part of a call's graph state that tools change.

A tool that changes more than the conversation returns ``Command(update=...)``: its
``ToolMessage`` plus keys of ``ToolState``, which the flow's tool node applies to the call's
state (``graphs.state.CallState`` extends ``ToolState``). Several tools may answer in one
step, so every key has a reducer: two names in one round keep the later one, two sets of
sales answers are merged.
"""

from __future__ import annotations

from typing import Annotated, TypedDict, TypeVar

T = TypeVar("T")


class TransferState(TypedDict):
    """A transfer decided on (``server.core.turns.TransferRequest`` as data)."""

    target: str
    reason: str
    summary: str


# End reasons with a meaning of their own (the call's outcome says them): the person asked
# not to be called again (``tools.opt_out``), or said no to an outbound call.
OPTED_OUT = "opted_out"
NOT_INTERESTED = "not_interested"


class EndState(TypedDict):
    """An end of call decided on (``server.core.turns.EndCallRequest`` as data): ``reason``
    is ``completed``, ``opted_out``, ``not_interested``, or what the model said."""

    reason: str


def latest(old: T | None, new: T | None) -> T | None:
    """Reducer: the newest write wins (several writes in one step allowed)."""
    return new


def merged(old: dict[str, str] | None, new: dict[str, str] | None) -> dict[str, str]:
    """Reducer: answers merged into what was gathered before."""
    return {**(old or {}), **(new or {})}


class ToolState(TypedDict, total=False):
    """What tools may write besides their ``ToolMessage``."""

    caller_name: Annotated[str | None, latest]  # the name the caller gave (the model may see it)
    lead: Annotated[dict[str, str] | None, merged]  # sales answers: need, timeline, budget, decision_maker
    # side effects the session carries out after the reply has played
    pending_transfer: Annotated[TransferState | None, latest]
    pending_end: Annotated[EndState | None, latest]
    last_transfer: Annotated[TransferState | None, latest]  # kept for "nobody is free" after a failed dial
