"""Graph runs on an event loop of their own (``graph_loop = "own"``; ``"main"``, the default, runs them on the app's).

Why: the media path keeps the app's loop busy (every call's 20 ms frames, the vendors'
sockets), and one LangGraph turn takes ~45 loop iterations before its first token (a task
per node, shielded callback ends, the background executor; counted by wrapping
``BaseEventLoop._run_once`` around ``bench.graph_turns``' runner). Each iteration of the
app's loop runs every call's ready callbacks, so at 250 calls one took 1-6 ms and a turn
waited ~45-270 ms for the loop alone. ``GraphLoop`` gives the graphs a loop of their own,
stepped from the app's loop (see there): the hops run back to back.

Not a thread: a thread with its own loop was tried first (``bench.load_whole``, 100 and
160 calls on a slow box). Replies started sooner, but the underruns rose several-fold:
while the graph thread held the GIL, every syscall the media loop made handed it over and
waited up to the 5 ms switch interval to get it back.

Not the default either (``bench.load_whole --calls 100 160``, 2026-12-07, alternating with
``DIALGRAPH_GRAPH_LOOP=main``). Below saturation (100 calls, ~80 % of the core) the
service's share p99 fell from 755-1272 to 520-529 ms and end of speech -> audio p99 from
1336-1848 to 1157-1173 ms, with underruns alike (0.27 and 1.17 against 0.43-0.65 per
agent-minute). Near saturation (160 calls, ~90 %) the underruns went from 1.1-4.6 to
10.8-36: the graphs' work (~30 % of the core there, timed per step) runs in clumps of up
to ``budget_ms`` and takes the core from the pacers in those clumps, where the app's loop
alone interleaves it a callback at a time. A 2 ms budget starved the graphs (first token
p50 1.4 s); capping their share of the wall clock, or falling back to one graph iteration
per step when the app's iterations grew long, did not bring the underruns down.

What lives there: the runners, their checkpointer, the tools' database engine (SQLAlchemy
and aiosqlite/psycopg bind their connections to the loop that opened them), the model's
HTTP client. What crosses: a turn's events (``stream``: in order), ``record_heard`` and
state reads (``run``), a preemptive reply's decision. Cancelling the task that iterates a
bridged stream cancels the run on the graph loop and waits for it to unwind, as it would
on one loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any, Protocol, TypeVar, runtime_checkable

from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StateSnapshot

from dialgraph.graphs.runner import GraphRunner, PreemptiveReply
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.turns import CallerInput, CallerText, RunnerEvent, TurnUsage

T = TypeVar("T")

_ITEM, _END, _FAIL = 0, 1, 2


class GraphLoop:
    """An asyncio loop of the graphs' own, stepped from the app's loop in the same thread.

    Its selector's epoll descriptor is watched by the app's loop (readable when any of its
    sockets, or its self-pipe, is); its timers get one app timer. Each wakeup runs its
    iterations back to back, for at most ``budget_ms``, so a graph's chain of hops (a task
    per node, callback ends...) runs in one app-loop callback instead of one app-loop
    iteration per hop. Past the budget the rest waits for the app loop's next iteration,
    and the frames queued meanwhile go first. No second thread, so no GIL to fight over.

    Private parts of ``asyncio.BaseEventLoop`` it leans on (as ``nest_asyncio`` does):
    ``_run_once``, ``_ready``, ``_scheduled``, ``_selector``, the asyncgen hooks.
    """

    def __init__(self, *, budget_ms: float = 10.0) -> None:
        self.home = asyncio.get_running_loop()
        self.loop = asyncio.SelectorEventLoop()  # never uvloop: it is stepped, not run
        self.loop._thread_id = threading.get_ident()  # type: ignore[attr-defined]  # "running" here
        self._budget_s = budget_ms / 1000
        self._fd = self.loop._selector.fileno()  # type: ignore[attr-defined]
        self.home.add_reader(self._fd, self._step)
        self._soon: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.steps = 0  # app-loop callbacks that ran the graph loop (tests count them)

    # --- stepping --------------------------------------------------------------------------
    def _has_work(self) -> bool:
        sub: Any = self.loop
        return bool(sub._ready) or bool(sub._scheduled and sub._scheduled[0]._when <= sub.time())

    def _step(self) -> None:
        """Run the graph loop's iterations while it has work and the budget lasts."""
        if self._closed:
            return
        sub: Any = self.loop
        hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=sub._asyncgen_firstiter_hook, finalizer=sub._asyncgen_finalizer_hook)
        asyncio._set_running_loop(sub)
        deadline = time.monotonic() + self._budget_s
        self.steps += 1
        try:
            while True:
                sub.call_soon(_nothing)  # so the selector is polled, never waited on
                sub._run_once()
                if not self._has_work() or time.monotonic() >= deadline:
                    break
        finally:
            asyncio._set_running_loop(self.home)
            sys.set_asyncgen_hooks(*hooks)
        self._arm()

    def _arm(self) -> None:
        """Come back at the next app iteration if work is left, else at the next timer."""
        if self._has_work():
            if self._soon is None:
                self._soon = self.home.call_soon(self._on_soon)
            return
        scheduled = self.loop._scheduled  # type: ignore[attr-defined]
        when = min((h._when for h in scheduled if not h._cancelled), default=None)
        if when is None:
            return
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self.home.call_at(when, self._on_timer)

    def _on_soon(self) -> None:
        self._soon = None
        self._step()

    def _on_timer(self) -> None:
        self._timer = None
        self._step()

    # --- crossing ----------------------------------------------------------------------------
    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``await coro`` on the graph loop. Cancelling the caller cancels it there."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def stream(self, make: Callable[[], AsyncIterator[T]]) -> AsyncGenerator[T, None]:
        """Iterate ``make()`` on the graph loop; its items arrive here, in order. Closing or
        cancelling this generator cancels the iteration there and waits until it unwound."""
        home = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        pump = _Pump(make, home, queue)
        self.loop.call_soon_threadsafe(pump.spawn)
        ended = False
        try:
            while True:
                kind, value = await queue.get()
                if kind == _ITEM:
                    yield value
                    continue
                ended = True
                if kind == _FAIL:
                    raise value
                return
        finally:
            if not ended:
                self.loop.call_soon_threadsafe(pump.cancel)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(asyncio.wrap_future(pump.unwound))

    async def aclose(self) -> None:
        """Cancel what still runs there, let it unwind, and close the loop."""
        if self._closed:
            return

        async def wind_down() -> None:
            me = asyncio.current_task()
            left = [t for t in asyncio.all_tasks() if t is not me]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            await asyncio.get_running_loop().shutdown_asyncgens()

        try:
            await self.run(wind_down())
        finally:
            self._closed = True
            self.home.remove_reader(self._fd)
            for handle in (self._soon, self._timer):
                if handle is not None:
                    handle.cancel()
            self.loop._thread_id = None  # type: ignore[attr-defined]
            self.loop.close()


def _nothing() -> None:
    pass


class _Pump:
    """The graph-loop side of one bridged stream."""

    def __init__(
        self, make: Callable[[], AsyncIterator[Any]], home: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]
    ) -> None:
        self._make = make
        self._home = home
        self._queue = queue
        self._task: asyncio.Task[None] | None = None
        self.unwound: concurrent.futures.Future[None] = concurrent.futures.Future()

    def spawn(self) -> None:  # on the graph loop, before any ``cancel``
        self._task = asyncio.get_running_loop().create_task(self._pump())
        self._task.add_done_callback(lambda _: self.unwound.set_result(None))

    def cancel(self) -> None:  # on the graph loop
        if self._task is not None:
            self._task.cancel()

    def _post(self, kind: int, value: Any) -> None:
        # The graph loop is stepped in the app loop's thread: the item goes straight into the
        # reader's queue (its waiter's wakeup is scheduled on the app loop), no self-pipe write.
        if not self._home.is_closed():
            self._queue.put_nowait((kind, value))

    async def _pump(self) -> None:
        events: AsyncIterator[Any] | None = None
        try:
            events = self._make()  # may raise at once (a caller input it cannot take)
            async for item in events:
                self._post(_ITEM, item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the run's own failure: raised to the consumer, as on one loop
            self._post(_FAIL, exc)
            return
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        self._post(_END, None)


@runtime_checkable
class GraphReader(Protocol):
    """A runner whose flow graph and checkpoints can be read (the dashboard, the analysis):
    ``GraphRunner`` on the app's loop, or ``ApartRunner`` reading on the graphs' own."""

    @property
    def graph(self) -> CompiledStateGraph[Any, Any, Any, Any]: ...

    async def read_state(self, thread_id: str) -> StateSnapshot: ...

    async def read_history(self, thread_id: str) -> list[StateSnapshot]: ...


class ApartRunner:
    """A ``GraphRunner`` built on a ``GraphLoop``, for sessions on another loop: the same
    ``TurnRunner``, preemption and ``GraphReader`` API; every run happens there."""

    def __init__(self, inner: GraphRunner, graphs: GraphLoop) -> None:
        self.inner = inner
        self.graphs = graphs

    @property
    def graph(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        return self.inner.graph

    def start(self, ctx: CallContext) -> AsyncIterator[RunnerEvent]:
        return self.graphs.stream(lambda: self.inner.start(ctx))

    def respond(self, ctx: CallContext, turn: CallerInput) -> AsyncIterator[RunnerEvent]:
        return self.graphs.stream(lambda: self.inner.respond(ctx, turn))

    async def record_heard(self, ctx: CallContext, heard_text: str) -> None:
        await self.graphs.run(self.inner.record_heard(ctx, heard_text))

    def early_tool(self, name: str) -> bool:
        return self.inner.early_tool(name)

    def preempt(self, ctx: CallContext, turn: CallerText) -> ApartPreemption:
        return ApartPreemption(self.inner.preempt(ctx, turn), self.graphs)

    async def read_state(self, thread_id: str) -> StateSnapshot:
        return await self.graphs.run(self.inner.read_state(thread_id))

    async def read_history(self, thread_id: str) -> list[StateSnapshot]:
        return await self.graphs.run(self.inner.read_history(thread_id))


class ApartPreemption:
    """A ``PreemptiveReply`` running on the graph loop; the decision is handed over to it."""

    def __init__(self, inner: PreemptiveReply, graphs: GraphLoop) -> None:
        self.inner = inner
        self.graphs = graphs

    @property
    def wasted(self) -> list[TurnUsage]:
        return self.inner.wasted

    def confirm(self) -> None:
        self.graphs.loop.call_soon_threadsafe(self.inner.confirm)

    def discard(self) -> None:
        self.graphs.loop.call_soon_threadsafe(self.inner.discard)

    def __aiter__(self) -> AsyncIterator[RunnerEvent]:
        return self.graphs.stream(self.inner.__aiter__)
