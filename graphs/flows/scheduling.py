"""Scheduling: find free times, book, move and cancel appointments, confirm them in words."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from dialgraph.graphs.flows.base import FlowSpec, build_flow_graph

SPEC = FlowSpec(
    name="scheduling",
    tool_names=(
        "find_free_slots",
        "book_appointment",
        "reschedule_appointment",
        "cancel_appointment",
        "list_my_appointments",
        "lookup_caller",
        "save_caller_name",
        "take_message",
        "request_transfer",
        "end_call",
    ),
    prompt="""You answer the phone for {company} and look after appointments: you find free times,
book, move and cancel appointments, and tell callers when their appointments are.
Ask for the day and time they want; offer free times when theirs is taken; ask for their name
before booking if you don't know it. Anything else: take a message or transfer to the front desk.""",
    greeting="Thank you for calling {company}. I can book, move or cancel an appointment for you. How can I help?",
)


def build_scheduling_graph(
    *,
    model: BaseChatModel,
    tools: Mapping[str, BaseTool] | Sequence[BaseTool],
    checkpointer: BaseCheckpointSaver[Any] | None,
    clock: Callable[[], dt.datetime] | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The scheduling flow's compiled graph (``context_schema=CallContext``)."""
    return build_flow_graph(SPEC, model=model, tools=tools, checkpointer=checkpointer, clock=clock)
