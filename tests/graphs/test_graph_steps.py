"""The graph's steps per turn (each one is a checkpoint write) and the intent label the
agent step puts on each caller turn."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage

from dialgraph.graphs.flows.base import caller_intent
from dialgraph.graphs.runner import GraphRunner
from dialgraph.server.core.settings import Settings
from tests.fakes.graph_calls import Call


async def test_a_tool_round_trip_turn_takes_five_checkpoints(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    runner = runners["support"]
    call = Call.open(runner, flow_settings, "support", thread_id="steps-1")
    await call.start()
    reply = await call.say("Is there parking?")
    assert "parking" in reply.text
    config = {"configurable": {"thread_id": "steps-1"}}
    history = [s async for s in runner.graph.aget_state_history(config)]
    # newest first: the answer, the tool results, the tool call, the caller's words, the input
    assert [s.next for s in history[:5]] == [(), ("agent",), ("tools",), ("agent",), ("__start__",)]
    assert history[5].next == ()  # the greeting's run ended right before
    values = history[0].values
    assert values["caller_turns"] == 1 and values["agent_turns"] == 2
    assert values["intent"] == "question"


async def test_intent_is_labelled_once_per_caller_turn(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    runner = runners["scheduling"]
    call = Call.open(runner, flow_settings, "scheduling", thread_id="steps-2")
    await call.start()
    await call.say("I'd like to book an appointment")
    await call.say("Next Friday at ten")  # no label of its own: the booking goes on
    snapshot = await runner.graph.aget_state({"configurable": {"thread_id": "steps-2"}})
    assert snapshot.values["intent"] == "book"
    assert snapshot.values["caller_turns"] == 2


def test_caller_intent_keeps_the_last_label_through_yes_and_no() -> None:
    said = [
        HumanMessage("Can I cancel my appointment?"),
        AIMessage("Sure, which one?", additional_kwargs={"interrupted": True}),
        HumanMessage("yes"),
    ]
    assert caller_intent(said, "scheduling") == "cancel"
    assert caller_intent([*said, HumanMessage("I'd rather speak to a person")], "scheduling") == "human"
    assert caller_intent([HumanMessage("no"), HumanMessage("yes")], "scheduling") is None
    # only a few turns back: an old label is the state's to keep, not re-derived
    many_yes = [HumanMessage("book me in"), *[HumanMessage("yes") for _ in range(3)]]
    assert caller_intent(many_yes, "scheduling") is None


async def test_the_routers_run_without_callbacks(runners: dict[str, GraphRunner], flow_settings: Settings) -> None:
    """A traced router costs every turn 5 trips round the event loop (its own task and a
    shielded ``on_chain_end``): the flows' routers are untraced, their nodes still report."""

    class Seen(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.chains: list[str] = []

        async def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
            self.chains.append(str(kwargs.get("name")))

    call = Call.open(runners["support"], flow_settings, "support", thread_id="steps-3")
    await call.start()
    seen = Seen()
    config: Any = {"configurable": {"thread_id": "steps-3"}, "callbacks": [seen]}
    await call.runner.graph.ainvoke({"messages": [HumanMessage("Is there parking?")]}, config, context=call.ctx)
    assert "agent" in seen.chains and "tools" in seen.chains
    assert not {"route_entry", "route_after_signal", "route_after_keypad"} & set(seen.chains)
