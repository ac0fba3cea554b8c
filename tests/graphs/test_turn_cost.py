"""What keeps a turn's CPU down must not change what is stored, said or routed: messages
encoded once per object yet stored as LangGraph's own bytes, tools validated on the
model's arguments only (the runtime still injected), the agent routing itself, SQLite
checkpoint calls made in one statement each (a task's writes still stored whole)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from dialgraph.graphs.checkpoint import OneTripSqliteSaver
from dialgraph.graphs.checkpoint_serde import MessageMemoSerializer
from dialgraph.graphs.runner import GraphRunner
from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from dialgraph.tools import build_tools
from dialgraph.tools.booking import calendar_tools
from dialgraph.tools.contacts import contact_tools
from dialgraph.tools.handoff import handoff_tools
from dialgraph.tools.knowledge import knowledge_tools
from dialgraph.tools.messages import message_tools
from dialgraph.tools.opt_out import opt_out_tools
from dialgraph.tools.runtime import utc_clock
from tests.fakes.graph_calls import Call


async def test_checkpoints_are_stored_as_langgraphs_own_bytes(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    runner = runners["support"]
    call = Call.open(runner, flow_settings, "support", thread_id="memo-1")
    await call.start()
    await call.say("Is there parking?")
    await call.say("Where are you located?")
    saver = runner.graph.checkpointer
    assert saver is not None and not isinstance(saver, bool)
    assert isinstance(saver.serde, MessageMemoSerializer)
    stored = await saver.aget_tuple({"configurable": {"thread_id": "memo-1", "checkpoint_ns": ""}})
    assert (
        stored is not None and len(stored.checkpoint["channel_values"]["messages"]) == 9
    )  # greeting, then caller, tool call, result, answer twice

    plain, memo = JsonPlusSerializer(), MessageMemoSerializer()
    expected = plain.dumps_typed(stored.checkpoint)
    assert memo.dumps_typed(stored.checkpoint) == expected  # encoded
    assert memo.dumps_typed(stored.checkpoint) == expected  # the kept encodings
    read = memo.loads_typed(expected)
    assert read == plain.loads_typed(expected)
    assert memo.dumps_typed(read) == expected  # kept as read
    assert plain.dumps_typed(read) == expected


def test_a_message_changed_after_encoding_is_encoded_again() -> None:
    plain, memo = JsonPlusSerializer(), MessageMemoSerializer()
    result = ToolMessage("We're at 120 Harbour Street.", tool_call_id="call_1")  # no id yet
    reply = AIMessage("Hello", id="ai-1", response_metadata={"finish_reason": "stop"})
    assert memo.dumps_typed([result, reply]) == plain.dumps_typed([result, reply])
    result.id = "tool-1"  # what add_messages does to a message written without an id
    reply.content = "Hello there"
    reply.response_metadata = {"finish_reason": "length"}
    assert memo.dumps_typed([result, reply]) == plain.dumps_typed([result, reply])
    reply.spoken = True  # an extra field
    again = memo.dumps_typed({"messages": [result, reply]})
    assert again == plain.dumps_typed({"messages": [result, reply]})
    assert memo.loads_typed(again)["messages"][0].id == "tool-1"


def test_kept_encodings_go_with_their_messages() -> None:
    memo = MessageMemoSerializer()
    messages: list[Any] = [HumanMessage(f"turn {i}", id=f"caller-{i}") for i in range(50)]
    memo.loads_typed(memo.dumps_typed(messages))
    assert memo._memo
    del messages
    gc.collect()
    assert not memo._memo


async def test_tools_validate_the_models_arguments_and_still_get_the_runtime(db: Database) -> None:
    built = build_tools(db=db)
    raw = {
        t.name: t
        for t in [
            *calendar_tools(db=db, clock=utc_clock),
            *contact_tools(db=db, clock=utc_clock),
            *knowledge_tools(),
            *message_tools(db=db),
            *handoff_tools(),
            *opt_out_tools(db=db),
        ]
    }
    assert set(built) == set(raw)
    for name, tool in built.items():
        assert convert_to_openai_tool(tool) == convert_to_openai_tool(raw[name]), name  # what the model sees
        model_args = set(raw[name].tool_call_schema.model_fields)  # type: ignore[union-attr]
        validated = set(tool.args_schema.model_fields)  # type: ignore[union-attr]
        # a tool called without arguments keeps the runtime in its schema: LangChain would drop it
        assert validated == (model_args or {"runtime"}), name


async def test_the_agent_routes_itself_to_tools_or_the_end(runners: dict[str, GraphRunner]) -> None:
    for runner in runners.values():
        edges = {(e.source, e.target) for e in runner.graph.get_graph().edges}
        assert {("agent", "tools"), ("agent", "__end__"), ("tools", "agent")} <= edges


async def test_one_trip_saver_stores_a_tasks_many_writes_whole(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "cp.db", isolation_level=None) as conn:
        saver = OneTripSqliteSaver(conn)
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        saved = await saver.aput(config, empty_checkpoint(), {"step": -1}, {})  # type: ignore[arg-type]
        writes = [(f"channel-{i}", HumanMessage(f"word {i}", id=f"m{i}")) for i in range(250)]  # three inserts
        await saver.aput_writes(saved, writes, task_id="task-1")
        stored = await saver.aget_tuple(config)  # type: ignore[arg-type]
        assert stored is not None and stored.config == saved
        assert [(t, c, v) for t, c, v in stored.pending_writes or []] == [("task-1", c, v) for c, v in writes]
        await saver.adelete_thread("t")
        assert await saver.aget_tuple(config) is None  # type: ignore[arg-type]


async def test_one_trip_saver_refuses_a_connection_that_would_hold_its_writes(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "cp.db") as conn:  # sqlite3's default: implicit transactions
        with pytest.raises(ValueError, match="autocommit"):
            OneTripSqliteSaver(conn)
