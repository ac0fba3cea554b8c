"""The console's guards, over HTTP against the real app (SQLite and PostgreSQL): no page
without a session, no action without the session's CSRF token and a same-origin request,
no redirect out of the console, and the webhook deliveries page with its retry action."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from dialgraph.server.app import create_app
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import WebhookDelivery, utcnow
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer, TextVad

BASE = "http://console.test"


@pytest.fixture
async def client(tmp_path: Path, database_url: str, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path, database_url=database_url, public_url=BASE, _env_file=None
    )
    app = create_app(
        settings,
        overrides=Overrides(db=db, recognizer=TextRecognizer(), synthesizer=TextSynthesizer(), vad_factory=TextVad),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c,
    ):
        yield c


async def log_in(
    client: httpx.AsyncClient, token: str = "dev-admin-token", next: str = "/dashboard/live"
) -> httpx.Response:
    form = await client.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return await client.post("/dashboard/login", data={"token": token, "csrf": csrf[1], "next": next})


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    return found[1]


async def test_pages_want_a_session_and_the_login_wants_its_form(client: httpx.AsyncClient) -> None:
    for path in (
        "/dashboard/live",
        "/dashboard/calls",
        "/dashboard/flows",
        "/dashboard/webhooks",
        "/dashboard/calls/CA1",
    ):
        r = await client.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login?next=")
    # a login POST without the form's own token (a cross-site login) is refused
    r = await client.post("/dashboard/login", data={"token": "dev-admin-token", "csrf": "forged"})
    assert r.status_code == 403
    assert (await log_in(client, token="wrong")).status_code == 401
    r = await log_in(client, next="https://evil.example/steal")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/live"  # no open redirect
    r = await client.get("/dashboard/flows")
    assert r.status_code == 200 and "scheduling" in r.text


async def test_actions_want_the_csrf_token_and_the_same_origin(client: httpx.AsyncClient) -> None:
    await log_in(client)
    page = await client.get("/dashboard/live")
    token = csrf_of(page)
    assert (await client.post("/dashboard/logout", data={})).status_code == 403
    assert (await client.post("/dashboard/logout", data={"csrf": token + "x"})).status_code == 403
    r = await client.post("/dashboard/logout", data={"csrf": token}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = await client.post("/dashboard/logout", data={"csrf": token}, headers={"Origin": BASE})
    assert r.status_code == 303 and 'dialgraph_session=""' in r.headers["set-cookie"]
    client.cookies.clear()
    assert (await client.get("/dashboard/live")).status_code == 303


async def test_deliveries_are_listed_and_a_failed_one_can_be_retried(client: httpx.AsyncClient, db: Database) -> None:
    async with db.sessionmaker() as s, s.begin():
        s.add(
            WebhookDelivery(
                id="d1", endpoint="crm", url="https://crm.example/hook", event="call.ended", subject="CA1",
                status="failed", attempts=9, last_status_code=503, last_error="HTTP 503", created_at=utcnow(),
            )
        )  # fmt: skip
    await log_in(client)
    page = await client.get("/dashboard/webhooks")
    assert page.status_code == 200 and "call.ended" in page.text and "HTTP 503" in page.text
    r = await client.post("/dashboard/webhooks/d1/retry", data={"csrf": csrf_of(page)})
    assert r.status_code == 303
    async with db.sessionmaker() as s:
        (row,) = (await s.scalars(select(WebhookDelivery))).all()
    assert row.status == "pending"
    assert "pending" in (await client.get("/dashboard/webhooks?status=pending")).text
