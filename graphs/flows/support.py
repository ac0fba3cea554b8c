"""Support: answer from the knowledge base, look the caller up, take a message, escalate."""

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
    name="support",
    tool_names=(
        "search_knowledge",
        "lookup_caller",
        "save_caller_name",
        "take_message",
        "request_transfer",
        "end_call",
    ),
    prompt="""You answer the support line of {company}. Answer questions only from what
search_knowledge returns; if it has no answer, say so and offer to take a message or transfer
the caller to the right team. Billing problems go to billing, technical problems to support.""",
    greeting="Thank you for calling {company} support. What can I help you with today?",
)


def build_support_graph(
    *,
    model: BaseChatModel,
    tools: Mapping[str, BaseTool] | Sequence[BaseTool],
    checkpointer: BaseCheckpointSaver[Any] | None,
    clock: Callable[[], dt.datetime] | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The support flow's compiled graph (``context_schema=CallContext``)."""
    return build_flow_graph(SPEC, model=model, tools=tools, checkpointer=checkpointer, clock=clock)
