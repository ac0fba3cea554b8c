"""The app with real databases (SQLite and PostgreSQL via ``db``), a Twilio REST fake on
127.0.0.1 behind the real twilio-python client, and do-nothing speech (webhooks never
stream audio)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dialgraph.server.app import create_app
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings, TransferTarget
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.webhooks import TwilioWebhookClient
from dialgraph.telephony.speech.vad import EnergyVad
from dialgraph.telephony.twilio.call_control import build_call_control
from tests.fakes.speech import NullRecognizer, NullSynthesizer
from tests.fakes.twilio_rest import FakeTwilioRest

PUBLIC_URL = "https://voice.example.com"
ACCOUNT = "AC" + "1" * 32
AUTH_TOKEN = "twilio-auth-token-for-tests"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
STREAM_SECRET = "stream-secret-for-tests-0123456789"
SUPPORT_NUMBER = "+15550009999"
SALES_NUMBER = "+15550008888"
CALLER = "+14155550100"


@pytest.fixture
async def rest() -> AsyncIterator[FakeTwilioRest]:
    async with FakeTwilioRest(account_sid=ACCOUNT, auth_token=AUTH_TOKEN) as fake:
        yield fake


def make_settings(tmp_path: Path, database_url: str, rest_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "database_url": database_url,
        "public_url": PUBLIC_URL,
        "twilio_account_sid": ACCOUNT,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_api_url": rest_url,
        "stream_token_secret": STREAM_SECRET,
        "admin_token": ADMIN_TOKEN,
        "max_reconnects": 2,
        "numbers": {SUPPORT_NUMBER: "support", SALES_NUMBER: "sales"},
        "flows": {
            "scheduling": FlowSettings(transfer_targets={"front_desk": TransferTarget(number="+15550100001")}),
            "support": FlowSettings(
                transfer_targets={
                    "billing": TransferTarget(number="+15550100002", timeout_s=25),
                    "support": TransferTarget(number="+15550100003"),
                }
            ),
            "sales": FlowSettings(transfer_targets={"sales": TransferTarget(number="+15550100004")}),
        },
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def tw_settings(tmp_path: Path, database_url: str, rest: FakeTwilioRest) -> Settings:
    """Settings on the parametrized database (SQLite and PostgreSQL), REST API -> the fake."""
    return make_settings(tmp_path, database_url, rest.url)


@dataclass
class TwilioApp:
    settings: Settings
    db: Database
    rest: FakeTwilioRest
    http: httpx.AsyncClient
    twilio: TwilioWebhookClient

    def admin_headers(self, token: str = ADMIN_TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


async def start_app(settings: Settings, db: Database, rest: FakeTwilioRest) -> AsyncIterator[TwilioApp]:
    call_control = build_call_control(settings)
    app = create_app(
        settings,
        overrides=Overrides(
            db=db,
            recognizer=NullRecognizer(),
            synthesizer=NullSynthesizer(),
            vad_factory=EnergyVad,
            runners={},
            call_control=call_control,
        ),
    )
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            # The Host header is deliberately not the public host: validation must not use it.
            async with httpx.AsyncClient(transport=transport, base_url="http://internal:8080") as http:
                yield TwilioApp(
                    settings=settings,
                    db=db,
                    rest=rest,
                    http=http,
                    twilio=TwilioWebhookClient(http, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN),
                )
    finally:
        await call_control.aclose()


@pytest.fixture
async def tw(tw_settings: Settings, db: Database, rest: FakeTwilioRest) -> AsyncIterator[TwilioApp]:
    async for running in start_app(tw_settings, db, rest):
        yield running
