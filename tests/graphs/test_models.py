"""The chat-model factory and the offline model as a LangChain chat model."""

from __future__ import annotations

import datetime as dt
import importlib
import json

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from dialgraph.graphs.facts import CallFacts, facts_config, facts_in
from dialgraph.graphs.model import ModelSpecError, build_chat_model
from dialgraph.graphs.offline_model import OfflineChatModel
from dialgraph.graphs.registry import UnknownFlowError, graph_factory
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings, TransferTarget
from dialgraph.server.core.settings import Settings
from dialgraph.tools import build_tools

FACTS = CallFacts(
    company="Acme Dental",
    timezone="America/New_York",
    now=dt.datetime(2026, 11, 20, 10, 0),
    targets={"front_desk": "front desk"},
)
SYSTEM = SystemMessage(f"You answer the phone.\n{FACTS.prompt()}")
CALL = facts_config(FACTS)


@tool
def book_appointment(start: str, name: str | None = None, purpose: str | None = None) -> str:
    """Book an appointment.

    Args:
        start: local ISO start.
        name: caller name.
        purpose: what for.
    """
    return "Booked."


@tool
def find_free_slots(when: str, count: int = 3) -> str:
    """Find free slots.

    Args:
        when: local ISO date or datetime.
        count: how many.
    """
    return ""


def test_factory_specs(tmp_path: object) -> None:
    settings = Settings(_env_file=None, openai_api_key="sk-test-123456789")  # type: ignore[call-arg]
    assert isinstance(build_chat_model("offline", settings=settings), OfflineChatModel)
    compat = build_chat_model("openai-compatible:http://127.0.0.1:9999/v1/llama3", settings=settings)
    assert isinstance(compat, ChatOpenAI)
    assert compat.model_name == "llama3" and compat.openai_api_base == "http://127.0.0.1:9999/v1"
    assert compat.stream_usage is True and compat.streaming is True and compat.use_responses_api is False
    assert compat.max_retries == 1 and compat.stream_chunk_timeout == 5.0
    hosted = build_chat_model("openai:gpt-4o-mini", settings=settings)
    assert isinstance(hosted, ChatOpenAI) and hosted.model_name == "gpt-4o-mini"
    for bad in ("gpt-4o", "openai:", "openai-compatible:llama3", "openai-compatible:ftp://x/y"):
        with pytest.raises(ModelSpecError):
            build_chat_model(bad, settings=settings)


async def test_each_flow_module_holds_its_spec_and_names_only_tools_that_exist(db: Database) -> None:
    built = build_tools(db=db)
    for name in ("scheduling", "support", "sales"):
        module = importlib.import_module(f"dialgraph.graphs.flows.{name}")
        assert module.SPEC.name == name and set(module.SPEC.tool_names) <= set(built), name
        assert graph_factory(name) is getattr(module, f"build_{name}_graph")


def test_registry_finds_flows_by_module_name() -> None:
    assert graph_factory("scheduling").__name__ == "build_scheduling_graph"
    assert graph_factory("dialgraph.graphs.flows.sales:build_sales_graph").__name__ == "build_sales_graph"
    for bad in ("nope", "../x", "dialgraph.graphs.flows.sales:missing"):
        with pytest.raises(UnknownFlowError):
            graph_factory(bad)


async def test_offline_model_streams_tokens_and_calls_tools() -> None:
    model = OfflineChatModel(clock=lambda: dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC))
    bound = model.bind_tools([book_appointment, find_free_slots])
    history = [SYSTEM, HumanMessage("Book me in for next Friday at 10, my name is Ana Lopez")]
    chunks = [c async for c in bound.astream(history, CALL)]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    [call] = merged.tool_calls
    assert call["name"] == "book_appointment"
    assert call["args"] == {"start": "2026-11-27T10:00", "name": "Ana Lopez", "purpose": None}
    assert merged.usage_metadata and merged.usage_metadata["input_tokens"] > 0

    result = ToolMessage(
        "Booked under the name Ana Lopez: Friday the 27th of November at 10 in the morning.",
        tool_call_id=call["id"],
        name=call["name"],
    )
    after = await bound.ainvoke([*history, AIMessage("", tool_calls=[call]), result], CALL)
    assert isinstance(after, AIMessage) and not after.tool_calls
    assert after.content.startswith("Booked under the name Ana Lopez: Friday the 27th")
    text_chunks = [
        c.content async for c in bound.astream([*history, AIMessage("", tool_calls=[call]), result], CALL) if c.content
    ]
    assert len(text_chunks) > 5  # word by word

    ask = await bound.ainvoke([SYSTEM, HumanMessage("I want an appointment")], CALL)
    assert "day and time" in ask.content and not ask.tool_calls
    slots = await bound.ainvoke([SYSTEM, HumanMessage("Have you got anything tomorrow morning?")], CALL)
    assert slots.tool_calls[0]["name"] == "find_free_slots"
    assert slots.tool_calls[0]["args"] == {"when": "2026-11-21T09:00", "count": 3}


@tool
def request_transfer(target: str, reason: str, summary: str) -> str:
    """Transfer the caller.

    Args:
        target: who to.
        reason: why.
        summary: for the human.
    """
    return ""


async def test_offline_model_reads_the_calls_facts_not_the_prompt() -> None:
    """Saturday 01:30 in Kolkata is Friday 15:00 in New York, the zone the prompt names:
    "tomorrow" is Sunday, the caller's name and the targets come from the facts."""
    model = OfflineChatModel(clock=lambda: dt.datetime(2026, 11, 20, 20, 0, tzinfo=dt.UTC))
    bound = model.bind_tools([book_appointment, find_free_slots, request_transfer])
    facts = CallFacts(timezone="Asia/Kolkata", targets={"billing": "billing team"}, caller_name="Ana Lopez")
    call = facts_config(facts)
    slots = await bound.ainvoke([SYSTEM, HumanMessage("Have you got anything tomorrow morning?")], call)
    assert slots.tool_calls[0]["args"] == {"when": "2026-11-22T09:00", "count": 3}
    booked = await bound.ainvoke([SYSTEM, HumanMessage("Book me in for Monday at 10")], call)
    assert booked.tool_calls[0]["args"] == {"start": "2026-11-23T10:00", "name": "Ana Lopez", "purpose": None}
    asked = await bound.ainvoke([SYSTEM, HumanMessage("Can I speak to someone in billing?")], call)
    assert asked.tool_calls[0]["name"] == "request_transfer" and asked.tool_calls[0]["args"]["target"] == "billing"
    unnamed = await bound.ainvoke([SYSTEM, HumanMessage("Book me in for Monday at 10")])
    assert "name" in unnamed.content and not unnamed.tool_calls  # no facts: nobody is known


def test_call_facts_as_the_prompt_states_them() -> None:
    flow = FlowSettings(
        company="Acme Dental",
        timezone="America/New_York",
        business_hours={"mon": "09:00-17:00"},
        transfer_targets={
            "front_desk": TransferTarget(number="+15550100001"),
            "billing": TransferTarget(number="+15550100002", description="billing team"),
        },
    )
    facts = CallFacts.of(flow, now=dt.datetime(2026, 11, 20, 15, 0, 42), caller_name=None)  # naive: UTC
    assert facts.now == dt.datetime(2026, 11, 20, 10, 0)
    assert facts.targets == {"front_desk": "front desk", "billing": "billing team"}
    assert facts.prompt() == (
        "Company: Acme Dental.\n"
        "Local time now: 2026-11-20T10:00 (Friday 20 November 2026, 10:00). Time zone: America/New_York.\n"
        "Opening hours: mon 09:00-17:00.\n"
        "Transfer targets: front_desk = front desk; billing = billing team.\n"
        "Caller's name: unknown."
    )
    assert facts_in(facts_config(facts)["metadata"]) is facts
    assert facts_in({}) == CallFacts() and facts_in(None) == CallFacts()


async def test_offline_model_never_talks_about_itself() -> None:
    model = OfflineChatModel().bind_tools([book_appointment, find_free_slots])
    for said in ("are you a robot?", "what model are you", "blah blah", "hello?", "tell me a joke"):
        reply = await model.ainvoke([SYSTEM, HumanMessage(said)], CALL)
        text = json.dumps(reply.content).lower()
        assert not any(word in text for word in ("llm", "language model", "ai model", "openai", "gpt", "offline"))
