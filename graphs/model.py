"""The chat-model factory: one spec string picks the brain behind every flow.

- ``openai:<model>`` — OpenAI's API (key from ``settings.openai_api_key``; base URL from
  ``settings.openai_base_url`` when set).
- ``openai-compatible:<base_url>/<model>`` — any server speaking OpenAI's chat-completions
  protocol (vLLM, Ollama, LM Studio, a test fake), e.g.
  ``openai-compatible:http://127.0.0.1:8080/v1/llama3``.
- ``offline`` — the deterministic rules-and-dateparser model (``graphs.offline_model``).

A hosted model is built with the offline model beside it: a run whose config carries
``configurable[OFFLINE_ONLY] = True`` (``offline_config``) is answered by the offline model
instead, no request made. The runner asks for that once a call's spend cap is reached
(``server/core/limits.py`` ``caller_daily_budget``): the rest of the call costs nothing.

Voice needs the first token fast or not at all: streaming on, usage reported, a short
gap allowed between streamed chunks, a short request timeout and few retries (a retry
after several seconds of dead air is worse than an apology).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import RunnableConfig, ensure_config
from pydantic import SecretStr

from dialgraph.server.core.settings import Settings

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

REQUEST_TIMEOUT_S = 10.0
STREAM_CHUNK_TIMEOUT_S = 5.0
MAX_RETRIES = 1
OFFLINE_ONLY = "dialgraph_offline_only"  # a run's configurable key: no hosted model call


def offline_config(config: RunnableConfig) -> RunnableConfig:
    """``config`` for a run that must not spend on a hosted model."""
    return {**config, "configurable": {**config.get("configurable", {}), OFFLINE_ONLY: True}}


def offline_only(config: RunnableConfig | None) -> bool:
    """Whether the run (this call's config merged with the run's) asked for no hosted model."""
    return bool(ensure_config(config).get("configurable", {}).get(OFFLINE_ONLY))


class ModelSpecError(ValueError):
    """The model spec string is not one we understand."""


def build_chat_model(
    spec: str,
    *,
    settings: Settings,
    clock: Callable[[], dt.datetime] | None = None,
) -> BaseChatModel:
    """Build the chat model named by ``spec`` (see the module docstring).

    ``clock`` only matters to the offline model (what "tomorrow" means in tests).
    """
    if spec == "offline":
        from dialgraph.graphs.offline_model import OfflineChatModel

        return OfflineChatModel(clock=clock)
    if spec.startswith("openai:"):
        name = spec.removeprefix("openai:")
        if not name:
            raise ModelSpecError("openai:<model> needs a model name, e.g. openai:gpt-4o-mini")
        return _chat_openai(name, base_url=settings.openai_base_url, api_key=settings.openai_api_key, clock=clock)
    if spec.startswith("openai-compatible:"):
        rest = spec.removeprefix("openai-compatible:")
        base_url, sep, name = rest.rstrip("/").rpartition("/")
        if not sep or not base_url.startswith(("http://", "https://")) or not name:
            raise ModelSpecError(
                "openai-compatible:<base_url>/<model> expected, e.g. openai-compatible:http://127.0.0.1:8080/v1/llama3"
            )
        key = settings.openai_api_key if settings.openai_api_key.get_secret_value() else SecretStr("not-needed")
        return _chat_openai(name, base_url=base_url, api_key=key, clock=clock)
    raise ModelSpecError(
        f"unknown model spec {spec!r}: use 'offline', 'openai:<model>' or 'openai-compatible:<url>/<model>'"
    )


@cache
def voice_chat_openai() -> type[ChatOpenAI]:
    """The ``VoiceChatOpenAI`` class (built on first use: ``langchain_openai`` loads only
    when a hosted model is configured)."""
    from langchain_openai import ChatOpenAI

    class VoiceChatOpenAI(ChatOpenAI):
        """``ChatOpenAI`` that hands a run marked ``OFFLINE_ONLY`` to ``offline`` (the offline
        model) instead of making a request. Tools bound with ``bind_tools`` reach either one in
        the same (OpenAI) format, so a flow cannot tell which answered."""

        offline: BaseChatModel | None = None

        def invoke(
            self,
            input: LanguageModelInput,
            config: RunnableConfig | None = None,
            *,
            stop: list[str] | None = None,
            **kwargs: Any,
        ) -> AIMessage:
            if self.offline is not None and offline_only(config):
                return self.offline.invoke(input, config, stop=stop, **kwargs)
            return super().invoke(input, config, stop=stop, **kwargs)

        async def ainvoke(
            self,
            input: LanguageModelInput,
            config: RunnableConfig | None = None,
            *,
            stop: list[str] | None = None,
            **kwargs: Any,
        ) -> AIMessage:
            if self.offline is not None and offline_only(config):
                return await self.offline.ainvoke(input, config, stop=stop, **kwargs)
            return await super().ainvoke(input, config, stop=stop, **kwargs)

        def stream(
            self,
            input: LanguageModelInput,
            config: RunnableConfig | None = None,
            *,
            stop: list[str] | None = None,
            **kwargs: Any,
        ) -> Iterator[AIMessageChunk]:
            if self.offline is not None and offline_only(config):
                return self.offline.stream(input, config, stop=stop, **kwargs)  # type: ignore[return-value]
            return super().stream(input, config, stop=stop, **kwargs)

        async def astream(
            self,
            input: LanguageModelInput,
            config: RunnableConfig | None = None,
            *,
            stop: list[str] | None = None,
            **kwargs: Any,
        ) -> AsyncIterator[AIMessageChunk]:
            source = (
                self.offline.astream(input, config, stop=stop, **kwargs)
                if self.offline is not None and offline_only(config)
                else super().astream(input, config, stop=stop, **kwargs)
            )
            async for chunk in source:
                yield chunk  # type: ignore[misc]

    return VoiceChatOpenAI


def _chat_openai(
    name: str, *, base_url: str | None, api_key: SecretStr, clock: Callable[[], dt.datetime] | None = None
) -> BaseChatModel:
    from dialgraph.graphs.offline_model import OfflineChatModel

    model_class: Any = voice_chat_openai()  # the subclass: takes ``offline`` too
    return model_class(  # type: ignore[no-any-return]
        model=name,
        base_url=base_url,
        api_key=api_key,
        streaming=True,
        stream_usage=True,  # off by default with a base_url; we log cost per turn
        stream_chunk_timeout=STREAM_CHUNK_TIMEOUT_S,
        timeout=REQUEST_TIMEOUT_S,
        max_retries=MAX_RETRIES,
        use_responses_api=False,  # chat completions: what every compatible server speaks
        temperature=0.3,
        offline=OfflineChatModel(clock=clock),
    )
