"""Run tools the way a flow does: through a real LangGraph ``ToolNode`` with a ``CallContext``.

``ToolGraph.call`` sends one model tool call into a tiny graph and returns the
``ToolMessage``, so tests prove the runtime-context injection path, not just the functions.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.flow_config import FlowSettings

_ids = itertools.count(1)


def call_context(caller: str, flow: FlowSettings | None = None, *, call_sid: str | None = None) -> CallContext:
    sid = call_sid or f"CA{next(_ids):032d}"
    return CallContext(
        call_sid=sid,
        thread_id=sid,
        caller=caller,
        called="+15550009999",
        flow="scheduling",
        flow_settings=flow or FlowSettings(),
    )


class FixedClock:
    """A settable clock returning aware UTC datetimes."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class ToolGraph:
    """START -> ToolNode(tools) -> END, with CallContext as the context schema."""

    def __init__(self, tools: Iterable[BaseTool]) -> None:
        graph = StateGraph(MessagesState, context_schema=CallContext)
        graph.add_node("tools", ToolNode(list(tools)))
        graph.add_edge(START, "tools")
        graph.add_edge("tools", END)
        self.app = graph.compile()

    async def call(self, ctx: CallContext, tool: str, /, **args: Any) -> ToolMessage:
        call_id = f"call_{next(_ids)}"
        request = AIMessage(content="", tool_calls=[{"name": tool, "args": args, "id": call_id}])
        out = await self.app.ainvoke({"messages": [request]}, context=ctx)
        replies = [m for m in out["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == call_id]
        assert len(replies) == 1, out["messages"]
        return replies[0]

    async def text(self, ctx: CallContext, tool: str, /, **args: Any) -> str:
        reply = await self.call(ctx, tool, **args)
        assert isinstance(reply.content, str)
        return reply.content
