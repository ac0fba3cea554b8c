"""``GraphLoop``: the graphs' own event loop, stepped from the app's loop; and the app's
runners on it (``serve_runners``) on the real flows, the offline model and real tools."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dialgraph.graphs.graph_loop import ApartRunner, GraphLoop
from dialgraph.graphs.runtime import serve_runners
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Appointment
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import CallerText, TextChunk, TurnRunner
from tests.fakes.graph_calls import Call, fixed_clock, graph_settings

BOOK = "I'd like to book next friday at ten, my name is Ana Lopez"


@pytest.fixture
async def graphs() -> AsyncIterator[GraphLoop]:
    loop = GraphLoop()
    yield loop
    await loop.aclose()


async def test_a_coroutine_runs_there_and_its_result_or_error_comes_back(graphs: GraphLoop) -> None:
    async def where() -> asyncio.AbstractEventLoop:
        await asyncio.sleep(0.02)  # a timer of the graph loop's own
        return asyncio.get_running_loop()

    assert await graphs.run(where()) is graphs.loop
    assert asyncio.get_running_loop() is graphs.home

    async def fails() -> None:
        raise ValueError("there")

    with pytest.raises(ValueError, match="there"):
        await graphs.run(fails())


async def test_a_chain_of_hops_runs_back_to_back_while_the_app_loop_is_busy(graphs: GraphLoop) -> None:
    """50 hops there take a handful of app-loop callbacks, not one app iteration each."""
    stop = asyncio.Event()

    async def busy() -> None:  # keeps the app loop's ready queue full, as calls do
        while not stop.is_set():
            await asyncio.sleep(0)

    spinners = [asyncio.ensure_future(busy()) for _ in range(20)]
    try:

        async def hops() -> int:
            for _ in range(50):
                await asyncio.sleep(0)
            return 50

        steps = graphs.steps
        assert await graphs.run(hops()) == 50
        assert graphs.steps - steps <= 5
    finally:
        stop.set()
        await asyncio.gather(*spinners)


async def test_a_stream_arrives_in_order_and_its_failure_with_it(graphs: GraphLoop) -> None:
    async def words() -> AsyncIterator[str]:
        for w in ("one", "two", "three"):
            await asyncio.sleep(0)
            yield w
        raise RuntimeError("model down")

    got: list[str] = []
    with pytest.raises(RuntimeError, match="model down"):
        async for w in graphs.stream(words):
            got.append(w)
    assert got == ["one", "two", "three"]


async def test_a_stream_that_cannot_start_fails_here(graphs: GraphLoop) -> None:
    def refuses() -> AsyncIterator[str]:
        raise TypeError("unknown caller input type")

    with pytest.raises(TypeError, match="unknown caller input"):
        async for _ in graphs.stream(refuses):
            pass


async def test_cancelling_the_reader_cancels_the_run_there_and_waits_for_it(graphs: GraphLoop) -> None:
    unwound: list[str] = []
    started = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
                await asyncio.sleep(0.01)
        finally:
            await asyncio.sleep(0.05)  # unwinding takes a while there
            unwound.append("there")

    async def read() -> None:
        async for n in graphs.stream(endless):
            if n == 2:
                started.set()

    task = asyncio.ensure_future(read())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert unwound == ["there"]  # the reader's cancel returned only after the run unwound


async def test_closing_cancels_what_still_runs_there() -> None:
    graphs = GraphLoop()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            graphs.home.call_soon_threadsafe(cancelled.set)
            raise

    graphs.loop.call_soon_threadsafe(lambda: graphs.loop.create_task(forever()))
    await asyncio.sleep(0.05)
    await graphs.aclose()
    assert cancelled.is_set()
    assert graphs.loop.is_closed()


async def appointments(db: Database) -> int:
    async with db.sessionmaker() as s:
        return int(await s.scalar(select(func.count()).select_from(Appointment)) or 0)


async def test_the_apps_runners_answer_preempt_and_read_on_their_own_loop(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    settings: Settings = graph_settings(tmp_path, database_url, graph_loop="own")
    async with AsyncExitStack() as stack:
        runners: dict[str, TurnRunner] = await serve_runners(settings, db, stack, clock=fixed_clock)
        runner = runners["scheduling"]
        assert isinstance(runner, ApartRunner)
        call = Call.open(runner, settings, "scheduling", thread_id="apart")  # type: ignore[arg-type]
        assert (await call.start()).text
        await call.say("Hi, I'd like to book an appointment please")
        before = await runner.read_state("apart")

        # a preemptive run stopped before the booking, then discarded: nothing reaches the thread
        run = runner.preempt(call.ctx, CallerText(BOOK))
        chunks: list[str] = []

        async def drain() -> None:
            async for event in run:
                if isinstance(event, TextChunk):
                    chunks.append(event.text)

        task = asyncio.ensure_future(drain())
        waiting = asyncio.ensure_future(runner.graphs.run(run.inner.waiting.wait()))
        await asyncio.wait_for(waiting, 30)
        assert run.inner.held_back == ("book_appointment",)
        run.discard()
        await asyncio.wait_for(task, 10)
        after = await runner.read_state("apart")
        assert after.config == before.config
        assert await appointments(db) == 0

        # the same words confirmed as a turn book for real, through the tools' own engine
        reply = await call.say(BOOK)
        assert "Friday" in reply.text
        assert await appointments(db) == 1
        history = await runner.read_history("apart")
        assert history[0].config == (await runner.read_state("apart")).config
