"""The chat-model factory and the offline model as a LangChain chat model."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from dialgraph.graphs.model import ModelSpecError, build_chat_model
from dialgraph.graphs.offline_model import OfflineChatModel
from dialgraph.graphs.registry import UnknownFlowError, graph_factory
from dialgraph.server.core.settings import Settings

SYSTEM = SystemMessage(
    "You answer the phone.\nCompany: Acme Dental.\nLocal time now: 2026-11-20T10:00 (Friday). Time zone: America/New_York.\n"
    "Transfer targets: front_desk = front desk.\nCaller's name: unknown."
)


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
    chunks = [c async for c in bound.astream(history)]
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
    after = await bound.ainvoke([*history, AIMessage("", tool_calls=[call]), result])
    assert isinstance(after, AIMessage) and not after.tool_calls
    assert after.content.startswith("Booked under the name Ana Lopez: Friday the 27th")
    text_chunks = [
        c.content async for c in bound.astream([*history, AIMessage("", tool_calls=[call]), result]) if c.content
    ]
    assert len(text_chunks) > 5  # word by word

    ask = await bound.ainvoke([SYSTEM, HumanMessage("I want an appointment")])
    assert "day and time" in ask.content and not ask.tool_calls
    slots = await bound.ainvoke([SYSTEM, HumanMessage("Have you got anything tomorrow morning?")])
    assert slots.tool_calls[0]["name"] == "find_free_slots"
    assert slots.tool_calls[0]["args"] == {"when": "2026-11-21T09:00", "count": 3}


async def test_offline_model_never_talks_about_itself() -> None:
    model = OfflineChatModel().bind_tools([book_appointment, find_free_slots])
    for said in ("are you a robot?", "what model are you", "blah blah", "hello?", "tell me a joke"):
        reply = await model.ainvoke([SYSTEM, HumanMessage(said)])
        text = json.dumps(reply.content).lower()
        assert not any(word in text for word in ("llm", "language model", "ai model", "openai", "gpt", "offline"))
