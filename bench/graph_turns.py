"""Graph turns through the GraphRunner with the offline model: latency and throughput.

    .venv/bin/python bench/graph_turns.py [--turns 20] [--threads 50] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

1. Time to first token and whole-turn time, median and p90, on SQLite and PostgreSQL,
   with durability "async" (the default) and "sync"; the thread's history grows to
   ``--turns`` caller turns (each answer is a knowledge-base tool round trip).
2. Turns per second with ``--threads`` concurrent call threads on PostgreSQL: the official
   AsyncPostgresSaver on a pool (every call waits on one lock, langgraph #7259) against
   graphs.checkpoint.PooledPostgresSaver (no lock for pooled connections).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import psycopg
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.checkpoint import checkpointer  # noqa: E402
from graphs.context import CallContext  # noqa: E402
from graphs.events import CallerText, TextChunk  # noqa: E402
from graphs.flows.support import build_support_graph  # noqa: E402
from graphs.model import build_chat_model  # noqa: E402
from graphs.runner import GraphRunner  # noqa: E402
from server.db import Database  # noqa: E402
from server.settings import Settings  # noqa: E402
from tools import build_tools  # noqa: E402

QUESTIONS = (
    "Is there parking?",
    "What are your opening hours?",
    "Where are you located?",
    "Do you offer payment plans?",
)


async def one_turn(runner: GraphRunner, ctx: CallContext, text: str) -> tuple[float, float]:
    started = time.perf_counter()
    first: float | None = None
    async for event in runner.respond(ctx, CallerText(text)):
        if first is None and isinstance(event, TextChunk):
            first = time.perf_counter()
    end = time.perf_counter()
    return ((first or end) - started) * 1000, (end - started) * 1000


def context(settings: Settings, thread: str) -> CallContext:
    return CallContext(
        call_sid=f"CA{thread}",
        thread_id=thread,
        caller="+15551234567",
        called="",
        flow="support",
        flow_settings=settings.flows["support"],
    )


async def make_runner(
    settings: Settings, db: Database, url: str, stack: AsyncExitStack, *, durability: str, lock_free: bool = True
) -> GraphRunner:
    saver = await checkpointer(url, stack=stack, lock_free=lock_free, pool_size=20)
    graph = build_support_graph(
        model=build_chat_model("offline", settings=settings), tools=build_tools(db=db), checkpointer=saver
    )
    return GraphRunner(graph, durability=durability)  # type: ignore[arg-type]


async def latency(settings: Settings, db: Database, url: str, label: str, turns: int) -> None:
    for durability in ("async", "sync"):
        async with AsyncExitStack() as stack:
            runner = await make_runner(settings, db, url, stack, durability=durability)
            ctx = context(settings, f"lat-{uuid.uuid4().hex[:8]}")
            async for _ in runner.start(ctx):
                pass
            for i in range(3):  # warm up caches, dateparser, connections
                await one_turn(runner, ctx, QUESTIONS[i % len(QUESTIONS)])
            ttft, total = [], []
            for i in range(turns):
                a, b = await one_turn(runner, ctx, QUESTIONS[i % len(QUESTIONS)])
                ttft.append(a)
                total.append(b)
        print(
            f"{label:10s} durability={durability:5s} turns={turns:3d}  first token: median {statistics.median(ttft):5.1f} ms"
            f"  p90 {_p90(ttft):5.1f} ms   whole turn: median {statistics.median(total):5.1f} ms  p90 {_p90(total):5.1f} ms"
        )


async def throughput(settings: Settings, db: Database, url: str, threads: int, turns: int, *, lock_free: bool) -> float:
    async with AsyncExitStack() as stack:
        runner = await make_runner(settings, db, url, stack, durability="async", lock_free=lock_free)
        ctxs = [context(settings, f"tp-{uuid.uuid4().hex[:8]}") for _ in range(threads)]

        async def call(ctx: CallContext) -> None:
            async for _ in runner.start(ctx):
                pass
            for i in range(turns):
                await one_turn(runner, ctx, QUESTIONS[i % len(QUESTIONS)])

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for ctx in ctxs:
                tg.create_task(call(ctx))
        elapsed = time.perf_counter() - started
    rate = threads * (turns + 1) / elapsed
    name = "PooledPostgresSaver (no lock)" if lock_free else "AsyncPostgresSaver (official, locked)"
    print(f"postgres   {threads} concurrent threads x {turns + 1} turns: {rate:6.1f} turns/s  {name}")
    return rate


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else values[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--tp-turns", type=int, default=6, help="turns per thread in the throughput run")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    tmp = Path(tempfile.mkdtemp())
    settings = Settings(data_dir=tmp, _env_file=None)  # type: ignore[call-arg]
    sqlite_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    db = Database(sqlite_url)
    await db.upgrade()
    await latency(settings, db, sqlite_url, "sqlite", args.turns)

    name = f"dialgraph_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    pg_url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    try:
        pg_db = Database(pg_url)
        await pg_db.upgrade()
        await latency(settings, pg_db, pg_url, "postgres", args.turns)
        before = await throughput(settings, pg_db, pg_url, args.threads, args.tp_turns, lock_free=False)
        after = await throughput(settings, pg_db, pg_url, args.threads, args.tp_turns, lock_free=True)
        print(f"lock removed: {after / before:.2f}x turns/s")
        await pg_db.aclose()
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await db.aclose()


if __name__ == "__main__":
    asyncio.run(main())
