"""The chat-model factory: one spec string picks the brain behind every flow.

- ``openai:<model>`` — OpenAI's API (key from ``settings.openai_api_key``; base URL from
  ``settings.openai_base_url`` when set).
- ``openai-compatible:<base_url>/<model>`` — any server speaking OpenAI's chat-completions
  protocol (vLLM, Ollama, LM Studio, a test fake), e.g.
  ``openai-compatible:http://127.0.0.1:8080/v1/llama3``.
- ``offline`` — the deterministic rules-and-dateparser model (``graphs.offline_model``).

Voice needs the first token fast or not at all: streaming on, usage reported, a short
gap allowed between streamed chunks, a short request timeout and few retries (a retry
after several seconds of dead air is worse than an apology).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from dialgraph.server.core.settings import Settings

REQUEST_TIMEOUT_S = 10.0
STREAM_CHUNK_TIMEOUT_S = 5.0
MAX_RETRIES = 1


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
        return _chat_openai(name, base_url=settings.openai_base_url, api_key=settings.openai_api_key)
    if spec.startswith("openai-compatible:"):
        rest = spec.removeprefix("openai-compatible:")
        base_url, sep, name = rest.rstrip("/").rpartition("/")
        if not sep or not base_url.startswith(("http://", "https://")) or not name:
            raise ModelSpecError(
                "openai-compatible:<base_url>/<model> expected, e.g. openai-compatible:http://127.0.0.1:8080/v1/llama3"
            )
        key = settings.openai_api_key if settings.openai_api_key.get_secret_value() else SecretStr("not-needed")
        return _chat_openai(name, base_url=base_url, api_key=key)
    raise ModelSpecError(
        f"unknown model spec {spec!r}: use 'offline', 'openai:<model>' or 'openai-compatible:<url>/<model>'"
    )


def _chat_openai(name: str, *, base_url: str | None, api_key: SecretStr) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
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
    )
