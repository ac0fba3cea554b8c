"""Caller lookup, names and sales leads on SQLite and PostgreSQL, through a ToolNode graph."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from dialgraph.server.core.call_store import record_call, update_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.models import Contact
from dialgraph.tools import build_tools
from tests.fakes.tool_graph import FixedClock, ToolGraph, call_context

ALICE, BOB = "+15550100101", "+15550100202"
LONDON = FlowSettings(timezone="Europe/London")
NOW = dt.datetime(2026, 11, 23, 13, 0, tzinfo=dt.UTC)


@pytest.fixture
def graph(db: Database) -> ToolGraph:
    return ToolGraph(build_tools(db=db, clock=FixedClock(NOW)).values())


async def contact(db: Database, phone: str) -> Contact | None:
    async with db.sessionmaker() as s:
        return await s.scalar(select(Contact).where(Contact.phone == phone))


async def test_new_caller_then_named_caller_with_calls_and_appointment(db: Database, graph: ToolGraph) -> None:
    ctx = call_context(ALICE, LONDON)
    await record_call(
        db, sid=ctx.call_sid, direction="inbound", from_number=ALICE, to_number="+1", flow="x", thread_id="t"
    )
    assert (
        await graph.text(ctx, "lookup_caller") == "No name on file for this caller. No earlier calls from this number."
    )

    assert await graph.text(ctx, "save_caller_name", name="  Alice   Smith ") == "Saved the name Alice Smith."
    assert await graph.text(ctx, "save_caller_name", name="Alicia Smith") == "Saved the name Alicia Smith."
    row = await contact(db, ALICE)
    assert row is not None and row.name == "Alicia Smith"

    old = await record_call(
        db, sid="CAold", direction="inbound", from_number=ALICE, to_number="+1", flow="x", thread_id="o"
    )
    await update_call(
        db, old.sid, started_at=dt.datetime(2026, 11, 20, 15, 30, tzinfo=dt.UTC), transfer_target="billing"
    )
    await record_call(db, sid="CAbob", direction="inbound", from_number=BOB, to_number="+1", flow="x", thread_id="b")
    booked = await graph.text(ctx, "book_appointment", start="2026-11-24T09:00")
    assert booked == "Booked under the name Alicia Smith: Tuesday the 24th of November at 9 in the morning."

    assert await graph.text(call_context(ALICE, LONDON, call_sid=ctx.call_sid), "lookup_caller") == (
        "The caller is Alicia Smith. They have called once before, most recently on "
        "Friday the 20th of November at 3:30 in the afternoon (transferred to billing). "
        "Next appointment: Tuesday the 24th of November at 9 in the morning."
    )


async def test_name_must_look_like_a_name(db: Database, graph: ToolGraph) -> None:
    for bad in ("", "   ", "none", "555 0101"):
        assert (await graph.text(call_context(ALICE), "save_caller_name", name=bad)).startswith("I didn't catch a name")
    assert await contact(db, ALICE) is None
    hidden = await graph.text(call_context("anonymous"), "save_caller_name", name="Zed")
    assert "number is hidden" in hidden


async def test_lead_is_merged_into_notes_and_reports_what_is_missing(db: Database, graph: ToolGraph) -> None:
    async with db.sessionmaker() as s, s.begin():
        s.add(Contact(phone=BOB, name="Bob", notes="Prefers mornings"))
    ctx = call_context(BOB)
    first = await graph.text(ctx, "save_lead", need="10 phone lines", budget="none")
    assert first == "Saved. Still missing: timeline, budget and who decides."
    second = await graph.text(ctx, "save_lead", timeline="next quarter", budget="$2,000 a month", decision_maker="Bob")
    assert second == "Saved. All four are known: need, timeline, budget and who decides."
    row = await contact(db, BOB)
    assert row is not None
    assert json.loads(row.notes or "") == {
        "text": "Prefers mornings",
        "lead": {
            "need": "10 phone lines",
            "timeline": "next quarter",
            "budget": "$2,000 a month",
            "decision_maker": "Bob",
        },
    }
    looked_up = await graph.text(ctx, "lookup_caller")
    assert looked_up.startswith(
        "The caller is Bob. Notes: Prefers mornings. Sales notes: what they need: 10 phone lines;"
    )


async def test_new_lead_creates_the_contact(db: Database, graph: ToolGraph) -> None:
    text = await graph.text(call_context(ALICE), "save_lead", need="a website")
    assert text == "Saved. Still missing: timeline, budget and who decides."
    row = await contact(db, ALICE)
    assert row is not None and row.name is None and json.loads(row.notes or "")["lead"] == {"need": "a website"}
