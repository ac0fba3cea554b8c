"""Composition of the conversation side: model + tools + checkpointer -> one runner per flow."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from contextlib import AsyncExitStack

import structlog
from langchain_core.language_models import BaseChatModel

from dialgraph.graphs.checkpoint import checkpointer
from dialgraph.graphs.checkpoint_serde import serializer_for
from dialgraph.graphs.graph_loop import ApartRunner, GraphLoop
from dialgraph.graphs.model import build_chat_model
from dialgraph.graphs.recall import build_recall
from dialgraph.graphs.registry import graph_factory
from dialgraph.graphs.runner import GraphRunner
from dialgraph.graphs.spoken_time import parse_when
from dialgraph.server.core.db import Database
from dialgraph.server.core.redaction import redactor_for
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import TurnRunner
from dialgraph.tools import build_tools

log = structlog.get_logger(__name__)

# Phrases that reach dateparser (the rest of ``parse_when`` is plain regex work).
_WARM_PHRASES = ("in two weeks at ten", "27/11 at half past two")


def warm_date_parsing() -> None:
    """Parse a few dates once so dateparser loads its English data and compiles its
    patterns now (~150 ms on first use) rather than during the first caller's turn.
    Blocking: run it in a thread."""
    now = dt.datetime.now(dt.UTC)
    for phrase in _WARM_PHRASES:
        parse_when(phrase, now)


async def build_runners(
    settings: Settings,
    db: Database,
    stack: AsyncExitStack,
    *,
    clock: Callable[[], dt.datetime] | None = None,
    model: BaseChatModel | None = None,
    checkpoint_url: str | None = None,
) -> dict[str, GraphRunner]:
    """One ``GraphRunner`` per configured flow (keyed by flow name), sharing one model,
    one set of tools and one checkpointer on ``settings.effective_database_url``; the
    checkpointer's connections close with ``stack``."""
    chat_model = model or build_chat_model(settings.model_spec, settings=settings, clock=clock)
    await asyncio.to_thread(warm_date_parsing)  # the offline model and the spoken-time tools use it
    tools = build_tools(db=db, clock=clock, redactor=redactor_for(settings.redaction))
    saver = await checkpointer(
        checkpoint_url or settings.effective_database_url,
        stack=stack,
        pool_size=settings.checkpoint_pool_size,
        serde=serializer_for(settings),
    )
    recall = build_recall(db=db, saver=saver, clock=clock)
    runners: dict[str, GraphRunner] = {}
    for name, flow in settings.flows.items():
        factory = graph_factory(flow.graph or name)
        graph = factory(model=chat_model, tools=tools, checkpointer=saver, clock=clock)
        runners[name] = GraphRunner(graph, durability=settings.durability, recall=recall)
    log.info("runners_ready", flows=sorted(runners), model=settings.model_spec, durability=settings.durability)
    return runners


async def serve_runners(
    settings: Settings, db: Database, stack: AsyncExitStack, *, clock: Callable[[], dt.datetime] | None = None
) -> dict[str, TurnRunner]:
    """The app's runners. ``graph_loop = "main"`` (the default), or a database in memory
    (one engine only sees it): ``build_runners`` on the app's loop, with ``db``. ``"own"``:
    built and run on a ``GraphLoop``, with an engine of their own on ``db``'s URL (the
    tools' and ``recall``'s) and their own checkpointer; both close there, then the loop,
    with ``stack``."""
    if settings.graph_loop == "main" or db.url.endswith(":memory:"):
        return dict(await build_runners(settings, db, stack, clock=clock))
    graphs = GraphLoop()
    stack.push_async_callback(graphs.aclose)
    there = AsyncExitStack()

    async def build() -> dict[str, GraphRunner]:
        graph_db = Database(db.url)
        there.push_async_callback(graph_db.aclose)
        return await build_runners(settings, graph_db, there, clock=clock)

    async def close() -> None:
        await graphs.run(there.aclose())

    try:
        runners = await graphs.run(build())
    finally:
        stack.push_async_callback(close)
    return {name: ApartRunner(runner, graphs) for name, runner in runners.items()}
