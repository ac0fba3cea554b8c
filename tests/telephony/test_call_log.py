"""``CallEventWriter``: every call's events in few transactions, in order, kept across a
failed round, bounded, durable per call on demand and at close (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import event, text
from structlog.testing import capture_logs

from dialgraph.server.core.call_events import CallEventWriter
from dialgraph.server.core.call_store import get_call, record_call, transcript
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import CallEvent
from dialgraph.telephony.call.call_log import CallLog
from tests.telephony.harness import new_sids


async def new_calls(db: Database, count: int) -> list[str]:
    sids = [new_sids()[0] for _ in range(count)]
    for sid in sids:
        await record_call(
            db, sid=sid, direction="inbound", from_number="", to_number="", flow="scheduling", thread_id=sid
        )
    return sids


def count_commits(db: Database) -> list[int]:
    commits = [0]

    def on_commit(_conn: object) -> None:
        commits[0] += 1

    event.listen(db.engine.sync_engine, "commit", on_commit)
    return commits


def turn(sid: str, n: int) -> CallEvent:
    return CallEvent(call_sid=sid, kind="turn", role="caller" if n % 2 else "agent", text=f"turn {n}")


async def texts(db: Database, sid: str) -> list[str | None]:
    return [e.text for e in await transcript(db, sid)]


async def test_every_calls_events_go_out_together_in_order(db: Database) -> None:
    sids = await new_calls(db, 20)
    commits = count_commits(db)
    async with CallEventWriter(db, interval_s=60) as writer:
        logs = [CallLog(writer, call_sid=sid, stream_sid=f"MZ{i}") for i, sid in enumerate(sids)]
        for log in logs:
            log.open()
        for n in range(5):  # the calls' events interleave, as they do in a process
            for log, sid in zip(logs, sids, strict=True):
                log.record(turn(sid, n))
        await writer.flush_now()
        assert commits[0] == writer.batches == 1
        assert writer.rows == 20 * 6
        for i, sid in enumerate(sids):
            assert await texts(db, sid) == [f"turn {n}" for n in range(5)]
            call = await get_call(db, sid)
            assert call is not None and call.stream_sid == f"MZ{i}"


async def test_an_event_keeps_the_instant_it_was_recorded(db: Database) -> None:
    (sid,) = await new_calls(db, 1)
    writer = CallEventWriter(db)  # not started: written by ``flush_now`` alone
    at = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    writer.record(CallEvent(call_sid=sid, kind="transfer", role="system", at=at, data={"target": "desk"}))
    writer.record(CallEvent(call_sid=sid, role="agent", text="Bye.", interrupted=True, latency_ms=12.5))
    before = dt.datetime.now(dt.UTC)
    await writer.flush_now()
    first, second = await transcript(db, sid)
    assert (first.kind, first.at, first.data, first.interrupted) == ("transfer", at, {"target": "desk"}, False)
    assert (second.kind, second.text, second.interrupted, second.latency_ms) == ("turn", "Bye.", True, 12.5)
    assert second.at <= before  # stamped when recorded, not when written


async def test_a_round_writes_at_most_max_batch_rows(db: Database) -> None:
    (sid,) = await new_calls(db, 1)
    commits = count_commits(db)
    writer = CallEventWriter(db, max_batch=4)
    for n in range(10):
        writer.record(turn(sid, n))
    await writer.flush_now()
    assert commits[0] == writer.batches == 3
    assert await texts(db, sid) == [f"turn {n}" for n in range(10)]


async def test_flush_call_makes_a_call_durable_without_waiting_the_pause(db: Database) -> None:
    a, b, c = await new_calls(db, 3)
    commits = count_commits(db)
    async with CallEventWriter(db, interval_s=60, max_batch=4) as writer:
        writer.record(turn(c, 0))
        await writer.flush_now()  # the first round; the pause (a minute) begins
        assert commits[0] == 1
        for n in range(10):  # another call's backlog, ahead of ``a``
            writer.record(turn(b, n))
        writer.record(turn(a, 0))
        writer.record(turn(a, 1))
        await CallLog(writer, call_sid=a, stream_sid="MZa").flush()
        assert await texts(db, a) == ["turn 0", "turn 1"]
        assert await texts(db, b) == [f"turn {n}" for n in range(10)]  # written first, in order
        assert commits[0] == 1 + 3
        await writer.flush_call(a)  # nothing pending for it: no write
        await writer.flush_call("CA-never-seen")
        assert commits[0] == 4


async def test_aclose_writes_what_is_pending(db: Database) -> None:
    a, b = await new_calls(db, 2)
    async with CallEventWriter(db, interval_s=60) as writer:
        writer.record(turn(a, 0))
        await writer.flush_now()
        writer.record(turn(a, 1))  # in the pause: only closing writes these
        writer.record(turn(b, 0))
    assert await texts(db, a) == ["turn 0", "turn 1"]
    assert await texts(db, b) == ["turn 0"]
    assert writer.batches == 2


async def test_a_failed_round_keeps_its_events_for_the_next(db: Database) -> None:
    a, b = await new_calls(db, 2)
    async with CallEventWriter(db, interval_s=60, max_batch=2) as writer:
        writer.record(turn(a, 0))
        await writer.flush_now()
        async with db.engine.begin() as conn:  # the table is gone: every write fails
            await conn.execute(text("ALTER TABLE call_events RENAME TO call_events_away"))
        writer.record(turn(a, 1))
        writer.record(turn(b, 0))
        writer.record(turn(a, 2))  # not in the failed round: stays behind what it puts back
        await writer.flush_call(a)  # failed, but the session's end is not held up
        assert writer.rows == 1
        writer.record(turn(a, 3))
        async with db.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE call_events_away RENAME TO call_events"))
        await writer.flush_call(a)
        assert await texts(db, a) == ["turn 0", "turn 1", "turn 2", "turn 3"]
        assert await texts(db, b) == ["turn 0"]
        assert (writer.rows, writer.dropped) == (5, 0)


async def test_a_row_the_database_refuses_is_dropped_alone(db: Database) -> None:
    a, b = await new_calls(db, 2)
    writer = CallEventWriter(db)
    for n in range(3):
        writer.record(turn(a, n))
        writer.record(turn("CA-no-such-call", n) if n == 1 else turn(b, n))  # no call row: a foreign key refuses it
    await writer.flush_now()
    assert await texts(db, a) == ["turn 0", "turn 1", "turn 2"]
    assert await texts(db, b) == ["turn 0", "turn 2"]
    assert (writer.rows, writer.dropped) == (5, 1)


async def test_past_the_bound_new_events_are_refused_and_logged_once(db: Database) -> None:
    (sid,) = await new_calls(db, 1)
    writer = CallEventWriter(db, max_pending=5)  # not started: nothing is written meanwhile
    with capture_logs() as logs:
        for n in range(8):
            writer.record(turn(sid, n))
        await writer.flush_now()
        writer.record(turn(sid, 8))  # room again
        await writer.flush_now()
    assert writer.refused == 3
    assert await texts(db, sid) == [f"turn {n}" for n in (0, 1, 2, 3, 4, 8)]  # the call's beginning, in order
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "call events refused: too many wait for the database"
    ]
