"""The campaign queue on real SQLite and real PostgreSQL: contact lists with line-numbered
errors, claims that hold max_concurrent and the per-second rate across several instances
(each with its own engine), retries, calling-hours deferral, reaping a dead instance's
claims, reconciling its calls over REST, completion, counts, pause/resume/cancel."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import pytest
from pydantic import ValidationError

from dialgraph.server.core.call_store import record_call, update_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import CallingWindow
from dialgraph.server.core.models import CampaignContact
from dialgraph.server.outbound import campaigns
from dialgraph.server.outbound.campaigns import CampaignSpec, CampaignStateError, ContactIn
from dialgraph.server.outbound.contact_queue import Claimed
from dialgraph.server.outbound.types import Refusal
from dialgraph.telephony.twilio.call_control import CallControlError

T0 = dt.datetime(2030, 1, 7, 12, 0, tzinfo=dt.UTC)


def spec(**overrides: object) -> CampaignSpec:
    values: dict[str, object] = {"name": "spring", "flow": "sales", "from": "+15550001000"}
    values.update(overrides)
    return CampaignSpec.model_validate(values)


def people(n: int) -> list[ContactIn]:
    return [ContactIn(to=f"+1555010{i:04d}", context={"name": f"P{i}"}) for i in range(n)]


async def new_campaign(db: Database, n: int, **overrides: object) -> str:
    contacts, errors = campaigns.check_contact_list(people(n))
    assert not errors
    return (await campaigns.create_campaign(db, spec(**overrides), contacts, now=T0)).id


async def dial(db: Database, c: Claimed, sid: str) -> None:
    """What the placer does once Twilio took the call: the call row, then the contact."""
    await record_call(
        db, sid=sid, direction="outbound", from_number=c.from_number, to_number=c.to, flow=c.flow, thread_id=sid
    )
    await update_call(db, sid, campaign_id=c.campaign_id, contact_id=c.contact_id)
    assert await campaigns.mark_dialing(db, c.contact_id, sid)


async def contact(db: Database, contact_id: int) -> CampaignContact:
    async with db.sessionmaker() as s:
        row = await s.get(CampaignContact, contact_id)
    assert row is not None
    return row


# --- contact lists --------------------------------------------------------------------------------
def test_csv_reports_bad_rows_with_their_line_and_keeps_the_good() -> None:
    text = (
        "name,to,timezone,plan\n"
        "Asha,+91 98765-43210,Asia/Kolkata,gold\n"
        "\n"
        "Bob,555-1234,,\n"
        'Cara,"+1 (555) 010-2000",,\n'
        "Dup,+919876543210,,\n"
        "Eve,+15550102001,Mars/Base,\n"
        "Fay,,,\n"
        "Gus,+15550102002,,,extra\n"
    )
    good, errors = campaigns.parse_contacts_csv(text)
    assert [(c.line, c.to, c.timezone, c.context) for c in good] == [
        (2, "+919876543210", "Asia/Kolkata", {"name": "Asha", "plan": "gold"}),
        (5, "+15550102000", None, {"name": "Cara"}),
    ]
    assert [(e.line, e.to) for e in errors] == [
        (4, "555-1234"),
        (6, "+919876543210"),
        (7, "+15550102001"),
        (8, ""),
        (9, "+15550102002"),
    ]
    assert "E.164" in errors[0].error
    assert errors[1].error == "duplicate of line 2"
    assert "time zone" in errors[2].error


def test_csv_without_a_to_column_is_refused() -> None:
    with pytest.raises(ValueError, match="'to' column"):
        campaigns.parse_contacts_csv("name,phone\nA,+15550100000\n")
    with pytest.raises(ValueError, match="empty"):
        campaigns.parse_contacts_csv("\n\n")


def test_json_contact_list_is_checked_row_by_row() -> None:
    good, errors = campaigns.parse_contacts(
        [
            {"to": "+15550100001", "context": {"name": "A"}},
            {"to": "+15550100001"},
            {"to": "+15550100002", "context": "not a mapping"},
            {"to": "12345"},
            {"to": "+44 20 7946 0000", "timezone": "Europe/London"},
        ]
    )
    assert [(c.line, c.to) for c in good] == [(1, "+15550100001"), (5, "+442079460000")]
    assert [(e.line, e.error.split(":")[0]) for e in errors] == [
        (2, "duplicate of line 1"),
        (3, "context"),
        (4, "not an E.164 number (+ and country code)"),
    ]


def test_campaign_spec_names_the_bad_field() -> None:
    with pytest.raises(ValidationError) as bad_from:
        spec(**{"from": "5550001000"})
    assert bad_from.value.errors()[0]["loc"] == ("from",)
    for field, value in (("max_concurrent", 0), ("calls_per_second", 0), ("max_attempts", 11), ("purpose", "spam")):
        with pytest.raises(ValidationError) as exc:
            spec(**{field: value})
        assert exc.value.errors()[0]["loc"] == (field,)
    by_name = CampaignSpec.model_validate({"name": "n", "flow": "sales", "from_number": "+15550001000"})
    assert by_name.from_number == "+15550001000"


async def test_create_refuses_unchecked_duplicates(db: Database) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        await campaigns.create_campaign(db, spec(), [ContactIn(to="+15550100000"), ContactIn(to="+1 555 010 0000")])


# --- claiming ---------------------------------------------------------------------------------
async def test_claims_hold_max_concurrent_and_space_slots_by_the_rate(db: Database) -> None:
    cid = await new_campaign(db, 10, max_concurrent=3, calls_per_second=2)
    first = await campaigns.claim(db, "i1", T0, limit=100, horizon_s=60)
    assert [c.to for c in first] == ["+15550100000", "+15550100001", "+15550100002"]
    assert [c.slot_at for c in first] == [T0 + dt.timedelta(seconds=s) for s in (0, 0.5, 1.0)]
    assert first[0].request().campaign_id == cid and first[0].request().context == {"name": "P0"}
    assert await campaigns.claim(db, "i2", T0, limit=100, horizon_s=60) == []  # 3 held: no room

    await dial(db, first[0], "CA0")
    await campaigns.on_call_status(db, "CA0", "completed", now=T0 + dt.timedelta(seconds=1))
    later = await campaigns.claim(db, "i2", T0 + dt.timedelta(seconds=1), limit=100, horizon_s=60)
    assert [c.to for c in later] == ["+15550100003"]
    assert later[0].slot_at == T0 + dt.timedelta(seconds=1.5)  # the schedule went on, not "now"
    counts = await campaigns.counts(db, cid)
    assert (counts["dialing"], counts["completed"], counts["queued"]) == (3, 1, 6)


async def test_the_horizon_stops_an_instance_taking_slots_far_ahead(db: Database) -> None:
    await new_campaign(db, 10, max_concurrent=10, calls_per_second=1)
    got = await campaigns.claim(db, "i1", T0, limit=100, horizon_s=2.5)
    assert [c.slot_at for c in got] == [T0, T0 + dt.timedelta(seconds=1), T0 + dt.timedelta(seconds=2)]
    assert await campaigns.claim(db, "i2", T0, limit=100, horizon_s=2.5) == []
    assert len(await campaigns.claim(db, "i2", T0 + dt.timedelta(seconds=1), limit=100, horizon_s=2.5)) == 1


@pytest.mark.parametrize("n_instances", [3])
async def test_instances_with_their_own_engines_never_exceed_the_limits(database_url: str, n_instances: int) -> None:
    dbs = [Database(database_url) for _ in range(n_instances)]
    await dbs[0].upgrade()
    try:
        total, limit, cps = 40, 4, 100.0
        cid = (
            await campaigns.create_campaign(dbs[0], spec(max_concurrent=limit, calls_per_second=cps), people(total))
        ).id
        held = 0
        most = 0
        claims: list[Claimed] = []
        calls: set[asyncio.Task[None]] = set()
        rng = random.Random(7)

        async def call(db: Database, c: Claimed) -> None:
            nonlocal held
            await dial(db, c, f"CA{c.contact_id}")
            await asyncio.sleep(rng.uniform(0, 0.02))
            await campaigns.on_call_status(db, f"CA{c.contact_id}", "in-progress")
            await asyncio.sleep(rng.uniform(0, 0.02))
            held -= 1  # before the row says done: `held` never overstates what SQL holds
            await campaigns.on_call_status(db, f"CA{c.contact_id}", "completed")

        async def instance(i: int) -> None:
            nonlocal held, most
            db = dbs[i]
            while (await campaigns.get_campaign(db, cid)).status != "completed":  # type: ignore[union-attr]
                got = await campaigns.claim(db, f"i{i}", dt.datetime.now(dt.UTC), limit=3, horizon_s=0.05)
                held += len(got)
                most = max(most, held)
                claims.extend(got)
                for c in got:
                    task = asyncio.create_task(call(db, c))
                    calls.add(task)
                    task.add_done_callback(calls.discard)
                await asyncio.sleep(0.002)

        async with asyncio.timeout(30):
            await asyncio.gather(*(instance(i) for i in range(n_instances)))
            while calls:
                await asyncio.gather(*calls)
        assert 1 < most <= limit
        assert sorted(c.contact_id for c in claims) == sorted({c.contact_id for c in claims})  # none twice
        assert len(claims) == total
        slots = sorted(c.slot_at for c in claims)
        gaps = [(b - a).total_seconds() for a, b in zip(slots, slots[1:], strict=False)]
        assert min(gaps) >= 1 / cps - 2e-6
        assert (await campaigns.counts(dbs[1], cid))["completed"] == total
    finally:
        for db in dbs:
            await db.aclose()


# --- outcomes and retries ---------------------------------------------------------------------------
async def test_busy_is_retried_after_retry_after_s_until_attempts_run_out(db: Database) -> None:
    cid = await new_campaign(db, 1, max_attempts=2, retry_after_s=60)
    (c,) = await campaigns.claim(db, "i1", T0, limit=5)
    await dial(db, c, "CA1")
    await campaigns.on_call_status(db, "CA1", "busy", now=T0)
    row = await contact(db, c.contact_id)
    assert (row.state, row.outcome, row.attempts, row.next_attempt_at) == (
        "queued",
        "busy",
        1,
        T0 + dt.timedelta(seconds=60),
    )
    assert await campaigns.claim(db, "i1", T0 + dt.timedelta(seconds=59), limit=5) == []
    (again,) = await campaigns.claim(db, "i1", T0 + dt.timedelta(seconds=60), limit=5)
    assert again.attempt == 2
    await dial(db, again, "CA2")
    await campaigns.on_call_status(db, "CA1", "completed")  # a late callback of the first call: ignored
    assert (await contact(db, c.contact_id)).state == "dialing"
    await campaigns.on_call_status(db, "CA2", "no-answer", now=T0 + dt.timedelta(seconds=90))
    row = await contact(db, c.contact_id)
    assert (row.state, row.outcome, row.attempts, row.call_sid) == ("done", "no_answer", 2, "CA2")
    assert (await campaigns.get_campaign(db, cid)).status == "completed"  # type: ignore[union-attr]


async def test_a_final_callback_that_beats_the_call_row_still_ends_the_contact(db: Database) -> None:
    """Twilio may call back (busy) before the placer has read the REST answer: the status
    route then keeps it on a bare call row, which the placer completes; mark_dialing applies it."""
    await new_campaign(db, 1)
    (c,) = await campaigns.claim(db, "i1", T0, limit=5)
    await record_call(db, sid="CA9", direction="outbound", from_number=c.from_number, to_number=c.to,
                      flow=c.flow, thread_id="CA9", status="busy")  # fmt: skip
    await update_call(db, "CA9", campaign_id=c.campaign_id, contact_id=c.contact_id)
    assert await campaigns.mark_dialing(db, c.contact_id, "CA9", now=T0)
    row = await contact(db, c.contact_id)
    assert (row.state, row.outcome) == ("done", "busy")


async def test_machine_answers_are_voicemail_and_opt_outs_are_never_retried(db: Database) -> None:
    cid = await new_campaign(db, 3, max_concurrent=3, max_attempts=3, retry_after_s=0, calls_per_second=100)
    a, b, c = await campaigns.claim(db, "i1", T0, limit=5)
    for claimed, sid in ((a, "CAa"), (b, "CAb"), (c, "CAc")):
        await dial(db, claimed, sid)
        await campaigns.on_answered_by(db, sid, "human")
    assert (await campaigns.counts(db, cid))["in_progress"] == 3
    await update_call(db, "CAa", answered_by="machine_end_beep", outcome="voicemail")
    await campaigns.on_call_status(db, "CAa", "completed")
    await campaigns.on_call_status(db, "CAb", "completed", answered_by="machine_end_silence")
    await update_call(db, "CAc", outcome="opted_out")
    await campaigns.on_call_status(db, "CAc", "completed")
    assert [(r.state, r.outcome) for r in await campaigns.list_contacts(db, cid)] == [
        ("queued", "voicemail"),  # retried: attempts remain
        ("queued", "voicemail"),
        ("done", "opted_out"),
    ]


async def test_refusals_refund_the_attempt_and_calling_hours_wait_for_the_window(db: Database) -> None:
    cid = await new_campaign(db, 4, max_concurrent=4, calls_per_second=100, retry_after_s=0)
    hours, dnd, dlt, rate = await campaigns.claim(db, "i1", T0, limit=5)
    opens = T0 + dt.timedelta(hours=9)
    await campaigns.mark_skipped(
        db,
        hours.contact_id,
        Refusal("calling_hours", "window.calling_hours", {"next_allowed_at": opens.isoformat()}),
        now=T0,
    )
    await campaigns.mark_skipped(db, dnd.contact_id, Refusal("dnd", "trai.dnd.promotional"), now=T0)
    await campaigns.mark_skipped(db, dlt.contact_id, Refusal("dlt_missing", "trai.dlt", {"missing": ["header"]}))
    await campaigns.mark_skipped(db, rate.contact_id, Refusal("rate_limited", "limits.callee_per_day"), now=T0)
    assert (await contact(db, rate.contact_id)).next_attempt_at == T0 + dt.timedelta(
        seconds=campaigns.RATE_LIMITED_RETRY_MIN_S
    )
    (rate,) = await campaigns.claim(db, "i1", T0 + dt.timedelta(seconds=60), limit=1)
    account_cps = Refusal("rate_limited", "twilio.account_cps", {"retry_after_s": 5})
    await campaigns.mark_skipped(db, rate.contact_id, account_cps, now=T0)
    rows = {r.id: r for r in await campaigns.list_contacts(db, cid)}
    assert (rows[hours.contact_id].state, rows[hours.contact_id].attempts) == ("queued", 0)
    assert rows[hours.contact_id].next_attempt_at == opens
    assert (rows[dnd.contact_id].state, rows[dnd.contact_id].outcome) == ("done", "skipped_dnd")
    assert rows[dlt.contact_id].outcome == "skipped_dlt"
    assert rows[rate.contact_id].state == "queued"
    assert rows[rate.contact_id].next_attempt_at == T0 + dt.timedelta(seconds=5)  # the placer's hint
    counts = await campaigns.counts(db, cid)
    assert {k: v for k, v in counts.items() if v} == {
        "skipped_hours": 1,
        "skipped_dnd": 1,
        "skipped_dlt": 1,
        "skipped_rate_limited": 1,
    }
    (again,) = await campaigns.claim(db, "i1", opens, limit=1)
    assert (again.contact_id, again.attempt) == (hours.contact_id, 1)


async def test_a_rest_failure_counts_as_a_failed_attempt(db: Database) -> None:
    cid = await new_campaign(db, 1, max_attempts=2, retry_after_s=5)
    (c,) = await campaigns.claim(db, "i1", T0, limit=1)
    await campaigns.mark_failed_to_place(db, c.contact_id, "Twilio answered 500", now=T0)
    row = await contact(db, c.contact_id)
    assert (row.state, row.outcome, row.attempts) == ("queued", "failed", 1)
    (c,) = await campaigns.claim(db, "i1", T0 + dt.timedelta(seconds=5), limit=1)
    await campaigns.mark_failed_to_place(db, c.contact_id, "Twilio answered 500")
    assert (await contact(db, c.contact_id)).state == "done"
    assert (await campaigns.status(db, cid)).status == "completed"  # type: ignore[union-attr]


# --- dead instances -----------------------------------------------------------------------------
async def test_a_dead_instances_claims_return_to_the_queue(db: Database) -> None:
    await new_campaign(db, 2, max_concurrent=2, calls_per_second=100)
    dead = await campaigns.claim(db, "dead", T0, limit=5)
    assert len(dead) == 2
    assert await campaigns.claim(db, "alive", T0 + dt.timedelta(seconds=30), limit=5) == []

    async def never(_: str) -> tuple[str, str | None]:
        raise AssertionError("no call to fetch")

    report = await campaigns.reap(
        db, T0 + dt.timedelta(seconds=30), claim_ttl_s=60, stale_call_s=120, fetch_status=never
    )
    assert report.requeued == 0
    report = await campaigns.reap(
        db, T0 + dt.timedelta(seconds=61), claim_ttl_s=60, stale_call_s=120, fetch_status=never
    )
    assert report.requeued == 2
    assert not await campaigns.still_claimed(db, dead[0].contact_id, "dead")
    taken = await campaigns.claim(db, "alive", T0 + dt.timedelta(seconds=61), limit=5)
    assert [(c.contact_id, c.attempt) for c in taken] == [(c.contact_id, 1) for c in dead]
    assert await campaigns.still_claimed(db, taken[0].contact_id, "alive")


async def test_a_dial_whose_answer_was_lost_is_looked_up_at_twilio_never_redialled(db: Database) -> None:
    """The instance began the REST request (start_dialing) and died before the CallSid came
    back: after PLACING_MAX_S the reaper asks Twilio. Found: reconciled; not found: requeued."""
    await new_campaign(db, 2, max_concurrent=2, calls_per_second=100)
    reached, lost = await campaigns.claim(db, "dead", T0, limit=5)
    assert await campaigns.start_dialing(db, reached.contact_id, "dead", now=T0)
    assert await campaigns.start_dialing(db, lost.contact_id, "dead", now=T0)
    assert not await campaigns.start_dialing(db, lost.contact_id, "other", now=T0)  # only the claimer

    async def find_calls(to: str, *, since: dt.datetime) -> list[tuple[str, str, str | None]]:
        assert since == T0
        return [("CAreached", "completed", "human")] if to == reached.to else []

    async def fetch(sid: str) -> tuple[str, str | None]:
        assert sid == "CAreached"
        return "completed", "human"

    early = await campaigns.reap(
        db, T0 + dt.timedelta(seconds=20), claim_ttl_s=5, stale_call_s=5, fetch_status=fetch, find_calls=find_calls
    )
    assert early.requeued == 0 and early.reconciled == 0  # the request may still be in flight
    assert (await contact(db, lost.contact_id)).state == "dialing"
    report = await campaigns.reap(
        db, T0 + dt.timedelta(seconds=31), claim_ttl_s=5, stale_call_s=5, fetch_status=fetch, find_calls=find_calls
    )
    assert (report.requeued, report.reconciled) == (1, 1)
    row = await contact(db, reached.contact_id)
    assert (row.state, row.outcome, row.call_sid, row.attempts) == ("done", "completed", "CAreached", 1)
    row = await contact(db, lost.contact_id)
    assert (row.state, row.attempts) == ("queued", 0)


async def test_a_claim_whose_call_was_placed_is_never_requeued(db: Database) -> None:
    await new_campaign(db, 2, max_concurrent=2, calls_per_second=100)
    placed, not_placed = await campaigns.claim(db, "dead", T0, limit=5)
    # The dead instance's REST request went out and its call row was written; mark_dialing never ran.
    await record_call(
        db, sid="CAp", direction="outbound", from_number="+1", to_number=placed.to, flow="sales", thread_id="CAp"
    )
    await update_call(db, "CAp", campaign_id=placed.campaign_id, contact_id=placed.contact_id, started_at=T0)

    async def never(_: str) -> tuple[str, str | None]:
        raise AssertionError("nothing is stale yet")

    report = await campaigns.reap(
        db, T0 + dt.timedelta(seconds=61), claim_ttl_s=60, stale_call_s=120, fetch_status=never
    )
    assert report.requeued == 1
    assert [(r.state, r.call_sid) for r in await campaigns.list_contacts(db, placed.campaign_id)] == [
        ("dialing", "CAp"),
        ("queued", None),
    ]
    assert (await contact(db, not_placed.contact_id)).attempts == 0


async def test_stale_calls_are_reconciled_over_rest(db: Database) -> None:
    cid = await new_campaign(db, 4, max_concurrent=4, calls_per_second=100)
    claimed = await campaigns.claim(db, "dead", T0, limit=5)
    for c in claimed:
        await dial(db, c, f"CA{c.contact_id}")
    twilio = {
        f"CA{claimed[0].contact_id}": ("completed", None),
        f"CA{claimed[1].contact_id}": ("in-progress", "human"),
        f"CA{claimed[2].contact_id}": ("ringing", None),
    }
    fetched: list[str] = []

    async def fetch_status(sid: str) -> tuple[str, str | None]:  # Twilio's REST answer
        fetched.append(sid)
        if sid not in twilio:
            raise CallControlError("fetch: Twilio answered 404", retryable=False, status=404, code=20404)
        return twilio[sid]

    now = dt.datetime.now(dt.UTC)
    report = await campaigns.reap(db, now, claim_ttl_s=60, stale_call_s=120, fetch_status=fetch_status)
    assert (report.reconciled, fetched) == (0, [])  # nothing stale yet
    later = now + dt.timedelta(seconds=121)
    report = await campaigns.reap(db, later, claim_ttl_s=60, stale_call_s=120, fetch_status=fetch_status)
    assert report.reconciled == 4 and len(fetched) == 4
    states = [(r.state, r.outcome) for r in await campaigns.list_contacts(db, cid)]
    assert states == [("done", "completed"), ("live", None), ("dialing", None), ("done", "failed")]
    report = await campaigns.reap(db, later, claim_ttl_s=60, stale_call_s=120, fetch_status=fetch_status)
    assert report.reconciled == 0  # touched: not stale again until stale_call_s has passed
    call = await campaigns.get_campaign(db, cid)
    assert call is not None and call.status == "active"


# --- completion and steering ---------------------------------------------------------------------
async def test_pause_resume_cancel(db: Database) -> None:
    cid = await new_campaign(db, 5, max_concurrent=2, calls_per_second=100, max_attempts=3, retry_after_s=0)
    live, claimed = await campaigns.claim(db, "i1", T0, limit=5)
    await dial(db, live, "CAlive")
    await campaigns.on_call_status(db, "CAlive", "in-progress")
    await campaigns.pause(db, cid)
    with pytest.raises(CampaignStateError):
        await campaigns.pause(db, cid)
    await campaigns.on_call_status(db, "CAlive", "busy")  # a paused campaign still retries
    assert (await contact(db, live.contact_id)).state == "queued"
    assert await campaigns.claim(db, "i1", T0, limit=5) == []
    await campaigns.resume(db, cid)
    (again,) = await campaigns.claim(db, "i1", T0, limit=5)
    await dial(db, again, "CAlive2")
    await campaigns.on_call_status(db, "CAlive2", "in-progress")

    await campaigns.cancel(db, cid, now=T0)
    assert not await campaigns.still_claimed(db, claimed.contact_id, "i1")
    state = await campaigns.status(db, cid)
    assert state is not None and (state.status, state.finished_at) == ("cancelled", T0)
    assert (state.counts["canceled"], state.counts["in_progress"], state.total) == (4, 1, 5)
    await campaigns.on_call_status(db, "CAlive2", "no-answer")  # left to finish, never retried
    assert (await contact(db, live.contact_id)).outcome == "no_answer"
    for change in (campaigns.cancel, campaigns.resume):
        with pytest.raises(CampaignStateError, match="cancelled"):
            await change(db, cid)


async def test_a_campaign_completes_when_no_contact_is_open(db: Database) -> None:
    cid = await new_campaign(db, 2, max_concurrent=2, calls_per_second=100, window=CallingWindow(start="08:00"))
    a, b = await campaigns.claim(db, "i1", T0, limit=5)
    assert a.window == CallingWindow(start="08:00")
    await dial(db, a, "CAa")
    await dial(db, b, "CAb")
    await campaigns.on_call_status(db, "CAa", "completed")
    assert (await campaigns.get_campaign(db, cid)).status == "active"  # type: ignore[union-attr]
    await campaigns.on_call_status(db, "CAb", "failed")
    state = await campaigns.status(db, cid)
    assert state is not None and state.status == "completed" and state.finished_at is not None
    assert {k: v for k, v in state.counts.items() if v} == {"completed": 1, "failed": 1}
    assert await campaigns.claim(db, "i1", T0, limit=5) == []
