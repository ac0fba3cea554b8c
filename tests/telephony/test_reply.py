"""One reply as an object: it plays through a real ``AudioPacer``, hears Twilio's mark
echoes, and ends ``Played`` (with its request) or ``Interrupted`` at what was heard, with
the checkpoint repaired and the transcript written (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog

from dialgraph.server.core.call_store import get_call, record_call
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.reply_heard import ReplyProgressWriter
from dialgraph.server.core.turns import EndCallRequest, RunnerEvent, TextChunk
from dialgraph.telephony.call.heard import HeardText
from dialgraph.telephony.call.pacer import AudioPacer, StreamClosedByServer
from dialgraph.telephony.call.reply import AudioStarted, Finished, Interrupted, Played, Reply, ReplyContext, ReplyEvent
from dialgraph.telephony.simulator.scripted import ScriptedRunner, ScriptedSynthesizer
from tests.telephony.harness import WAIT_S, new_sids


@dataclass
class Rig:
    """One call's reply context over a pacer whose messages land in ``sent``."""

    db: Database
    call_sid: str
    runner: ScriptedRunner
    env: ReplyContext
    tg: asyncio.TaskGroup
    progress: ReplyProgressWriter
    sent: list[dict[str, Any]] = field(default_factory=list)
    events: list[ReplyEvent] = field(default_factory=list)
    recorded: list[CallEvent] = field(default_factory=list)

    def marks(self) -> list[str]:
        return [m["mark"]["name"] for m in self.sent if m["event"] == "mark"]

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not done():
                await asyncio.sleep(0.005)

    async def stored(self) -> str | None:
        await self.progress.flush_now()
        call = await get_call(self.db, self.call_sid)
        assert call is not None
        return call.reply_heard


@asynccontextmanager
async def rig(db: Database, runner: ScriptedRunner) -> AsyncIterator[Rig]:
    call_sid, stream_sid = new_sids()
    await record_call(db, sid=call_sid, direction="inbound", from_number="", to_number="", flow="x", thread_id=call_sid)
    ctx = CallContext(call_sid, call_sid, "+14155550100", "+15550009999", "x", FlowSettings())
    sent: list[dict[str, Any]] = []
    events: list[ReplyEvent] = []
    recorded: list[CallEvent] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    async def close(code: int) -> None:
        pass

    ticks = itertools.count()
    pacer = AudioPacer(
        stream_sid=stream_sid,
        send=send,
        close=close,
        lead_s=0.2,
        message_bytes=800,
        clock=lambda: float(next(ticks)),  # a second passes per reading: nothing ever waits
    )
    log = structlog.get_logger()
    async with ReplyProgressWriter(db, interval_s=60) as progress:
        heard = HeardText(ctx=ctx, runner=runner, progress=progress, record=recorded.append, log=log)
        env = ReplyContext(
            ctx=ctx,
            synthesizer=ScriptedSynthesizer(),
            pacer=pacer,
            heard=heard,
            record=recorded.append,
            report=events.append,
            log=log,
            mark_every_bytes=800,
            clock=lambda: 0.0,
        )
        writer = asyncio.create_task(pacer.run())
        try:
            async with asyncio.TaskGroup() as tg:
                yield Rig(db, call_sid, runner, env, tg, progress, sent, events, recorded)
        finally:
            pacer.close()
            try:
                await writer
            except StreamClosedByServer:
                pass


async def test_a_reply_that_plays_to_the_end_is_played_with_its_request(db: Database) -> None:
    runner = ScriptedRunner(greeting=[TextChunk("One two. "), TextChunk("Three."), EndCallRequest("done")])
    async with rig(db, runner) as r:
        reply = Reply(r.env, generation=1, trigger="greeting")
        reply.start(r.tg, lambda: runner.start(r.env.ctx))
        await r.until(lambda: len(r.marks()) == 3)  # one mark a word: "One", "two.", "Three."
        assert r.marks() == ["g1.0", "g1.1", "g1.2"]
        assert await r.stored() == ""  # its audio began: nothing heard yet
        for name in r.marks():
            reply.mark_echoed(name)
        outcome = await reply
        assert await r.stored() is None  # played to the end: nothing to repair
    assert outcome == Played("One two. Three.", EndCallRequest("done"))
    assert reply.done() and reply.outcome == outcome
    assert r.events == [AudioStarted(reply), Finished(reply, outcome)]
    assert [(e.kind, e.role, e.text, bool(e.interrupted)) for e in r.recorded] == [
        ("turn", "agent", outcome.text, False)
    ]
    assert runner.heard == []


async def test_a_held_reply_sends_nothing_until_released_then_plays_in_order(db: Database) -> None:
    runner = ScriptedRunner(greeting=[TextChunk("One two. "), TextChunk("Three.")])
    async with rig(db, runner) as r:
        reply = Reply(r.env, generation=1, trigger="caller", held=True)
        reply.start(r.tg, lambda: runner.start(r.env.ctx))
        await r.until(lambda: reply.synth_task is not None and reply.synth_task.done())  # all synthesised
        assert r.sent == [] and r.events == []  # nothing reached the caller
        assert reply.timing.first_tts_audio_at is not None and reply.timing.first_audio_at is None
        reply.release()
        await r.until(lambda: len(r.marks()) == 3)
        assert r.marks() == ["g1.0", "g1.1", "g1.2"]
        media = [m for m in r.sent if m["event"] == "media"]
        assert media and r.sent.index(media[0]) < r.sent.index(next(m for m in r.sent if m["event"] == "mark"))
        for name in r.marks():
            reply.mark_echoed(name)
        outcome = await reply
    assert outcome == Played("One two. Three.", None)
    assert r.events == [AudioStarted(reply), Finished(reply, outcome)]


async def test_a_released_reply_sends_what_comes_after_at_once(db: Database) -> None:
    release = asyncio.Event()

    async def run() -> AsyncIterator[RunnerEvent]:  # the rest of the reply comes after the release
        yield TextChunk("One two. T")  # the next visible character ends the first phrase
        await release.wait()
        yield TextChunk("hree.")

    async with rig(db, ScriptedRunner()) as r:
        reply = Reply(r.env, generation=1, trigger="caller", held=True)
        reply.start(r.tg, run)
        await r.until(lambda: reply.timing.first_tts_audio_at is not None)
        assert r.sent == []
        reply.release()
        await r.until(lambda: len(r.marks()) == 2)  # "One", "two." went out on release
        release.set()
        await r.until(lambda: len(r.marks()) == 3)  # "Three." follows as it is synthesised
        for name in r.marks():
            reply.mark_echoed(name)
        assert await reply == Played("One two. Three.", None)


async def test_a_discarded_held_reply_sends_nothing_and_repairs_nothing(db: Database) -> None:
    runner = ScriptedRunner(greeting="one two three four five six.")
    async with rig(db, runner) as r:
        reply = Reply(r.env, generation=1, trigger="caller", held=True)
        reply.start(r.tg, lambda: runner.start(r.env.ctx))
        await r.until(lambda: reply.timing.first_tts_audio_at is not None)
        reply.discard()
        assert await reply == Interrupted("")
        assert reply.cut and all(t.done() or t.cancelling() for t in reply.tasks)
    assert r.sent == []  # no audio and no clear: the caller never heard it
    assert runner.heard == [] and r.recorded == [] and r.events == []  # no repair, no transcript
    assert await r.stored() is None


async def test_an_interrupted_reply_clears_and_repairs_the_history_to_what_was_heard(db: Database) -> None:
    runner = ScriptedRunner(greeting="one two three four five six.")
    async with rig(db, runner) as r:
        reply = Reply(r.env, generation=1, trigger="greeting")
        reply.start(r.tg, lambda: runner.start(r.env.ctx))
        waiter = asyncio.create_task(reply.wait())
        await r.until(lambda: len(r.marks()) >= 3)
        reply.mark_echoed("g1.0")
        reply.mark_echoed("g1.1")
        assert await r.stored() == "" and r.events == [AudioStarted(reply)]  # no phrase finished yet
        waiter.cancel()  # a waiter that gives up leaves the reply alone
        reply.interrupt()
        reply.mark_echoed("g1.2")  # returned by Twilio's clear: proves nothing
        outcome = await reply
        assert outcome == Interrupted("one two")
        assert reply.cut
        await r.until(lambda: r.sent[-1]["event"] == "clear")
    # Leaving the task group awaited the repair.
    assert runner.heard == ["one two"]
    assert r.events == [AudioStarted(reply), Finished(reply, outcome)]
    assert reply.timing.interrupted
    assert [(e.kind, e.text, e.interrupted) for e in r.recorded] == [("turn", "one two", True)]
    assert await r.stored() is None  # repaired: nothing left for another instance
