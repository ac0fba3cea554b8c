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
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.reply_heard import ReplyProgressWriter, clear_heard, peek_heard
from dialgraph.server.core.turns import CallSignal, TextChunk
from dialgraph.telephony.call.heard import HeardText
from dialgraph.telephony.call.playback import PlaybackTracker
from dialgraph.telephony.simulator.scripted import ScriptedRunner
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


def new_heard(sid: str, runner: ScriptedRunner, progress: ReplyProgressWriter, recorded: list[CallEvent]) -> HeardText:
    """The heard-text state of a new stream of call ``sid``, as ``CallSession`` builds it."""
    return HeardText(
        ctx=CallContext(sid, sid, "+14155550100", "+15550009999", "scheduling", FlowSettings()),
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
    heard: HeardText | None = None,
) -> str:
    """A reconnected stream's first reply, as ``CallSession`` starts it; returns its text."""
    heard = heard or new_heard(sid, runner, progress, recorded)
    async with heard.graph_run():
        return "".join([e.text async for e in heard.resume(CallSignal("reconnected")) if isinstance(e, TextChunk)])


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
        heard = new_heard(sid, runner, progress, recorded)
        assert await resume(sid, runner, progress, recorded, heard) == RECONNECTED  # the repair failed
        # The reconnection line, as the session reports it: its audio begins ("" = nothing
        # heard of it yet), its first phrase is heard, it plays to the end (None).
        tracker.start_reply(1)
        for phrase in ("Sorry,", "we were cut off."):
            tracker.add_phrase(phrase)
        values = []
        heard.audio_began(1)
        await progress.flush_now()
        values.append(await stored(db, sid))
        heard.progressed("Sorry,")
        await progress.flush_now()
        values.append(await stored(db, sid))
        heard.played(tracker.full_text())
        await progress.flush_now()
        values.append(await stored(db, sid))
        assert values == [HEARD, f"{HEARD} Sorry,", f"{HEARD} {RECONNECTED}"]
        assert (runner.heard, recorded) == ([], [])

        # The next stream repairs the turn with all the caller heard of it; then "" is a new
        # reply's start again.
        heard = new_heard(sid, runner, progress, recorded)
        assert await resume(sid, runner, progress, recorded, heard) == RECONNECTED
        await progress.flush_now()
        assert await stored(db, sid) is None
        heard.audio_began(2)
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
