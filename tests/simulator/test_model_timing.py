"""The OpenAI-compatible stand-in's timing profile, through the real langchain-openai client:
the first token no earlier than ``ttft_ms``, the pieces no faster than ``tokens_per_s``."""

from __future__ import annotations

import time

from langchain_openai import ChatOpenAI

from dialgraph.telephony.simulator.vendors.openai import FakeOpenAIServer, ModelTiming, ScriptedReply

REPLY = "Sure, Thursday at ten works. May I have your name please?"


def model(server: FakeOpenAIServer) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", base_url=server.base_url, api_key="sk-test", max_retries=0)  # type: ignore[arg-type]


async def test_the_first_token_waits_ttft_and_the_rest_streams_at_the_token_rate() -> None:
    timing = ModelTiming(ttft_ms=200, tokens_per_s=50)
    async with FakeOpenAIServer(lambda _: ScriptedReply(REPLY), timing=timing) as server:
        started = time.perf_counter()
        arrivals: list[float] = []
        text = ""
        async for chunk in model(server).astream("Can I come in on Thursday?"):
            if chunk.content:
                arrivals.append(time.perf_counter() - started)
                text += str(chunk.content)
    assert text == REPLY
    words = len(REPLY.split())
    assert len(arrivals) == words
    assert arrivals[0] >= 0.2
    assert arrivals[-1] - arrivals[0] >= (words - 1) / 50 * 0.95  # sleeps never return early


async def test_a_non_streamed_reply_takes_as_long_as_the_stream_would() -> None:
    async with FakeOpenAIServer(
        lambda _: ScriptedReply(REPLY), timing=ModelTiming(ttft_ms=150, tokens_per_s=100)
    ) as server:
        started = time.perf_counter()
        reply = await model(server).ainvoke("hello")
    assert reply.content == REPLY
    assert time.perf_counter() - started >= 0.15 + (len(REPLY.split()) - 1) / 100 * 0.95
