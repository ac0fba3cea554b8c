"""The tool contract the graphs rely on: names, model-visible arguments, spoken errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import structlog

from dialgraph.server.core.db import Database
from dialgraph.tools import TOOL_NAMES, build_tools
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
}


async def test_names_and_model_visible_arguments(db: Database) -> None:
    tools = build_tools(db=db)
    assert set(tools) == set(TOOL_NAMES) == set(EXPECTED_ARGS)
    for name, tool in tools.items():
        schema = tool.tool_call_schema.model_json_schema()  # type: ignore[union-attr]
        assert set(schema.get("properties", {})) == EXPECTED_ARGS[name], name
        assert tool.description and "runtime" not in str(schema)
        assert all(prop.get("description") for prop in schema.get("properties", {}).values()), name
        assert getattr(tool, "coroutine", None) is not None  # async: never blocks the event loop
    assert tools["request_transfer"].response_format == "content_and_artifact"
    assert tools["end_call"].response_format == "content_and_artifact"


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
