"""CampaignDispatcher with the real OutboundPlacer and the real twilio client against the
local Twilio REST fake, on real SQLite and PostgreSQL. The test plays Twilio's callbacks
(``campaigns.on_call_status``, as the /twilio/status route calls it)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse

from dialgraph.server.core.call_store import get_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import CallingWindow
from dialgraph.server.core.settings import OutboundSettings, Settings
from dialgraph.server.outbound import campaigns
from dialgraph.server.outbound.campaigns import CampaignSpec, ContactIn
from dialgraph.server.outbound.dispatcher import CampaignDispatcher
from dialgraph.server.outbound.placer import OutboundPlacer
from dialgraph.telephony.twilio.call_control import CallControl
from dialgraph.tools import do_not_call
from tests.fakes.twilio_rest import FakeTwilioRest

ACCOUNT = "AC" + "3" * 32
TOKEN = "rest-auth-token-for-dispatcher"


@dataclass
class CountingTwilio(FakeTwilioRest):
    """The REST fake, counting the calls it created that Twilio has not finished yet."""

    created: list[str] = field(default_factory=list)
    outstanding: set[str] = field(default_factory=set)
    most_outstanding: int = 0

    async def _create(self, request: Request) -> JSONResponse:
        response = await super()._create(request)
        if response.status_code == 201:
            sid = json.loads(bytes(response.body))["sid"]
            self.created.append(sid)
            self.outstanding.add(sid)
            self.most_outstanding = max(self.most_outstanding, len(self.outstanding))
        return response


@pytest.fixture
async def twilio() -> AsyncIterator[CountingTwilio]:
    async with CountingTwilio(account_sid=ACCOUNT, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def control(twilio: CountingTwilio) -> AsyncIterator[CallControl]:
    cc = CallControl(account_sid=ACCOUNT, auth_token=TOKEN, api_url=twilio.url, retry_delay_s=0)
    try:
        yield cc
    finally:
        await cc.aclose()


def make_settings(tmp_path: Path) -> Settings:
    outbound = OutboundSettings(
        account_calls_per_second=100,
        dispatch_interval_s=0.02,
        window=CallingWindow(start="00:00", end="24:00"),
    )
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path, public_url="https://voice.example.com", outbound=outbound, _env_file=None
    )


def dispatcher(db: Database, settings: Settings, control: CallControl, name: str) -> CampaignDispatcher:
    return CampaignDispatcher(db, settings, OutboundPlacer(db, settings, control), control, instance_id=name)


async def play_twilio(db: Database, twilio: CountingTwilio, rng: random.Random) -> None:
    """Answer every created call and end it a little later, as Twilio's callbacks would."""
    handled = 0
    ends: set[asyncio.Task[None]] = set()

    async def end(sid: str) -> None:
        while await get_call(db, sid) is None:  # the placer records the call once Twilio answered
            await asyncio.sleep(0.005)
        await campaigns.on_call_status(db, sid, "in-progress")
        # long enough that a dispatcher slowed by a busy box still fills every slot
        await asyncio.sleep(rng.uniform(0.15, 0.3))
        twilio.outstanding.discard(sid)  # before the row says so: never understates the count
        await campaigns.on_call_status(db, sid, "completed")

    try:
        while True:
            for sid in twilio.created[handled:]:
                task = asyncio.create_task(end(sid))
                ends.add(task)
                task.add_done_callback(ends.discard)
            handled = len(twilio.created)
            await asyncio.sleep(0.005)
    finally:
        for task in ends:
            task.cancel()
        await asyncio.gather(*ends, return_exceptions=True)


async def wait_completed(db: Database, campaign_id: str) -> None:
    while (await campaigns.get_campaign(db, campaign_id)).status != "completed":  # type: ignore[union-attr]
        await asyncio.sleep(0.01)


async def test_a_campaign_never_has_more_than_max_concurrent_calls_outstanding(
    db: Database, tmp_path: Path, twilio: CountingTwilio, control: CallControl
) -> None:
    settings = make_settings(tmp_path)
    contacts = [ContactIn(to=f"+1212555{i:04d}", context={"name": f"P{i}"}) for i in range(20)]
    spec = CampaignSpec.model_validate(
        {"name": "spring", "flow": "sales", "from": "+15559870000", "max_concurrent": 3, "calls_per_second": 50}
    )
    campaign = await campaigns.create_campaign(db, spec, contacts)
    first, second = dispatcher(db, settings, control, "i1"), dispatcher(db, settings, control, "i2")
    callbacks = asyncio.create_task(play_twilio(db, twilio, random.Random(3)))
    first.start()
    second.start()
    try:
        async with asyncio.timeout(20):
            await wait_completed(db, campaign.id)
    finally:
        await first.aclose()
        await second.aclose()
        callbacks.cancel()
        await asyncio.gather(callbacks, return_exceptions=True)
    assert twilio.most_outstanding == 3
    dialled = [twilio.calls[sid].to for sid in twilio.created]
    assert sorted(dialled) == sorted(c.to for c in contacts)  # each exactly once
    assert first.placed + second.placed == 20
    create = next(r for r in twilio.requests if r.method == "POST" and r.call_sid is None)
    assert create.form["Url"] == "https://voice.example.com/twilio/voice"
    counts = await campaigns.counts(db, campaign.id)
    assert {k: v for k, v in counts.items() if v} == {"completed": 20}
    rows = await campaigns.list_contacts(db, campaign.id)
    assert {(r.attempts, r.state) for r in rows} == {(1, "done")}
    call = await get_call(db, rows[0].call_sid or "")
    assert call is not None and (call.campaign_id, call.contact_id, call.context) == (
        campaign.id,
        rows[0].id,
        {"name": "P0"},
    )


async def test_refusals_are_skipped_and_rest_failures_retried_without_a_request(
    db: Database, tmp_path: Path, twilio: CountingTwilio, control: CallControl
) -> None:
    settings = make_settings(tmp_path)
    await do_not_call.add_opt_out(db, "+12125550001")
    contacts = [ContactIn(to="+12125550001"), ContactIn(to="+12125550002")]
    spec = CampaignSpec.model_validate(
        {"name": "s", "flow": "sales", "from": "+15559870000", "max_attempts": 2, "retry_after_s": 0}
    )
    campaign = await campaigns.create_campaign(db, spec, contacts)
    twilio.fail_next(status=503, code=20503, message="Service unavailable")
    only = dispatcher(db, settings, control, "i1")
    callbacks = asyncio.create_task(play_twilio(db, twilio, random.Random(4)))
    only.start()
    try:
        async with asyncio.timeout(20):
            await wait_completed(db, campaign.id)
    finally:
        await only.aclose()
        callbacks.cancel()
        await asyncio.gather(callbacks, return_exceptions=True)
    creates = [r for r in twilio.requests if r.method == "POST" and r.call_sid is None]
    assert [r.form["To"] for r in creates] == ["+12125550002", "+12125550002"]  # failed once, then placed
    opted, retried = await campaigns.list_contacts(db, campaign.id)
    assert (opted.outcome, opted.attempts, opted.call_sid) == ("skipped_opted_out", 0, None)
    assert (retried.outcome, retried.attempts) == ("completed", 2)


async def test_a_failing_round_is_logged_and_the_loop_goes_on(
    tmp_path: Path, control: CallControl, twilio: CountingTwilio
) -> None:
    settings = make_settings(tmp_path)
    unmigrated = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no tables: every round fails
    try:
        loop = dispatcher(unmigrated, settings, control, "i1")
        loop.start()
        async with asyncio.timeout(10):
            while loop.rounds_failed < 3:
                await asyncio.sleep(0.01)
        await loop.aclose()
    finally:
        await unmigrated.aclose()
    assert twilio.requests == []
