"""[overload] on the outbound side: a process past its limit places no call.

The API through the real server (a call it placed counts while it rings, so a limit of one
refuses the second with 409), and the dispatcher and the contact queue on real SQLite and
PostgreSQL with the real twilio client against the local Twilio REST fake."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import CampaignContact, OutboundAudit, utcnow
from dialgraph.server.core.overload import MAX_CALLS_RULE, OVERLOAD_RETRY_S, Overload, OverloadSettings
from dialgraph.server.outbound import campaigns, contact_queue
from dialgraph.server.outbound.campaigns import CampaignSpec, ContactIn
from dialgraph.server.outbound.dispatcher import CampaignDispatcher
from dialgraph.server.outbound.placer import OutboundPlacer
from dialgraph.server.outbound.types import OutboundRequest, Refused
from dialgraph.telephony.simulator.scenario import Callee
from dialgraph.telephony.simulator.twilio_api import TwilioApi
from dialgraph.telephony.twilio.call_control import CallControl
from tests.fakes.sim_server import live_server
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.outbound.test_dispatcher import make_settings

ADMIN = {"Authorization": "Bearer dev-admin-token"}
ACCOUNT = "AC" + "4" * 32
TOKEN = "rest-auth-token-for-overload"
FROM = "+15559870000"


async def test_a_placed_call_counts_while_it_rings_and_the_next_one_gets_409(tmp_path: Path) -> None:
    outbound = {"window": {"start": "00:00", "end": "24:00"}, "default_from": "+15550003000"}
    async with (
        TwilioApi() as api,
        live_server(tmp_path, twilio_api_url=api.url, outbound=outbound, overload={"max_calls": 1}) as server,
        httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=30) as http,
    ):
        api.callees["+15557770010"] = Callee(kind="no-answer", ring_s=20)
        first = await http.post("/api/calls", json={"to": "+15557770010", "flow": "sales"}, headers=ADMIN)
        assert first.status_code == 201, first.text
        second = await http.post("/api/calls", json={"to": "+15557770011", "flow": "sales"}, headers=ADMIN)
        assert second.status_code == 409, second.text
        assert second.json()["detail"] == {
            "reason": "overloaded",
            "rule": MAX_CALLS_RULE,
            "retry_after_s": OVERLOAD_RETRY_S,
        }
        creates = [r for r in api.requests if r.method == "POST" and r.path.endswith("/Calls.json")]
        assert len(creates) == 1  # the refused call never reached Twilio
        health = await http.get("/healthz")
        assert health.status_code == 503 and health.json()["calls"] == 1
        metrics = (await http.get("/metrics", headers=ADMIN)).text
        assert "\ndialgraph_ready 0.0\n" in metrics  # mirrors /healthz
        async with asyncio.timeout(5):  # the overload's probe feeds the histogram (a sample per 100 ms)
            while float(lag_count(metrics)) == 0:
                await asyncio.sleep(0.1)
                metrics = (await http.get("/metrics", headers=ADMIN)).text
        db = Database(server.database_url)
        try:
            async with db.sessionmaker() as s:
                refused = (await s.scalars(select(OutboundAudit).where(OutboundAudit.decision == "refused"))).all()
            assert [(a.reason, a.rule) for a in refused] == [("overloaded", MAX_CALLS_RULE)]
        finally:
            await db.aclose()


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioRest]:
    async with FakeTwilioRest(account_sid=ACCOUNT, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def control(twilio: FakeTwilioRest) -> AsyncIterator[CallControl]:
    cc = CallControl(account_sid=ACCOUNT, auth_token=TOKEN, api_url=twilio.url, retry_delay_s=0)
    try:
        yield cc
    finally:
        await cc.aclose()


async def campaign_of(db: Database, n: int) -> str:
    spec = CampaignSpec.model_validate({"name": "spring", "flow": "sales", "from": FROM, "calls_per_second": 50})
    contacts = [ContactIn(to=f"+1212555{i:04d}", context={"name": f"P{i}"}) for i in range(n)]
    return (await campaigns.create_campaign(db, spec, contacts)).id


async def test_an_overloaded_dispatcher_claims_nothing_until_it_has_room(
    db: Database, tmp_path: Path, control: CallControl
) -> None:
    settings = make_settings(tmp_path)
    live: dict[str, object] = {"CAbusy": object()}  # one call in progress, at a limit of one
    overload = Overload(OverloadSettings(max_calls=1), live)
    placer = OutboundPlacer(db, settings, control, overload=overload)
    dispatcher = CampaignDispatcher(db, settings, placer, control, instance_id="busy", overload=overload)
    campaign_id = await campaign_of(db, 3)
    assert await dispatcher.run_once() == 0
    assert dispatcher.rounds_overloaded == 1
    counts = await campaigns.counts(db, campaign_id)
    assert counts["queued"] == 3 and counts["dialing"] == 0  # left for an instance with room
    live.clear()  # the call ended
    assert await dispatcher.run_once() > 0
    await dispatcher.aclose()


async def test_a_contact_refused_for_load_goes_back_to_the_queue_with_its_attempt_refunded(
    db: Database, tmp_path: Path, control: CallControl
) -> None:
    settings = make_settings(tmp_path)
    live: dict[str, object] = {}
    placer = OutboundPlacer(db, settings, control, overload=Overload(OverloadSettings(max_calls=1), live))
    await campaign_of(db, 1)
    now = utcnow()
    (claimed,) = await contact_queue.claim(db, "i1", now, limit=1)
    assert await contact_queue.start_dialing(db, claimed.contact_id, "i1")
    live["CAother"] = object()  # the process filled up between the claim and the dial
    with pytest.raises(Refused) as refused:
        await placer.place(claimed.request())
    await contact_queue.mark_skipped(db, claimed.contact_id, refused.value.refusal, now=now)
    async with db.sessionmaker() as s:
        contact = await s.get(CampaignContact, claimed.contact_id)
    assert contact is not None
    assert (contact.state, contact.outcome, contact.attempts) == ("queued", "skipped_overloaded", 0)
    assert contact.next_attempt_at is not None
    retry_at = contact.next_attempt_at.replace(tzinfo=contact.next_attempt_at.tzinfo or dt.UTC)
    assert retry_at == now + dt.timedelta(seconds=OVERLOAD_RETRY_S)


async def test_an_overloaded_placer_makes_no_rest_request(
    db: Database, tmp_path: Path, twilio: FakeTwilioRest, control: CallControl
) -> None:
    settings = make_settings(tmp_path)
    overload = Overload(OverloadSettings(max_calls=2), {"CA1": object(), "CA2": object()})
    placer = OutboundPlacer(db, settings, control, overload=overload)
    with pytest.raises(Refused) as refused:
        await placer.place(OutboundRequest(to="+12125550100", from_=FROM, flow="sales"))
    assert refused.value.refusal.body() == {
        "reason": "overloaded",
        "rule": MAX_CALLS_RULE,
        "retry_after_s": OVERLOAD_RETRY_S,
    }
    assert not twilio.requests
    async with db.sessionmaker() as s:
        audit = (await s.scalars(select(OutboundAudit))).all()
    assert [(a.decision, a.reason, a.rule) for a in audit] == [("refused", "overloaded", MAX_CALLS_RULE)]


def lag_count(metrics: str) -> str:
    line = next(line for line in metrics.splitlines() if line.startswith("dialgraph_event_loop_lag_seconds_count"))
    return line.split()[-1]
