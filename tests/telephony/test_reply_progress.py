"""A resumed stream reads the heard text, repairs the checkpoint, and only then clears the
text, if it still holds what was read: a failed repair (or a crash) leaves it in the row for
the next stream, and a newer value is never cleared (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import event

from dialgraph.server.core.call_store import get_call, record_call, update_call
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.settings import FlowSettings
from dialgraph.server.core.turns import CallSignal, TextChunk
from dialgraph.telephony.call.pacer import OutboundPacer
from dialgraph.telephony.call.playback import PlaybackTracker
from dialgraph.telephony.call.reply import ReplyPipeline
from dialgraph.telephony.call.reply_progress import ReplyProgressWriter, clear_heard, peek_heard
from dialgraph.telephony.call.state import CallState
from tests.fakes.scripted_runner import ScriptedRunner
from tests.fakes.speech import ScriptedSynthesizer
from tests.telephony.harness import new_sids

HEARD = "We are open Monday to"
RECONNECTED = "Sorry, we were cut off."


@dataclass
class ShakyRunner(ScriptedRunner):
    """Its first ``heard_failures`` checkpoint repairs raise (a checkpoint store that is down)."""

    heard_failures: int = 0

    async def record_heard(self, ctx: CallContext, heard_text: str) -> None:
        if self.heard_failures:
            self.heard_failures -= 1
            raise RuntimeError("checkpoint store unavailable")
        await super().record_heard(ctx, heard_text)


async def new_call(db: Database) -> str:
    sid = new_sids()[0]
    await record_call(db, sid=sid, direction="inbound", from_number="", to_number="", flow="scheduling", thread_id=sid)
    return sid


async def stored(db: Database, sid: str) -> str | None:
    call = await get_call(db, sid)
    assert call is not None
    return call.reply_heard


def new_pipeline(
    sid: str,
    runner: ScriptedRunner,
    progress: ReplyProgressWriter,
    recorded: list[CallEvent],
    tracker: PlaybackTracker | None = None,
) -> ReplyPipeline:
    """The reply pipeline of a new stream of call ``sid``, as ``CallSession`` builds it."""

    async def nothing(*_: object) -> None:
        return None

    state = CallState(call_sid=sid, stream_sid="MZ1")
    out = OutboundPacer(
        stream_sid="MZ1",
        send=nothing,
        close=nothing,
        current=lambda: state.generation,
        on_frame=lambda *_: None,
        on_reply_end=lambda _: None,
    )
    return ReplyPipeline(
        ctx=CallContext(sid, sid, "+14155550100", "+15550009999", "scheduling", FlowSettings()),
        state=state,
        tracker=tracker or PlaybackTracker(),
        out=out,
        synthesizer=ScriptedSynthesizer(),
        runner=runner,
        progress=progress,
        record=recorded.append,
        log=structlog.get_logger(),
    )


async def resume(
    sid: str,
    runner: ScriptedRunner,
    progress: ReplyProgressWriter,
    recorded: list[CallEvent],
    replies: ReplyPipeline | None = None,
) -> str:
    """A reconnected stream's first reply, as ``CallSession`` starts it; returns its text."""
    replies = replies or new_pipeline(sid, runner, progress, recorded)
    return "".join([e.text async for e in replies.resume(CallSignal("reconnected")) if isinstance(e, TextChunk)])


async def test_a_failed_repair_leaves_the_heard_text_in_place_for_the_next_stream(db: Database) -> None:
    sid = await new_call(db)
    await update_call(db, sid, reply_heard=HEARD)  # left by a stream that dropped mid-reply
    runner = ShakyRunner(replies={"signal:reconnected": RECONNECTED}, heard_failures=1)
    recorded: list[CallEvent] = []
    commits = [0]

    def on_commit(_conn: object) -> None:
        commits[0] += 1

    event.listen(db.engine.sync_engine, "commit", on_commit)
    async with ReplyProgressWriter(db, interval_s=60) as progress:
        assert await resume(sid, runner, progress, recorded) == RECONNECTED  # the line goes out all the same
        await progress.flush_now()
        assert commits[0] == 0  # nothing taken, nothing put back: the row was never written
        assert await stored(db, sid) == HEARD
        assert (runner.heard, recorded) == ([], [])

        # The next stream repairs it and only then clears it.
        assert await resume(sid, runner, progress, recorded) == RECONNECTED
        await progress.flush_now()
    assert runner.heard == [HEARD]
    assert await stored(db, sid) is None
    assert [(e.role, e.text, e.interrupted) for e in recorded] == [("agent", HEARD, True)]


async def test_a_failed_repairs_text_stays_in_front_of_the_next_replys_progress(db: Database) -> None:
    sid = await new_call(db)
    await update_call(db, sid, reply_heard=HEARD)
    runner = ShakyRunner(replies={"signal:reconnected": RECONNECTED}, heard_failures=1)
    recorded: list[CallEvent] = []
    tracker = PlaybackTracker()
    async with ReplyProgressWriter(db, interval_s=60) as progress:
        replies = new_pipeline(sid, runner, progress, recorded, tracker)
        assert await resume(sid, runner, progress, recorded, replies) == RECONNECTED  # the repair failed
        # The reconnection line, as the session reports it: its audio begins ("" = nothing
        # heard of it yet), its first phrase is heard, it plays to the end (None).
        tracker.start_reply(1)
        for phrase in ("Sorry,", "we were cut off."):
            tracker.add_phrase(phrase)
        values = []
        for heard in ("", "Sorry,", None):
            replies.set_heard(heard)
            await progress.flush_now()
            values.append(await stored(db, sid))
        assert values == [HEARD, f"{HEARD} Sorry,", f"{HEARD} {RECONNECTED}"]
        assert (runner.heard, recorded) == ([], [])

        # The next stream repairs the turn with all the caller heard of it; then "" is a new
        # reply's start again.
        replies = new_pipeline(sid, runner, progress, recorded, tracker)
        assert await resume(sid, runner, progress, recorded, replies) == RECONNECTED
        await progress.flush_now()
        assert await stored(db, sid) is None
        replies.set_heard("")
        await progress.flush_now()
        assert await stored(db, sid) == ""
    assert runner.heard == [f"{HEARD} {RECONNECTED}"]
    assert [(e.role, e.text, e.interrupted, e.data) for e in recorded] == [
        ("agent", f"{HEARD} {RECONNECTED}", True, {"trigger": "drop"})
    ]


async def test_a_value_written_after_the_peek_is_not_cleared(db: Database) -> None:
    sid = await new_call(db)
    await update_call(db, sid, reply_heard="One.")
    assert await peek_heard(db, sid) == "One."
    await update_call(db, sid, reply_heard="")  # a later reply's audio began meanwhile
    assert not await clear_heard(db, sid, "One.")
    assert await stored(db, sid) == ""
    assert await clear_heard(db, sid, "")
    assert await stored(db, sid) is None


async def test_a_value_set_here_after_the_peek_is_not_cleared(db: Database) -> None:
    sid = await new_call(db)
    async with ReplyProgressWriter(db, interval_s=60) as progress:
        progress.set(sid, "One.")
        await progress.flush_now()  # the first round; the pause (a minute) begins
        progress.set(sid, "One. Two.")
        assert await progress.peek_heard(sid) == "One. Two."  # pending here: newer than the row
        progress.set(sid, "")  # a later reply's audio began meanwhile
        progress.clear_heard(sid, "One. Two.")
        await progress.flush_now()
        assert await stored(db, sid) == ""

        # Peeked from the row; the clear goes out with the next round, on that condition.
        assert await progress.peek_heard(sid) == ""
        await update_call(db, sid, reply_heard="Three.")  # written meanwhile (another writer)
        progress.clear_heard(sid, "")
        await progress.flush_call(sid)
        assert await stored(db, sid) == "Three."
        assert await progress.peek_heard(sid) == "Three."
        progress.clear_heard(sid, "Three.")
        await progress.flush_call(sid)
        assert await stored(db, sid) is None
        assert progress.rows == 4
