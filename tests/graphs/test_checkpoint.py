"""Checkpoints on SQLite and PostgreSQL: barge-in repair, resume in a new process, retention."""

from __future__ import annotations

import asyncio
import datetime as dt
import operator
import sqlite3
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, TypedDict

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import START, StateGraph
from sqlalchemy import select

from dialgraph.graphs.checkpoint import checkpointer, prune_threads
from dialgraph.graphs.model import build_chat_model
from dialgraph.graphs.runner import GraphRunner
from dialgraph.graphs.runtime import build_runners
from dialgraph.graphs.sqlite_files import sqlite_checkpoint_file
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Appointment
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import CallerText, TextChunk
from dialgraph.telephony.simulator.vendors.openai import FakeOpenAIServer, ScriptedReply
from tests.fakes.graph_calls import Call, fixed_clock

LONG = "Sure. We are open from nine in the morning to five in the afternoon on weekdays, and closed at weekends."


async def state_messages(runner: GraphRunner, thread_id: str) -> list[object]:
    snapshot = await runner.graph.aget_state({"configurable": {"thread_id": thread_id}})
    return list(snapshot.values["messages"])


async def test_cancelled_reply_is_repaired_with_the_heard_text(flow_settings: Settings, db: Database) -> None:
    release = asyncio.Event()
    script = [
        ScriptedReply(text=LONG, hold_after=6, release=release),
        ScriptedReply(text="We're closed on Saturdays."),
    ]
    async with FakeOpenAIServer(script) as server, AsyncExitStack() as stack:
        model = build_chat_model(f"openai-compatible:{server.base_url}/fake-model", settings=flow_settings)
        runner = (await build_runners(flow_settings, db, stack, clock=fixed_clock, model=model))["support"]
        call = Call.open(runner, flow_settings, "support", thread_id="barge-1")
        await call.start()

        heard: list[str] = []
        six_pieces = asyncio.Event()

        async def consume() -> None:
            async for event in runner.respond(call.ctx, CallerText("When are you open?")):
                if isinstance(event, TextChunk):
                    heard.append(event.text)
                    if len(heard) >= 6:
                        six_pieces.set()

        task = asyncio.create_task(consume())
        await six_pieces.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        heard_text = "".join(heard[:4])  # the caller barged in after four pieces had played
        await runner.record_heard(call.ctx, heard_text)

        messages = await state_messages(runner, "barge-1")
        last = messages[-1]
        assert isinstance(last, AIMessage) and last.content == heard_text.strip()
        assert last.additional_kwargs["interrupted"] is True and last.response_metadata["interrupted"] is True
        assert [m.content for m in messages if isinstance(m, HumanMessage)] == ["When are you open?"]
        snapshot = await runner.graph.aget_state({"configurable": {"thread_id": "barge-1"}})
        assert snapshot.next == ()

        reply = await call.say("And on Saturdays?")
        assert reply.text == "We're closed on Saturdays."
        sent = server.requests[-1]["messages"]
        roles = [(m["role"], m.get("content")) for m in sent[1:]]
        assert roles[-3:] == [
            ("user", "When are you open?"),
            ("assistant", heard_text.strip()),
            ("user", "And on Saturdays?"),
        ]
        humans = [m for m in await state_messages(runner, "barge-1") if isinstance(m, HumanMessage)]
        assert [m.content for m in humans] == ["When are you open?", "And on Saturdays?"]
        release.set()


async def test_finished_reply_is_cut_to_the_heard_text(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    runner = runners["support"]
    call = Call.open(runner, flow_settings, "support", thread_id="barge-2")
    await call.start()
    full = await call.say("Is there parking?")
    assert full.text.startswith("Yes, there's free parking")
    await runner.record_heard(call.ctx, "Yes, there's free parking")
    messages = await state_messages(runner, "barge-2")
    last = messages[-1]
    assert isinstance(last, AIMessage) and last.content == "Yes, there's free parking"
    assert last.additional_kwargs["interrupted"] is True
    # the repaired message replaced the spoken one (same id): one agent reply for the turn
    after_question = messages[[m.content for m in messages].index("Is there parking?") + 1 :]
    assert [type(m).__name__ for m in after_question if isinstance(m, AIMessage) and not m.tool_calls] == ["AIMessage"]


async def test_a_new_process_resumes_where_the_call_stood(flow_settings: Settings, db: Database) -> None:
    async with AsyncExitStack() as stack:
        first = (await build_runners(flow_settings, db, stack, clock=fixed_clock))["scheduling"]
        call = Call.open(first, flow_settings, "scheduling", thread_id="CA-resume")
        await call.start()
        await call.say("I'd like to book an appointment")
        assert "name" in (await call.say("Next Friday at ten")).text
    # everything rebuilt: model, tools, checkpointer, runner, connections
    async with AsyncExitStack() as stack:
        second = (await build_runners(flow_settings, db, stack, clock=fixed_clock))["scheduling"]
        assert second is not first and second.graph.checkpointer is not first.graph.checkpointer
        call = Call.open(second, flow_settings, "scheduling", thread_id="CA-resume")
        back = await call.start()
        assert "cut off" in back.text and "name" in back.text
        booked = await call.say("Ana Lopez")
        assert "Friday the 27th of November at 10 in the morning" in booked.text
        humans = [m.content for m in await state_messages(second, "CA-resume") if isinstance(m, HumanMessage)]
        assert humans == ["I'd like to book an appointment", "Next Friday at ten", "Ana Lopez"]
    async with db.sessionmaker() as session:
        [appt] = (await session.scalars(select(Appointment))).all()
    assert appt.name == "Ana Lopez" and appt.starts_at == dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.UTC)


async def test_unanswered_turn_is_answered_after_reconnect(flow_settings: Settings, db: Database) -> None:
    async with AsyncExitStack() as stack:
        runner = (await build_runners(flow_settings, db, stack, clock=fixed_clock))["support"]
        call = Call.open(runner, flow_settings, "support", thread_id="CA-drop")
        await call.start()
        # the stream dropped after the caller's words were saved but before any reply
        await runner.graph.aupdate_state(
            {"configurable": {"thread_id": "CA-drop"}},
            {"messages": [HumanMessage("Is there parking?")]},
            as_node="__start__",
        )
        back = await call.start()
        assert back.text.startswith("Sorry about that, we were cut off.")
        assert "free parking" in back.text


async def test_retention_deletes_only_old_threads(
    runners: dict[str, GraphRunner], flow_settings: Settings, database_url: str
) -> None:
    for thread in ("old-1", "old-2"):
        await Call.open(runners["scheduling"], flow_settings, "scheduling", thread_id=thread).start()
    async with AsyncExitStack() as stack:
        saver = await checkpointer(database_url, stack=stack)
        now = dt.datetime.now(dt.UTC)
        assert await prune_threads(saver, older_than=dt.timedelta(days=30), now=now) == []
        later = now + dt.timedelta(days=31)
        assert await prune_threads(saver, older_than=dt.timedelta(days=30), now=later) == ["old-1", "old-2"]
        assert await saver.aget_tuple({"configurable": {"thread_id": "old-1"}}) is None


async def test_checkpoints_an_earlier_version_kept_in_the_app_file_move_to_their_own(tmp_path: Path) -> None:
    app_file = tmp_path / "dialgraph.db"
    url = f"sqlite+aiosqlite:///{app_file}"

    class Talk(TypedDict):
        said: Annotated[list[str], operator.add]

    builder = StateGraph(Talk)
    builder.add_node("say", lambda state: {"said": ["hello"]})
    builder.add_edge(START, "say")
    thread = {"configurable": {"thread_id": "t1"}}
    async with AsyncSqliteSaver.from_conn_string(str(app_file)) as old:  # the app's file, as before
        await builder.compile(checkpointer=old).ainvoke({"said": ["hi"]}, thread)  # type: ignore[arg-type]

    for _ in range(2):  # the second open finds nothing left to move
        async with AsyncExitStack() as stack:
            saver = await checkpointer(url, stack=stack)
            graph = builder.compile(checkpointer=saver)
            assert (await graph.aget_state(thread)).values == {"said": ["hi", "hello"]}  # type: ignore[arg-type]
    assert Path(sqlite_checkpoint_file(str(app_file))).name == "dialgraph-checkpoints.db"
    with sqlite3.connect(app_file) as conn:
        left = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not left & {"checkpoints", "writes"}
