"""A spend cap turns the next turn into the message/transfer offer: a hosted model (ChatOpenAI,
real HTTP, against the local OpenAI-compatible fake) gets no request after the cap; the rest
of the call runs on the offline model, which takes the message."""

from __future__ import annotations

from contextlib import AsyncExitStack

from sqlalchemy import select

from dialgraph.graphs.model import build_chat_model
from dialgraph.graphs.offline_policy import BUDGET_OFFER
from dialgraph.graphs.runtime import build_runners
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Message
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import BUDGET_SPENT, CallerText, TurnUsage
from dialgraph.telephony.simulator.vendors.openai import FakeOpenAIServer, ScriptedReply
from tests.fakes.graph_calls import Call, collect, fixed_clock


async def test_spend_cap_turns_the_next_turn_into_the_offer(flow_settings: Settings, db: Database) -> None:
    script = [ScriptedReply(text="We are open nine to five, Monday to Friday.")]
    async with FakeOpenAIServer(script) as server, AsyncExitStack() as stack:
        model = build_chat_model(f"openai-compatible:{server.base_url}/gpt-4o-mini", settings=flow_settings)
        runners = await build_runners(flow_settings, db, stack, clock=fixed_clock, model=model)
        call = Call.open(runners["scheduling"], flow_settings, "scheduling", thread_id="cap-1")
        await call.start()

        # a turn on the hosted model reports what it spent
        events = [e async for e in call.runner.respond(call.ctx, CallerText("When are you open?"))]
        usage = [e for e in events if isinstance(e, TurnUsage)]
        assert len(server.requests) == 1
        assert usage and usage[0].model == "gpt-4o-mini" and usage[0].input_tokens == 50

        # the cap: a fixed offer, no request
        offer = await call.signal(BUDGET_SPENT, "limits.caller_daily_budget")
        assert offer.text == BUDGET_OFFER
        assert len(server.requests) == 1

        # the rest of the call: the offline model answers (no request), and takes the message
        ask = await call.turn(CallerText("A message please", offline=True))
        assert "message" in ask.text.lower()
        done = await call.turn(CallerText("Please ask Dr Rao to call me back about my results", offline=True))
        assert done.text
        assert len(server.requests) == 1  # the fake saw nothing after the cap

        # the thread holds the offer as the agent's reply (a later turn on any instance sees it)
        state = await call.runner.graph.aget_state({"configurable": {"thread_id": "cap-1"}})
        assert any(getattr(m, "content", "") == BUDGET_OFFER for m in state.values["messages"])

    async with db.sessionmaker() as s:
        [message] = (await s.scalars(select(Message))).all()
    assert "call me back" in message.body


async def test_offer_then_transfer_on_the_offline_model(flow_settings: Settings, db: Database) -> None:
    async with FakeOpenAIServer([]) as server, AsyncExitStack() as stack:
        model = build_chat_model(f"openai-compatible:{server.base_url}/gpt-4o-mini", settings=flow_settings)
        runners = await build_runners(flow_settings, db, stack, clock=fixed_clock, model=model)
        call = Call.open(runners["scheduling"], flow_settings, "scheduling", thread_id="cap-2")
        await call.start()
        await call.signal(BUDGET_SPENT)
        reply = await collect(call.runner.respond(call.ctx, CallerText("Transfer me to someone please", offline=True)))
        assert reply.transfer is not None and reply.transfer.target == "front_desk"
        assert server.requests == []
