"""The state of one call's conversation, as checkpointed after every step, and the keys
the graph's parts put on messages.

Everything here is plain data (strings, dicts, LangChain messages) so it round-trips
through any checkpoint serializer. Per-call facts the model must not see (the caller's
number, the call sid, the flow's settings) are not here: they travel in the run's
context (``server.core.context.CallContext``).
"""

from __future__ import annotations

from typing import Annotated, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

from dialgraph.tools.state import ToolState

# additional_kwargs of a reply the caller cut off (``GraphRunner.record_heard``): it was
# interrupted, and the part they never heard (said again after a reconnection)
INTERRUPTED = "interrupted"
UNSAID = "unsaid"
# response_metadata of the fixed lines: what the line asked the caller, and on the
# welcome-back line what it offers ("appointment")
DIALOG_ACT = "dialog_act"
OFFER = "offer"


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


class CallState(ToolState, total=False):
    """One call thread. ``messages`` uses ``add_messages``: same id replaces. The keys
    tools write (the caller's name, sales answers, transfer and end requests) come from
    ``ToolState``."""

    messages: Annotated[list[AnyMessage], add_messages]
    # set by the runner on every run; read by the entry router, cleared by the nodes
    signal: Signal | None
    keypad: str | None  # digits pressed this turn (DTMF)
    # what the caller wants (labelled by keywords on each caller turn)
    intent: str | None
    # set once, on the first run of a call whose caller we recognise
    callback: CallbackState | None
    # counters
    caller_turns: int
    agent_turns: int
