"""The flows for LangGraph's dev server and Studio (``langgraph dev``, see langgraph.json).

Each name is a graph factory the server calls: the offline model, the real tools on the
configured database (migrated on first use), and an in-memory checkpointer. Runs need a
context like the phone path gives them, e.g. ``{"call_sid": "CA-studio", "thread_id":
"t1", "caller": "+15551230000", "called": "", "flow": "scheduling", "flow_settings":
{...}}``; without one, ``default_context(flow)`` is what tests and scripts pass.
"""

from __future__ import annotations

import functools
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph

from graphs.context import CallContext
from graphs.model import build_chat_model
from graphs.registry import graph_factory
from server.db import Database, upgrade
from server.settings import Settings


@functools.cache
def _parts() -> tuple[Settings, Any, Any]:
    from tools import build_tools

    settings = Settings()
    if settings.effective_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    tools = build_tools(db=Database(settings.effective_database_url))
    return settings, build_chat_model("offline", settings=settings), tools


def default_context(flow: str, *, caller: str = "+15551230000") -> CallContext:
    settings = _parts()[0]
    return CallContext(
        call_sid="CA-studio",
        thread_id="studio",
        caller=caller,
        called="",
        flow=flow,
        flow_settings=settings.flows[flow],
    )


def _build(name: str) -> CompiledStateGraph[Any, Any, Any, Any]:
    _, model, tools = _parts()
    return graph_factory(name)(model=model, tools=tools, checkpointer=InMemorySaver())


def scheduling() -> CompiledStateGraph[Any, Any, Any, Any]:
    return _build("scheduling")


def support() -> CompiledStateGraph[Any, Any, Any, Any]:
    return _build("support")


def sales() -> CompiledStateGraph[Any, Any, Any, Any]:
    return _build("sales")
