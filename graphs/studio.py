"""The flows for LangGraph's dev server and Studio (``langgraph dev``, see langgraph.json).

Each name is an async graph factory the server awaits: the offline model, the real tools
on the configured database (migrated on first use), and an in-memory checkpointer (the
server swaps in its own). Runs need a context like the phone path gives them, e.g.
``{"call_sid": "CA-studio", "thread_id": "t1", "caller": "+15551230000", "called": "",
"flow": "scheduling", "flow_settings": {"timezone": "America/New_York"}}``, where
``flow_settings`` takes the keys of a ``[flows.<name>]`` table of dialgraph.toml (``{}``:
the defaults).

The one-time setup (settings, migrations, dateparser's data, time zones) blocks, so it runs in a
thread: ``langgraph dev`` fails any run whose factory blocks its event loop (blockbuster),
and so does ``tests/graphs/test_studio.py``. Checked with langgraph-cli 0.4.40 (API 0.16.7).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import zoneinfo
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph

from dialgraph.graphs.model import build_chat_model
from dialgraph.graphs.registry import graph_factory
from dialgraph.server.core.db import Database, upgrade
from dialgraph.server.core.settings import Settings

_SETUP = threading.Lock()
_ZONES: list[zoneinfo.ZoneInfo] = []


@functools.cache
def _parts_once() -> tuple[BaseChatModel, dict[str, BaseTool]]:
    from dialgraph.graphs.runtime import warm_date_parsing
    from dialgraph.tools import build_tools

    settings = Settings()
    if settings.effective_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    tools = build_tools(db=Database(settings.effective_database_url))
    warm_date_parsing()
    # A run's context names its flow's time zone, validated (and its file read) when the
    # run starts, on the loop: load every zone now, once, and hold them (~0.2 s, ~4 MB;
    # ZoneInfo's own cache is weak).
    _ZONES.extend(zoneinfo.ZoneInfo(zone) for zone in zoneinfo.available_timezones())
    return build_chat_model("offline", settings=settings), tools


def _parts() -> tuple[BaseChatModel, dict[str, BaseTool]]:
    """Blocking on first use (call it in a thread); a lock so it runs once."""
    with _SETUP:
        return _parts_once()


async def _build(name: str) -> CompiledStateGraph[Any, Any, Any, Any]:
    model, tools = await asyncio.to_thread(_parts)
    return graph_factory(name)(model=model, tools=tools, checkpointer=InMemorySaver())


async def scheduling() -> CompiledStateGraph[Any, Any, Any, Any]:
    return await _build("scheduling")


async def support() -> CompiledStateGraph[Any, Any, Any, Any]:
    return await _build("support")


async def sales() -> CompiledStateGraph[Any, Any, Any, Any]:
    return await _build("sales")
