"""The tool contract the graphs rely on: names, model-visible arguments, spoken errors, and
the call state tools change (through ``Command``s a ``ToolNode`` applies)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import structlog
from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings, TransferTarget
from dialgraph.server.core.turns import EndCallRequest, TransferRequest
from dialgraph.tools import build_tools
from dialgraph.tools.state import ToolState
from tests.fakes.tool_graph import FixedClock, ToolGraph, call_context

EXPECTED_ARGS = {
    "find_free_slots": {"when", "count"},
    "book_appointment": {"start", "name", "purpose"},
    "reschedule_appointment": {"new_start", "appointment_id"},
    "cancel_appointment": {"appointment_id"},
    "list_my_appointments": set(),
    "lookup_caller": set(),
    "save_caller_name": {"name"},
    "save_lead": {"need", "timeline", "budget", "decision_maker"},
    "search_knowledge": {"question"},
    "take_message": {"message", "for_whom", "caller_name", "callback_number"},
    "request_transfer": {"target", "reason", "summary"},
    "end_call": {"reason"},
    "opt_out": {"reason"},
}


async def test_names_and_model_visible_arguments(db: Database) -> None:
    tools = build_tools(db=db)
    assert set(tools) == set(EXPECTED_ARGS)
    for name, tool in tools.items():
        schema = tool.tool_call_schema.model_json_schema()  # type: ignore[union-attr]
        assert set(schema.get("properties", {})) == EXPECTED_ARGS[name], name
        assert tool.description and "runtime" not in str(schema)
        assert all(prop.get("description") for prop in schema.get("properties", {}).values()), name
        assert getattr(tool, "coroutine", None) is not None  # async: never blocks the event loop


async def test_database_failure_is_spoken_and_logged(tmp_path: Path) -> None:
    unmigrated = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        graph = ToolGraph(
            build_tools(db=unmigrated, clock=FixedClock(dt.datetime(2026, 11, 23, tzinfo=dt.UTC))).values()
        )
        ctx = call_context("+15550100101")
        with structlog.testing.capture_logs() as logs:
            booked = await graph.text(ctx, "book_appointment", start="2026-11-24T10:00")
            listed = await graph.text(ctx, "list_my_appointments")
        assert (
            booked
            == "Sorry, I couldn't book that just now because of a system problem. Offer to take a message instead."
        )
        assert listed.startswith("Sorry, I couldn't look up your appointments just now")
        assert [(e["event"], e["tool"], e["call_sid"]) for e in logs] == [
            ("tool_failed", "book_appointment", ctx.call_sid),
            ("tool_failed", "list_my_appointments", ctx.call_sid),
        ]
    finally:
        await unmigrated.aclose()


class RoundState(ToolState, total=False):
    """What a flow's state holds of a tool round: the messages and the tools' writes."""

    messages: Annotated[list[AnyMessage], add_messages]


async def tool_round(
    tools: Iterable[BaseTool], ctx: CallContext, *calls: tuple[str, dict[str, Any]], **state: Any
) -> Any:
    """One model reply calling ``calls`` at once, through a ``ToolNode``; the state after."""
    graph = StateGraph(RoundState, context_schema=CallContext)
    graph.add_node("tools", ToolNode(list(tools), handle_tool_errors=True))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    request = AIMessage("", tool_calls=[{"name": n, "args": a, "id": f"call_{i}"} for i, (n, a) in enumerate(calls)])
    return await graph.compile().ainvoke({"messages": [request], **state}, context=ctx)


async def test_tools_change_the_call_state_through_commands(db: Database) -> None:
    tools = build_tools(db=db, clock=FixedClock(dt.datetime(2026, 11, 23, tzinfo=dt.UTC)))
    flow = FlowSettings(transfer_targets={"billing": TransferTarget(number="+15550100002", description="billing team")})
    ctx = call_context("+15550100101", flow)
    state = await tool_round(
        tools.values(),
        ctx,
        ("save_caller_name", {"name": "Ana"}),
        ("take_message", {"message": "Please call me back", "caller_name": "Ana Lopez "}),
        ("save_lead", {"timeline": "next month", "budget": "  "}),
        ("request_transfer", {"target": "billing", "reason": "a bill", "summary": "Ana has a bill question."}),
        ("end_call", {"reason": "caller_request"}),
        lead={"need": "a website"},
    )
    answers = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [(m.tool_call_id, m.name) for m in answers] == [
        (f"call_{i}", n)
        for i, n in enumerate(("save_caller_name", "take_message", "save_lead", "request_transfer", "end_call"))
    ]
    assert state["caller_name"] == "Ana Lopez"  # two names in one round: the later one
    assert state["lead"] == {"need": "a website", "timeline": "next month"}  # merged, blanks left out
    transfer = {"target": "billing", "reason": "a bill", "summary": "Ana has a bill question."}
    assert state["pending_transfer"] == state["last_transfer"] == transfer
    assert answers[3].artifact == TransferRequest(**transfer)
    assert state["pending_end"] == {"reason": "caller_request"}
    assert answers[4].artifact == EndCallRequest(reason="caller_request")


async def test_tools_that_change_nothing_leave_the_state_alone(db: Database) -> None:
    tools = build_tools(db=db, clock=FixedClock(dt.datetime(2026, 11, 23, tzinfo=dt.UTC)))
    state = await tool_round(
        tools.values(),
        call_context("+15550100101"),
        ("request_transfer", {"target": "+15550100002", "reason": "r", "summary": "s"}),  # refused: no targets
        ("save_caller_name", {"name": "  "}),
        ("lookup_caller", {}),
    )
    assert not {"pending_transfer", "last_transfer", "pending_end", "caller_name", "lead"} & set(state)
    assert "Transfers aren't available" in state["messages"][1].content
