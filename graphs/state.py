"""The state of one call's conversation, as checkpointed after every step.

Everything here is plain data (strings, dicts, LangChain messages) so it round-trips
through any checkpoint serializer. Per-call facts the model must not see (the caller's
number, the call sid, the flow's settings) are not here: they travel in the run's
context (``graphs.context.CallContext``).
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


class TransferState(TypedDict):
    """A transfer the graph decided on (``graphs.events.TransferRequest`` as data)."""

    target: str
    reason: str
    summary: str


class EndState(TypedDict):
    """An end of call the graph decided on (``graphs.events.EndCallRequest`` as data)."""

    reason: str


class Signal(TypedDict):
    """Something that happened to the call, fed in by the runner: ``start``,
    ``reconnected``, ``transfer_failed`` (detail = Twilio's DialCallStatus)."""

    kind: str
    detail: str


class CallbackState(TypedDict):
    """A caller ringing back, as the runner recalled them before the greeting
    (``graphs.recall``): name, next appointment in words, what was left open."""

    name: str | None
    appointment: str | None  # e.g. "Tuesday the 5th of May at 2:30 in the afternoon"
    topic: str | None  # e.g. "booking an appointment" (the previous call was left open)
    previous_thread_id: str | None


class CallState(TypedDict, total=False):
    """One call thread. ``messages`` uses ``add_messages``: same id replaces."""

    messages: Annotated[list[AnyMessage], add_messages]
    # set by the runner on every run; read by the entry router, cleared by the nodes
    signal: Signal | None
    keypad: str | None  # digits pressed this turn (DTMF)
    # what the caller wants and what has been gathered for it
    intent: str | None
    slots: dict[str, Any]
    # caller facts the model may see (never the phone number)
    caller_name: str | None
    # side effects the session carries out after the reply has played
    pending_transfer: TransferState | None
    pending_end: EndState | None
    last_transfer: TransferState | None  # kept for "nobody is free" after a failed dial
    # set once, on the first run of a call whose caller we recognise
    callback: CallbackState | None
    # counters
    caller_turns: int
    agent_turns: int
    # sales qualification
    lead: dict[str, str | None]
