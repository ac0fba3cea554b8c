"""The offline chat model: deterministic, no network, no keys.

A real LangChain ``BaseChatModel``: it streams its reply token by token, takes tools
through ``bind_tools`` and answers with tool calls the same way a hosted model does, so
the flows, the ``ToolNode`` and the runner cannot tell the difference. The decisions come
from ``graphs.offline_policy`` (keyword rules plus spoken-date parsing). It is the no-keys
default and the tests' model; it is not a substitute for a hosted model on open-ended
conversation.

The rules and dateparser are plain CPU work (dateparser's first parse in a process costs
~150 ms; ``graphs.runtime`` warms it at start). Once warm, a reply takes 0.27 ms p50, 0.83
ms p99, 2.45 ms at most over the graph tests' 853 replies, so the async paths compute it on
the event loop: a trip to a worker thread and back costs more than that under load (two
GIL hand-overs behind every call's audio, up to the 5 ms switch interval each, and three
loop iterations). A caller turn longer than ``INLINE_MAX_CHARS`` (a monologue, where
dateparser's time grows with the text: ~1 ms at 500 characters) is read in a worker
thread, so a turn never stalls other calls' audio for long.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict

from dialgraph.graphs.facts import CallFacts, facts_in
from dialgraph.graphs.offline_policy import Reply, decide, frame_metadata

INLINE_MAX_CHARS = 400  # a longer caller turn is read in a worker thread


def _read_inline(messages: Sequence[BaseMessage]) -> bool:
    """Whether the reply to ``messages`` is cheap enough to compute on the event loop."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return len(message.text) <= INLINE_MAX_CHARS
    return True


class OfflineChatModel(BaseChatModel):
    """Rules-and-dateparser chat model with tool calling and token streaming.

    The call's facts come in the model call's metadata (``graphs.facts.facts_config``),
    not from the prompt. ``clock`` gives "now" (aware or naive UTC), converted to the
    facts' time zone; without a clock, the local time the facts state is used.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    clock: Callable[[], dt.datetime] | None = None
    model_name: str = "offline"

    @property
    def _llm_type(self) -> str:
        return "dialgraph-offline"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    # --- the decision ----------------------------------------------------------------------
    def _reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> tuple[Reply, str]:
        """The reply and its message id, for the call's ``tools`` and ``facts`` (kwargs)."""
        facts = kwargs.get("facts") or CallFacts()
        names = {t["function"]["name"] for t in kwargs.get("tools") or []}
        reply = decide(messages, names, facts, self._now(facts))
        return reply, f"lc_run-offline-{uuid.uuid4().hex}"

    def _now(self, facts: CallFacts) -> dt.datetime:
        if self.clock is None:
            return facts.local_now()
        now = self.clock()
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
        return now.astimezone(facts.zone).replace(tzinfo=None)

    @staticmethod
    def _usage(messages: list[BaseMessage], reply: Reply) -> UsageMetadata:
        inp = sum(len(str(m.content).split()) for m in messages)
        out = len(reply.text.split()) + sum(len(str(args)) // 4 for _, args in reply.tool_calls)
        return UsageMetadata(input_tokens=inp, output_tokens=out, total_tokens=inp + out)

    def _chunks(self, messages: list[BaseMessage], reply: Reply, msg_id: str) -> Iterator[AIMessageChunk]:
        for token in re.findall(r"\S+\s*", reply.text):
            yield AIMessageChunk(content=token, id=msg_id)
        if reply.tool_calls:
            yield AIMessageChunk(
                content="",
                id=msg_id,
                tool_call_chunks=[
                    {
                        "name": name,
                        "args": _json(args),
                        "id": f"call_{uuid.uuid4().hex[:24]}",
                        "index": i,
                        "type": "tool_call_chunk",
                    }
                    for i, (name, args) in enumerate(reply.tool_calls)
                ],
            )
        yield AIMessageChunk(
            content="",
            id=msg_id,
            usage_metadata=self._usage(messages, reply),
            response_metadata={
                "model_name": self.model_name,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                **frame_metadata(reply.frame),
            },
            chunk_position="last",
        )

    # --- Runnable --------------------------------------------------------------------------
    # LangChain hands a model's ``_astream``/``_agenerate`` the call's keyword arguments but
    # not its config: the entry points move the call's facts from the config's metadata
    # into the keyword argument ``facts``.
    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return super().invoke(input, config, stop=stop, **_with_facts(config, kwargs))

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **_with_facts(config, kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        return super().stream(input, config, stop=stop, **_with_facts(config, kwargs))

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        async for chunk in super().astream(input, config, stop=stop, **_with_facts(config, kwargs)):
            yield chunk

    # --- BaseChatModel -----------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply, msg_id = self._reply(messages, kwargs)
        merged: AIMessageChunk | None = None
        for chunk in self._chunks(messages, reply, msg_id):
            merged = chunk if merged is None else merged + chunk
        assert merged is not None
        message = AIMessage(
            content=merged.content,
            id=msg_id,
            tool_calls=merged.tool_calls,
            usage_metadata=merged.usage_metadata,
            response_metadata=merged.response_metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply, msg_id = self._reply(messages, kwargs)
        for chunk in self._chunks(messages, reply, msg_id):
            yield ChatGenerationChunk(message=chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if _read_inline(messages):
            reply, msg_id = self._reply(messages, kwargs)
        else:
            reply, msg_id = await asyncio.to_thread(self._reply, messages, kwargs)
        for chunk in self._chunks(messages, reply, msg_id):
            yield ChatGenerationChunk(message=chunk)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if _read_inline(messages):
            return self._generate(messages, stop, None, **kwargs)
        return await asyncio.to_thread(self._generate, messages, stop, None, **kwargs)


def _with_facts(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**kwargs, "facts": facts_in((config or {}).get("metadata"))}


def _json(args: dict[str, Any]) -> str:
    import json

    return json.dumps(args, ensure_ascii=False)
