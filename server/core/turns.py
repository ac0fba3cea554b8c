"""What flows between a call session and the conversation graph.

The session gives caller input to a ``TurnRunner`` and gets a stream of ``RunnerEvent``s
back. It never looks inside the graph; the graph never touches audio or Twilio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dialgraph.server.core.context import CallContext


# --- caller input --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallerText:
    """A final transcript of the caller's turn."""

    text: str


@dataclass(frozen=True, slots=True)
class CallerDigits:
    """DTMF keys the caller pressed (one or more)."""

    digits: str


@dataclass(frozen=True, slots=True)
class CallSignal:
    """Something that happened to the call, not said by the caller: ``transfer_failed``
    (detail: busy | no-answer | failed | canceled), ``reconnected`` (stream resumed)."""

    kind: str
    detail: str = ""


CallerInput = CallerText | CallerDigits | CallSignal


# --- runner output -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TextChunk:
    """A piece of the agent's reply, in order, as the model streams it."""

    text: str


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """Hand the caller to the configured target ``target`` (a name, never a number) after
    the current reply has played; ``summary`` is whispered to the human first."""

    target: str
    reason: str
    summary: str


@dataclass(frozen=True, slots=True)
class EndCallRequest:
    """Hang up after the current reply has played."""

    reason: str = "completed"


RunnerEvent = TextChunk | TransferRequest | EndCallRequest


@runtime_checkable
class TurnRunner(Protocol):
    """Drives one flow's graph for one call thread (``ctx.thread_id``)."""

    def start(self, ctx: CallContext) -> AsyncIterator[RunnerEvent]:
        """Open the call: the greeting on a new thread (no model call), or a short
        reconnection line and the continuation of an interrupted turn on an existing one."""

    def respond(self, ctx: CallContext, turn: CallerInput) -> AsyncIterator[RunnerEvent]:
        """Run one turn. Cancelling the iterating task cancels the graph run."""

    async def record_heard(self, ctx: CallContext, heard_text: str) -> None:
        """After a barge-in: make the thread's last agent reply exactly ``heard_text``
        (what the caller heard), marked as interrupted, whether or not the run finished."""
