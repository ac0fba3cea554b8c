"""The opt_out tool through a real ToolNode: the number comes from the call's context (never
the model's arguments), the call state gets the end request, failures are spoken."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import structlog
from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from sqlalchemy import select

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import OutboundAudit
from dialgraph.server.core.turns import EndCallRequest
from dialgraph.tools import build_tools
from dialgraph.tools.do_not_call import lookup
from dialgraph.tools.opt_out import DONE, FAILED, HIDDEN, KEYPAD_REASON
from dialgraph.tools.state import ToolState
from tests.fakes.tool_graph import FixedClock, call_context


class RoundState(ToolState, total=False):
    messages: Annotated[list[AnyMessage], add_messages]


async def opt_out(db: Database, ctx: CallContext, **args: Any) -> tuple[ToolMessage, dict[str, Any]]:
    tools = build_tools(db=db, clock=FixedClock(dt.datetime(2026, 11, 23, tzinfo=dt.UTC)))
    graph = StateGraph(RoundState, context_schema=CallContext)
    graph.add_node("tools", ToolNode([tools["opt_out"]], handle_tool_errors=True))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    request = AIMessage("", tool_calls=[{"name": "opt_out", "args": args, "id": "call_1"}])
    state = await graph.compile().ainvoke({"messages": [request]}, context=ctx)
    [answer] = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    return answer, state


async def test_opt_out_lists_the_calls_number_not_the_models(db: Database) -> None:
    ctx = call_context("+15550100101", call_sid="CAopt")
    answer, state = await opt_out(db, ctx, reason="said stop calling me")
    assert answer.content == DONE and answer.artifact == EndCallRequest("opted_out")
    assert state["pending_end"] == {"reason": "opted_out"}
    [entry] = await lookup(db, "+15550100101")
    assert (entry.source, entry.reason, entry.call_sid) == ("opt_out", "said stop calling me", "CAopt")
    async with db.sessionmaker() as s:
        [audit] = (await s.scalars(select(OutboundAudit))).all()
    assert (audit.decision, audit.reason, audit.rule, audit.to_number) == (
        "opted_out",
        "caller_request",
        "opt_out.spoken",
        "+15550100101",
    )

    keyed, _ = await opt_out(db, call_context("+15550100102"), reason=KEYPAD_REASON)
    assert keyed.content == DONE
    async with db.sessionmaker() as s:
        rules = (await s.scalars(select(OutboundAudit.rule).order_by(OutboundAudit.id))).all()
    assert rules == ["opt_out.spoken", "opt_out.keypad"]


async def test_a_hidden_number_has_nothing_to_list(db: Database) -> None:
    answer, state = await opt_out(db, call_context("anonymous"), reason="stop")
    assert answer.content == HIDDEN and "pending_end" not in state


async def test_a_database_failure_is_spoken_and_does_not_end_the_call(tmp_path: Path) -> None:
    unmigrated = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        ctx = call_context("+15550100101")
        with structlog.testing.capture_logs() as logs:
            answer, state = await opt_out(unmigrated, ctx, reason="stop")
        assert answer.content == FAILED and "pending_end" not in state
        assert [(e["event"], e.get("tool")) for e in logs] == [("tool_failed", "opt_out")]
        assert all("+15550100101" not in str(e) for e in logs)
    finally:
        await unmigrated.aclose()
