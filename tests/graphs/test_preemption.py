"""Preemptive replies (``GraphRunner.preempt``) on the real flows, the offline model and real
tools, on SQLite and PostgreSQL: a discarded run leaves no checkpoint and no tool side
effect; a confirmed one ends exactly where ``respond`` would have."""

from __future__ import annotations

import asyncio

from sqlalchemy import delete, func, select

from dialgraph.graphs.runner import GraphRunner, PreemptiveReply
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Appointment
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import CallerText, EndCallRequest, TextChunk
from tests.fakes.graph_calls import Call

BOOK = "I'd like to book next friday at ten, my name is Ana Lopez"
BOOKED = "Friday the 27th of November at 10 in the morning"


async def appointments(db: Database) -> int:
    async with db.sessionmaker() as s:
        return int(await s.scalar(select(func.count()).select_from(Appointment)) or 0)


async def head(runner: GraphRunner, call: Call) -> tuple[object, int]:
    """The thread's head checkpoint id and how many messages it holds."""
    snapshot = await runner.graph.aget_state({"configurable": {"thread_id": call.ctx.thread_id}})
    return snapshot.config["configurable"].get("checkpoint_id"), len(snapshot.values.get("messages", []))


async def opened(runners: dict[str, GraphRunner], settings: Settings, thread: str) -> Call:
    call = Call.open(runners["scheduling"], settings, "scheduling", thread_id=thread)
    await call.start()
    await call.say("Hi, I'd like to book an appointment please")
    return call


class Drained:
    """Iterates a preemptive reply in a task, keeping what it streams."""

    def __init__(self, reply: PreemptiveReply) -> None:
        self.reply = reply
        self.chunks: list[str] = []
        self.events: list[object] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for event in self.reply:
            self.events.append(event)
            if isinstance(event, TextChunk):
                self.chunks.append(event.text)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    async def until_waiting(self) -> None:
        waiting = asyncio.ensure_future(self.reply.waiting.wait())
        await asyncio.wait({waiting, self.task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert self.reply.waiting.is_set(), "the run never reached its decision point"


async def test_a_discarded_run_leaves_no_checkpoint_and_no_booking(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    runner = runners["scheduling"]
    call = await opened(runners, flow_settings, "discard")
    before = await head(runner, call)
    run = Drained(runner.preempt(call.ctx, CallerText(BOOK)))
    await run.until_waiting()
    assert run.reply.held_back == ("book_appointment",)  # it stopped before the booking
    run.reply.discard()
    await asyncio.wait_for(run.task, 10)
    assert await head(runner, call) == before  # the thread is as it was
    assert await appointments(db) == 0
    # the thread answers the real turn as if nothing had happened
    assert BOOKED in (await call.say(BOOK)).text
    assert await appointments(db) == 1


async def test_a_confirmed_run_books_and_ends_where_respond_would(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    runner = runners["scheduling"]
    plain = await opened(runners, flow_settings, "plain")
    expected = await plain.say(BOOK)
    assert BOOKED in expected.text
    async with db.sessionmaker() as s, s.begin():
        await s.execute(delete(Appointment))

    call = await opened(runners, flow_settings, "confirm")
    before = await head(runner, call)
    run = Drained(runner.preempt(call.ctx, CallerText(BOOK)))
    await run.until_waiting()
    assert await appointments(db) == 0  # nothing booked before the turn is confirmed
    assert await head(runner, call) == before
    run.reply.confirm()
    await asyncio.wait_for(run.task, 10)
    assert run.text == expected.text
    assert await appointments(db) == 1
    after_id, after_messages = await head(runner, call)
    assert after_id != before[0] and after_messages == (await head(runner, plain))[1]  # as respond left it
    # the next turn goes on from the confirmed one
    bye = await call.say("No thanks, that's all. Bye!")
    assert bye.end is not None and "Goodbye" in bye.text


async def test_read_only_tools_run_early_and_a_cancelled_run_writes_nothing(
    runners: dict[str, GraphRunner], flow_settings: Settings, db: Database
) -> None:
    runner = runners["scheduling"]
    call = await opened(runners, flow_settings, "cancel")
    before = await head(runner, call)
    run = Drained(runner.preempt(call.ctx, CallerText("Could I come in on Tuesday? Which times are free?")))
    await run.until_waiting()
    assert run.reply.held_back == ()  # find_free_slots only reads: it ran early
    assert "morning" in run.text or "afternoon" in run.text, run.text
    run.task.cancel()  # the caller went on talking: the session cancels the run
    await asyncio.gather(run.task, return_exceptions=True)
    assert await head(runner, call) == before
    assert (await call.say("Tuesday at two please")).text  # the thread's lock was released


async def test_a_confirmed_end_of_call_comes_after_the_text(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    runner = runners["scheduling"]
    call = await opened(runners, flow_settings, "bye")
    run = Drained(runner.preempt(call.ctx, CallerText("No thanks, that's all. Bye!")))
    await run.until_waiting()
    assert run.reply.held_back == ()  # end_call only changes the graph's state
    assert not any(isinstance(e, EndCallRequest) for e in run.events)  # decisions wait for the confirmation
    run.reply.confirm()
    await asyncio.wait_for(run.task, 10)
    assert isinstance(run.events[-1], EndCallRequest) and "Goodbye" in run.text
