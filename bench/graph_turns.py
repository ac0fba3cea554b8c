"""Graph turns through the GraphRunner with the offline model: latency, CPU and throughput.

    .venv/bin/python -m bench.graph_turns [--turns 20] [--threads 50] [--calls 100] [--sync]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres]

1. One call at a time, on SQLite and PostgreSQL, durability "async" (the default; "sync"
   too with ``--sync``): time to first token and whole-turn time (p50/p90/p99), process
   CPU per turn, and checkpoints written per turn. The thread's history grows to
   ``--turns`` caller turns, each answered through a knowledge-base tool round trip.
2. Turns per second with ``--threads`` concurrent call threads on PostgreSQL, back to
   back: the official AsyncPostgresSaver on a pool (every call waits on one lock,
   langgraph #7259) against graphs.checkpoint.PooledPostgresSaver (no lock when pooled).
3. ``--calls`` concurrent calls on PostgreSQL paced like phone calls (a caller turn every
   ``--think`` seconds, jittered): time to first token p50/p99 under that load.

CPU is this process's (``time.process_time``: event loop plus driver threads), not the
database server's. The box is shared: compare CPU per turn first, wall times second.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import random
import statistics
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import psycopg
import structlog

from dialgraph.graphs.checkpoint import checkpointer
from dialgraph.graphs.flows.support import build_support_graph
from dialgraph.graphs.model import build_chat_model
from dialgraph.graphs.runner import GraphRunner
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import CallerText, TextChunk
from dialgraph.tools import build_tools

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


def pct(values: list[float], q: int) -> float:
    """The q-th percentile (nearest rank on the sorted values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def spread(values: list[float]) -> str:
    return f"p50 {pct(values, 50):5.1f}  p90 {pct(values, 90):5.1f}  p99 {pct(values, 99):5.1f} ms"


async def checkpoints_of(runner: GraphRunner, thread_id: str) -> int:
    saver = runner.graph.checkpointer
    assert saver is not None and not isinstance(saver, bool)
    return len([c async for c in saver.alist({"configurable": {"thread_id": thread_id}})])


async def latency(settings: Settings, db: Database, url: str, label: str, turns: int, modes: tuple[str, ...]) -> None:
    for durability in modes:
        async with AsyncExitStack() as stack:
            runner = await make_runner(settings, db, url, stack, durability=durability)
            ctx = context(settings, f"lat-{uuid.uuid4().hex[:8]}")
            async for _ in runner.start(ctx):
                pass
            for i in range(3):  # warm up caches, dateparser, connections
                await one_turn(runner, ctx, QUESTIONS[i % len(QUESTIONS)])
            # As the server's lifespan does once it has loaded: without it a full collection
            # over every imported object (~100 ms) lands in whichever window it falls in.
            gc.collect()
            gc.freeze()
            before = await checkpoints_of(runner, ctx.thread_id)
            ttft, total = [], []
            cpu = time.process_time()
            for i in range(turns):
                a, b = await one_turn(runner, ctx, QUESTIONS[i % len(QUESTIONS)])
                ttft.append(a)
                total.append(b)
            cpu_ms = (time.process_time() - cpu) * 1000 / turns
            await asyncio.sleep(0.2)  # let "async" durability finish its last writes
            per_turn = (await checkpoints_of(runner, ctx.thread_id) - before) / turns
        print(
            f"{label:8s} {durability:5s} {turns} turns  first token {spread(ttft)}   whole turn {spread(total)}"
            f"   CPU {cpu_ms:4.1f} ms/turn   {per_turn:.0f} checkpoints/turn"
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

        started, cpu = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as tg:
            for ctx in ctxs:
                tg.create_task(call(ctx))
        elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    done = threads * (turns + 1)
    name = "PooledPostgresSaver (no lock)" if lock_free else "AsyncPostgresSaver (official, locked)"
    print(
        f"postgres {threads} concurrent threads x {turns + 1} turns, back to back: {done / elapsed:6.1f} turns/s"
        f"   CPU {cpu_s * 1000 / done:4.1f} ms/turn   {name}"
    )
    return done / elapsed


async def paced_calls(settings: Settings, db: Database, url: str, calls: int, turns: int, think: float) -> None:
    async with AsyncExitStack() as stack:
        runner = await make_runner(settings, db, url, stack, durability="async")
        rng = random.Random(7)
        ttft: list[float] = []
        total: list[float] = []

        async def call(ctx: CallContext) -> None:
            await asyncio.sleep(rng.uniform(0, think))  # calls arrive spread out, not all at once
            async for _ in runner.start(ctx):
                pass
            for i in range(turns):
                await asyncio.sleep(think * rng.uniform(0.5, 1.5))
                a, b = await one_turn(runner, ctx, QUESTIONS[i % len(QUESTIONS)])
                ttft.append(a)
                total.append(b)

        started, cpu = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as tg:
            for _ in range(calls):
                tg.create_task(call(context(settings, f"pc-{uuid.uuid4().hex[:8]}")))
        elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"postgres {calls} concurrent calls, a turn every ~{think:g} s ({len(ttft) / elapsed:.1f} turns/s, "
        f"CPU {cpu_s / elapsed * 100:.0f}% of a core): first token p50 {pct(ttft, 50):5.1f}  p99 {pct(ttft, 99):5.1f} ms"
        f"   whole turn p50 {statistics.median(total):5.1f}  p99 {pct(total, 99):5.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--sync", action="store_true", help='also measure durability "sync"')
    parser.add_argument("--threads", type=int, default=50, help="concurrent threads in the throughput run (0 to skip)")
    parser.add_argument("--tp-turns", type=int, default=6, help="turns per thread in the throughput run")
    parser.add_argument("--calls", type=int, default=100, help="concurrent paced calls (0 to skip)")
    parser.add_argument("--call-turns", type=int, default=4)
    parser.add_argument("--think", type=float, default=6.0, help="seconds between a call's turns (mean)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    modes = ("async", "sync") if args.sync else ("async",)

    tmp = Path(tempfile.mkdtemp())
    settings = Settings(data_dir=tmp, _env_file=None)  # type: ignore[call-arg]
    sqlite_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    db = Database(sqlite_url)
    await db.upgrade()
    await latency(settings, db, sqlite_url, "sqlite", args.turns, modes)

    name = f"dialgraph_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    pg_url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    try:
        pg_db = Database(pg_url)
        await pg_db.upgrade()
        await latency(settings, pg_db, pg_url, "postgres", args.turns, modes)
        if args.threads:
            before = await throughput(settings, pg_db, pg_url, args.threads, args.tp_turns, lock_free=False)
            after = await throughput(settings, pg_db, pg_url, args.threads, args.tp_turns, lock_free=True)
            print(f"lock removed: {after / before:.2f}x turns/s")
        if args.calls:
            await paced_calls(settings, pg_db, pg_url, args.calls, args.call_turns, args.think)
        await pg_db.aclose()
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await db.aclose()


if __name__ == "__main__":
    asyncio.run(main())
