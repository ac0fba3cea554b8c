"""Messages for humans land in the messages table with the caller's number."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Message
from dialgraph.tools import build_tools
from tests.fakes.tool_graph import FixedClock, ToolGraph, call_context

ALICE = "+15550104567"


@pytest.fixture
def graph(db: Database) -> ToolGraph:
    return ToolGraph(build_tools(db=db, clock=FixedClock(dt.datetime(2026, 11, 23, tzinfo=dt.UTC))).values())


async def messages(db: Database) -> list[Message]:
    async with db.sessionmaker() as s:
        return list(await s.scalars(select(Message).order_by(Message.created_at)))


async def test_message_row_is_written_with_the_callers_number(db: Database, graph: ToolGraph) -> None:
    ctx = call_context(ALICE)
    text = await graph.text(
        ctx, "take_message", message="Please call me about my invoice", for_whom="billing", caller_name="Alice"
    )
    assert text == "Message taken for billing. They'll call back on the number ending in 4 5 6 7."
    [row] = await messages(db)
    assert (row.from_number, row.callback_number, row.for_whom, row.caller_name) == (ALICE, ALICE, "billing", "Alice")
    assert row.body == "Please call me about my invoice" and row.call_sid == ctx.call_sid and row.status == "new"


async def test_other_callback_number_and_hidden_caller(db: Database, graph: ToolGraph) -> None:
    text = await graph.text(call_context(ALICE), "take_message", message="x", callback_number="+44 20 7946 0958")
    assert text.endswith("ending in 0 9 5 8.")
    refused = await graph.text(call_context(ALICE), "take_message", message="x", callback_number="12")
    assert refused.startswith("That callback number doesn't look complete")
    hidden = await graph.text(call_context("anonymous"), "take_message", message="call me")
    assert hidden.startswith("Message taken. The caller's number is hidden")
    assert [(m.from_number, m.callback_number) for m in await messages(db)] == [
        (ALICE, "+442079460958"),
        ("anonymous", None),
    ]
    assert (await graph.text(call_context(ALICE), "take_message", message="  ")).startswith("The message is empty")
    assert len(await messages(db)) == 2
