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
    """A final transcript of the caller's turn. ``offline``: answer it without spending on
    a hosted model (a spend cap was reached: the flow runs on the free offline model)."""

    text: str
    offline: bool = False


@dataclass(frozen=True, slots=True)
class CallerDigits:
    """DTMF keys the caller pressed (one or more); ``offline`` as for ``CallerText``."""

    digits: str
    offline: bool = False


@dataclass(frozen=True, slots=True)
class CallSignal:
    """Something that happened to the call, not said by the caller: ``transfer_failed``
    (detail: busy | no-answer | failed | canceled), ``reconnected`` (stream resumed),
    ``budget_spent`` (a daily spend cap was reached, detail: the rule; answered with a fixed
    offer to take a message or transfer, no model call)."""

    kind: str
    detail: str = ""


BUDGET_SPENT = "budget_spent"  # ``CallSignal.kind`` once a spend cap is reached mid-call

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


@dataclass(frozen=True, slots=True)
class TurnUsage:
    """What a run spent on the model: tokens by model name (usage metadata, streamed usage
    included), reported once at the end of a run that used a model. Consumers that only
    speak may ignore it; the call session adds it to the call's cost."""

    model: str
    input_tokens: int
    output_tokens: int


RunnerEvent = TextChunk | TransferRequest | EndCallRequest | TurnUsage


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


class PreemptiveRun(Protocol):
    """A reply started on a caller turn not confirmed yet (``graphs.runner.PreemptiveReply``):
    iterate it for its events; ``confirm()`` or ``discard()`` it once the turn's words are
    known. ``wasted``: what a discarded run spent on the model."""

    wasted: list[TurnUsage]

    def confirm(self) -> None: ...

    def discard(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[RunnerEvent]: ...


@runtime_checkable
class PreemptingRunner(Protocol):
    """A ``TurnRunner`` that can start a reply before the caller's turn is confirmed."""

    def preempt(self, ctx: CallContext, turn: CallerText) -> PreemptiveRun: ...
