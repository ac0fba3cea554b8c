"""After a drop, another process's runner (no memory of the turn) repairs the checkpoint
with what the caller heard, and the reconnection line says again what was cut off."""

from __future__ import annotations

import dataclasses
from contextlib import AsyncExitStack

from langchain_core.messages import AIMessage, HumanMessage

from dialgraph.graphs.flows.base import RECONNECTED
from dialgraph.graphs.runner import GraphRunner, unsaid_rest
from dialgraph.graphs.runtime import build_runners
from dialgraph.graphs.state import INTERRUPTED, UNSAID
from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from tests.fakes.graph_calls import Call, fixed_clock

BOOKED = (
    "Booked under the name Ana Lopez: Friday the 27th of November at 10 in the morning. "
    "Is there anything else I can help you with?"
)


def test_unsaid_rest_starts_at_the_sentence_the_cut_fell_in() -> None:
    said = "One two. Three four five. Six?"
    assert unsaid_rest(said, "One two.") == "Three four five. Six?"
    assert unsaid_rest(said, "One two. Three") == "Three four five. Six?"
    assert unsaid_rest(said, "") == said
    assert unsaid_rest(said, said) is None
    assert unsaid_rest(said, "Something else") is None


async def booked_call(runner: GraphRunner, settings: Settings, thread_id: str) -> Call:
    call = Call.open(runner, settings, "scheduling", thread_id=thread_id)
    await call.start()
    await call.say("Hi, I'd like to book an appointment please")
    await call.say("next friday at ten")
    assert (await call.say("It's Ana Lopez")).text == BOOKED
    return call


async def messages_of(runner: GraphRunner, thread_id: str) -> list:
    state = await runner.graph.aget_state({"configurable": {"thread_id": thread_id}})
    return list(state.values["messages"])


async def test_another_process_repairs_and_says_the_rest_again(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = await booked_call(runners["scheduling"], flow_settings, "t-cut")
    async with AsyncExitStack() as stack:  # instance B: same database, nothing shared in memory
        other = (await build_runners(flow_settings, db, stack, clock=fixed_clock))["scheduling"]
        resumed = Call(other, dataclasses.replace(call.ctx))
        await other.record_heard(resumed.ctx, "Booked under the name Ana Lopez: Friday the 27th")
        line = await resumed.signal("reconnected")
        assert line.text == f"{RECONNECTED} Friday the 27th of November at 10 in the morning. " + (
            "Is there anything else I can help you with?"
        )
        messages = await messages_of(other, "t-cut")
    cut = [m for m in messages if isinstance(m, AIMessage) and m.additional_kwargs.get(INTERRUPTED)]
    assert [m.content for m in cut] == ["Booked under the name Ana Lopez: Friday the 27th"]
    assert messages[-1].content == line.text
    assert [m.content for m in messages if isinstance(m, HumanMessage)] == [
        "Hi, I'd like to book an appointment please",
        "next friday at ten",
        "It's Ana Lopez",
    ]


async def test_nothing_heard_means_the_whole_reply_again_without_rerunning_tools(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    call = await booked_call(runners["scheduling"], flow_settings, "t-none")
    async with AsyncExitStack() as stack:
        other = (await build_runners(flow_settings, db, stack, clock=fixed_clock))["scheduling"]
        resumed = Call(other, call.ctx)
        await other.record_heard(resumed.ctx, "")
        line = await resumed.signal("reconnected")
        messages = await messages_of(other, "t-none")
    assert line.text == f"{RECONNECTED} {BOOKED}"
    # Same single booking tool call as before: the model was not asked again.
    tool_calls = [tc["name"] for m in messages if isinstance(m, AIMessage) for tc in m.tool_calls]
    assert tool_calls.count("book_appointment") == 1
    (cut,) = [m for m in messages if isinstance(m, AIMessage) and m.additional_kwargs.get(INTERRUPTED)]
    assert cut.content == "" and cut.additional_kwargs[UNSAID] == BOOKED


async def test_a_reply_lost_with_the_process_is_answered_again(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    """The process died before the reply reached the checkpoint and nothing was heard:
    the caller's turn is still waiting, so the agent answers it after the reconnection line."""
    runner = runners["scheduling"]
    call = Call.open(runner, flow_settings, "scheduling", thread_id="t-lost")
    await call.start()
    # The caller's words were checkpointed; the agent's reply never was.
    config = {"configurable": {"thread_id": "t-lost"}}
    await runner.graph.aupdate_state(
        config, {"messages": [HumanMessage("Hi, I'd like to book an appointment please", id="h1")]}, as_node="greeting"
    )
    line = await call.signal("reconnected")
    assert line.text.startswith(RECONNECTED)
    assert "day and time" in line.text
