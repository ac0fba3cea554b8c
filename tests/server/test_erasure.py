"""Erasure of one person (``DELETE /api/people/{phone}``, ``dialgraph data erase``) on SQLite
and PostgreSQL: real graph turns write real LangGraph checkpoints, the booking tool writes
the appointment, and afterwards no table (checkpoint bytes included) holds the person's
number or words, another person's data is whole, and the erased opt-out still refuses a call
(409 ``opted_out``, no Twilio request)."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from dialgraph.graphs.checkpoint import checkpointer
from dialgraph.graphs.runtime import build_runners
from dialgraph.server.app import create_app
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import (
    Appointment,
    Call,
    CallEvent,
    Campaign,
    CampaignContact,
    Contact,
    DoNotCall,
    Message,
    OutboundAudit,
)
from dialgraph.server.core.settings import Settings
from dialgraph.server.outbound import compliance
from dialgraph.server.outbound.types import OutboundRequest
from dialgraph.server.privacy.erasure import ERASED, erase_person_by_settings
from dialgraph.server.privacy.hashing import privacy_key
from dialgraph.telephony.simulator.twilio_api import TwilioApi
from dialgraph.tools import do_not_call
from tests.fakes.db_dump import dump_database, table_names
from tests.fakes.graph_calls import Call as GraphCall
from tests.fakes.graph_calls import fixed_clock, graph_settings
from tests.server.test_app import speechless

ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"Authorization": "Bearer dev-admin-token"}
PERSON = "+919812345678"
DIGITS = "9812345678"  # the national number: found in any spelling of PERSON
OTHER = "+15550107777"
OUR = "+15550001000"
PERSON_WORDS = ("Asha", "Verma", "marigold")  # her name, and a word only she said
ALL_DAY = {"window": {"start": "00:00", "end": "24:00"}}


async def graph_call(runner: Any, settings: Settings, thread: str, caller: str, lines: list[str]) -> None:
    """A real conversation on the scheduling flow (real graph, offline model, real saver)."""
    call = GraphCall(
        runner,
        CallContext(
            call_sid=f"CA{thread}",
            thread_id=thread,
            caller=caller,
            called=OUR,
            flow="scheduling",
            flow_settings=settings.flows["scheduling"],
        ),
    )
    await call.start()
    for line in lines:
        await call.say(line)


async def seed(settings: Settings, db: Database) -> None:
    """Everything about PERSON and about OTHER, in every table that can hold a person."""
    async with AsyncExitStack() as stack:
        runners = await build_runners(settings, db, stack, clock=fixed_clock)
        booking = ["Hi, I'd like to book an appointment please", "next friday at ten"]
        await graph_call(runners["scheduling"], settings, "p1", PERSON, [*booking, "It's Asha Verma"])
        await graph_call(
            runners["scheduling"], settings, "p2", PERSON, ["Asha Verma again, call me on 98123 45678, marigold"]
        )
        other_booking = ["Hi, I'd like to book an appointment please", "next thursday at ten", "It's Bob Stone"]
        await graph_call(runners["scheduling"], settings, "o1", OTHER, other_booking)
    now = fixed_clock()
    async with db.sessionmaker() as s, s.begin():
        s.add_all(
            [
                Call(sid="CAp1", from_number=PERSON, to_number=OUR, flow="scheduling", thread_id="p1", status="completed",
                     outcome="completed", transfer_summary="Asha Verma wants her booking moved",
                     transfer_reason="Asha asked", reply_heard="Sure Asha", started_at=now),
                Call(sid="CAp2", direction="outbound", from_number=OUR, to_number=PERSON, flow="scheduling",
                     thread_id="p2", previous_thread_id="p1", status="completed", outcome="completed",
                     context={"name": "Asha Verma", "phone": PERSON}, started_at=now),
                Call(sid="CAo1", from_number=OTHER, to_number=OUR, flow="scheduling", thread_id="o1",
                     status="completed", outcome="completed", transfer_summary="Bob Stone wants a refund",
                     started_at=now),
            ]
        )  # fmt: skip
        await s.flush()
        s.add_all(
            [
                CallEvent(call_sid="CAp1", role="caller", text="This is Asha Verma, marigold, 9812345678"),
                CallEvent(call_sid="CAp1", role="agent", text="Thanks Asha"),
                CallEvent(call_sid="CAp2", kind="transfer", data={"target": "front_desk", "caller": PERSON}),
                CallEvent(call_sid="CAo1", role="caller", text="Bob Stone here"),
                Message(call_sid="CAp1", from_number=PERSON, caller_name="Asha Verma", body="Call Asha back"),
                Message(from_number=OTHER, callback_number=PERSON, caller_name="Bob Stone", body="ring my friend"),
                Message(call_sid="CAo1", from_number=OTHER, caller_name="Bob Stone", body="Bob needs a refund"),
                Campaign(id="camp1", name="reminders", flow="sales", from_number=OUR, status="paused"),
                OutboundAudit(decision="placed", rule="compliance.ok", to_number=PERSON, call_sid="CAp2"),
                OutboundAudit(decision="placed", rule="compliance.ok", to_number=OTHER),
            ]
        )
        await s.flush()
        s.add_all(
            [
                CampaignContact(campaign_id="camp1", line=1, to_number=PERSON, context={"name": "Asha Verma"}),
                CampaignContact(campaign_id="camp1", line=2, to_number=OTHER, context={"name": "Bob Stone"}),
            ]
        )
        for phone, name in ((PERSON, "Asha Verma"), (OTHER, "Bob Stone")):
            if await s.scalar(select(Contact).where(Contact.phone == phone)) is None:
                s.add(Contact(phone=phone, name=name))
    await do_not_call.add_opt_out(
        db, PERSON, reason="Asha: stop calling me", call_sid="CAp2", audit_rule="opt_out.spoken"
    )
    await do_not_call.import_registry(db, ["9812345678,0"])  # and on the national registry


async def dump(db: Database) -> str:
    """Every row of every table (LangGraph's included, in their own SQLite file there;
    bytes as latin-1), as one text."""
    assert {"calls", "call_events", "checkpoints"} <= await table_names(db.url)
    return "\n".join(text for _, _, text in await dump_database(db.url))


async def count(db: Database, stmt: Any) -> int:
    async with db.sessionmaker() as s:
        return int(await s.scalar(stmt) or 0)


async def thread_text(settings: Settings, thread_id: str) -> str | None:
    async with AsyncExitStack() as stack:
        saver = await checkpointer(settings.effective_database_url, stack=stack, pool_size=2)
        found = await saver.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
        if found is None:
            return None
        return " ".join(str(m.content) for m in found.checkpoint["channel_values"].get("messages", []))


async def assert_person_gone_other_whole(settings: Settings, db: Database) -> None:
    everything = await dump(db)
    for needle in (DIGITS, "98123 45678", *PERSON_WORDS):
        assert needle not in everything, f"{needle!r} survived the erasure"
    # the other person: untouched
    assert "Bob Stone" in (await thread_text(settings, "o1") or "")
    async with db.sessionmaker() as s:
        other = await s.get(Call, "CAo1")
        assert other is not None and other.from_number == OTHER and other.transfer_summary == "Bob Stone wants a refund"
        assert [e.text for e in await s.scalars(select(CallEvent).where(CallEvent.call_sid == "CAo1"))] == [
            "Bob Stone here"
        ]
        assert [m.body for m in await s.scalars(select(Message))] == ["Bob needs a refund"]
        [appt] = await s.scalars(select(Appointment))
        assert appt.phone == OTHER and appt.name == "Bob Stone"
        assert [c.phone for c in await s.scalars(select(Contact))] == [OTHER]
        contacts = {c.line: c for c in await s.scalars(select(CampaignContact))}
        assert contacts[2].to_number == OTHER and contacts[2].context == {"name": "Bob Stone"}
        assert contacts[1].state == "done" and contacts[1].outcome == "erased" and contacts[1].context is None
        audit = sorted(a.to_number for a in await s.scalars(select(OutboundAudit)))
        assert audit == sorted([OTHER, ERASED, ERASED])
        # the person's calls: anonymised business records (outcome, flow, times kept)
        mine = [await s.get(Call, sid) for sid in ("CAp1", "CAp2")]
        assert all(c is not None and ERASED in (c.from_number, c.to_number) and c.outcome == "completed" for c in mine)
        assert all(c is not None and c.context is None and c.transfer_summary is None for c in mine)
    assert await thread_text(settings, "p1") is None and await thread_text(settings, "p2") is None
    # the opt-out (and the registry entry) live on as the keyed hash only
    key = privacy_key(settings)
    assert await do_not_call.lookup(db, PERSON) == []
    assert sorted(e.source for e in await do_not_call.lookup(db, PERSON, hash_key=key)) == ["ncpr", "opt_out"]
    assert await do_not_call.lookup(db, OTHER, hash_key=key) == []
    assert await count(db, select(func.count()).select_from(DoNotCall)) == 2
    assert await do_not_call.remove(db, PERSON, source="opt_out") == 0  # the plain number is gone


async def test_api_erases_everything_about_one_person_and_the_opt_out_still_holds(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    async with TwilioApi() as api:
        settings = graph_settings(
            tmp_path, database_url, twilio_api_url=api.url, outbound={**ALL_DAY, "default_from": OUR}
        )
        await seed(settings, db)
        before = await dump(db)
        assert DIGITS in before and "98123 45678" in before  # the spaced form: only in p2's checkpoint bytes
        assert "marigold" in (await thread_text(settings, "p2") or "")
        async with db.sessionmaker() as s:
            booked = {a.phone: a.name for a in await s.scalars(select(Appointment))}
            assert booked == {PERSON: "Asha Verma", OTHER: "Bob Stone"}  # the booking tool wrote them

        app = create_app(settings, overrides=speechless(db=db))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
        ):
            answer = await client.delete(f"/api/people/{PERSON}", headers=ADMIN)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["erased"] is True and body["person"].startswith("h:") and DIGITS not in answer.text
            assert body["counts"] == {
                "calls": 2,
                "call_events": 3,
                "checkpoint_threads": 2,
                "messages": 2,
                "appointments": 1,
                "contacts": 1,
                "campaign_contacts": 1,
                "outbound_audit": 2,
                "do_not_call": 2,
                "recordings": 0,  # recording is off by default (test_recording.py erases some)
            }
            await assert_person_gone_other_whole(settings, db)
            again = await client.delete(f"/api/people/{PERSON}", headers=ADMIN)  # idempotent
            assert again.status_code == 200 and set(again.json()["counts"].values()) == {0}
            assert body["person"] == again.json()["person"]

            # the erased opt-out still refuses a call: 409, and Twilio never asked
            placed = await client.post("/api/calls", json={"to": PERSON, "flow": "sales"}, headers=ADMIN)
            assert placed.status_code == 409, placed.text
            assert placed.json()["detail"]["reason"] == "opted_out"
            assert placed.json()["detail"]["rule"] == "business.opt_out"
            assert not [r for r in api.requests if r.method == "POST" and r.path.endswith("/Calls.json")]
    # an operator who lifts the opt-out (knowing the number) lifts the hashed entry too
    assert await do_not_call.remove(db, PERSON, source="opt_out", hash_key=privacy_key(settings)) == 1
    assert [e.source for e in await do_not_call.lookup(db, PERSON, hash_key=privacy_key(settings))] == ["ncpr"]
    # the other person may still be called as far as the lists go
    req = OutboundRequest(to=OTHER, from_=OUR, flow="sales")
    assert await compliance.check(db, settings, req, fixed_clock()) is None


async def test_api_refuses_a_bad_phone_and_a_missing_token(settings: Settings, db: Database) -> None:
    app = create_app(settings, overrides=speechless(db=db, runners={}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        assert (await client.delete(f"/api/people/{PERSON}")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.delete(f"/api/people/{PERSON}", headers=wrong)).status_code == 401
        for bad in ("9812345678", "+0123", "+91abc1234567", "%2B9198123456789999"):
            answer = await client.delete(f"/api/people/{bad}", headers=ADMIN)
            assert answer.status_code == 422, (bad, answer.text)
            assert answer.json()["detail"][0]["loc"] == ["path", "phone"]
        ok = await client.delete("/api/people/%2B15550100000", headers=ADMIN)  # an encoded +, nobody known
        assert ok.status_code == 200 and set(ok.json()["counts"].values()) == {0}


async def test_erasure_keeps_a_thread_another_persons_call_shares(settings: Settings, db: Database) -> None:
    """A thread id also used by someone else's call is not the erased person's to delete."""
    async with AsyncExitStack() as stack:
        runners = await build_runners(settings, db, stack, clock=fixed_clock)
        await graph_call(runners["scheduling"], settings, "shared", OTHER, ["Hello, Bob Stone here"])
    async with db.sessionmaker() as s, s.begin():
        s.add(Call(sid="CAx", from_number=PERSON, to_number=OUR, thread_id="mine", previous_thread_id="shared"))
        s.add(Call(sid="CAy", from_number=OTHER, to_number=OUR, thread_id="shared"))
    report = await erase_person_by_settings(settings, PERSON, db=db)
    assert report.checkpoint_threads == 1  # "mine" only
    assert "Bob Stone" in (await thread_text(settings, "shared") or "")


def test_cli_erases_a_person_in_a_subprocess(tmp_path: Path) -> None:
    """``dialgraph data erase --phone`` against a SQLite file: counts on stdout, the log names
    the person by hash only, a bad number is exit code 2."""
    import asyncio

    url = f"sqlite+aiosqlite:///{tmp_path / 'dialgraph.db'}"
    settings = Settings(data_dir=tmp_path, database_url=url, _env_file=None)  # type: ignore[call-arg]

    async def prepare() -> None:
        db = Database(url)
        await db.upgrade()
        try:
            async with db.sessionmaker() as s, s.begin():
                s.add(Call(sid="CA1", from_number=PERSON, to_number=OUR, thread_id="t1"))
                await s.flush()
                s.add(CallEvent(call_sid="CA1", role="caller", text="I am Asha Verma"))
                s.add(Message(from_number=PERSON, body="Asha called"))
            await do_not_call.add_opt_out(db, PERSON)
        finally:
            await db.aclose()

    asyncio.run(prepare())
    env = {**os.environ, "DATABASE_URL": url, "DIALGRAPH_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("DIALGRAPH_CONFIG", None)
    cli = [sys.executable, "-m", "dialgraph.server.cli", "data", "erase", "--phone"]
    done = subprocess.run([*cli, PERSON], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "calls: 1" in done.stdout and "call_events: 1" in done.stdout and "do_not_call: 1" in done.stdout
    assert "person_erased" in done.stderr and "h:" in done.stderr
    assert DIGITS not in done.stdout + done.stderr

    async def check() -> None:
        db = Database(url)
        try:
            everything = await dump(db)
            assert DIGITS not in everything and "Asha" not in everything
            assert len(await do_not_call.lookup(db, PERSON, hash_key=privacy_key(settings))) == 1
        finally:
            await db.aclose()

    asyncio.run(check())
    bad = subprocess.run([*cli, "98123"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "--phone" in bad.stderr


def test_cli_and_server_agree_on_the_hash_key(tmp_path: Path) -> None:
    """The key: privacy_hash_key when set; else derived from stream_token_secret (stable)."""
    a = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    b = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert privacy_key(a) == privacy_key(b) and privacy_key(a) != b"dev-stream-token-secret"
    keyed = Settings(data_dir=tmp_path, privacy_hash_key="k" * 32, _env_file=None)  # type: ignore[call-arg]
    assert privacy_key(keyed) == b"k" * 32
    rotated = Settings(data_dir=tmp_path, stream_token_secret="another-secret-value", _env_file=None)  # type: ignore[call-arg]
    assert privacy_key(rotated) != privacy_key(a)
    assert do_not_call.number_hash(PERSON, privacy_key(a)) != do_not_call.number_hash(PERSON, privacy_key(keyed))
    assert len(do_not_call.number_hash(PERSON, privacy_key(a))) == 32
