"""End-of-call webhooks of whole simulated calls: the real server (uvicorn on 127.0.0.1, on
SQLite and PostgreSQL) POSTs signed reports to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select

from dialgraph.server.app import create_app
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Call, WebhookDelivery
from dialgraph.server.core.settings import Settings
from dialgraph.server.webhooks import verify_signature
from dialgraph.telephony.simulator.cli import SimulationResult, simulate
from dialgraph.telephony.simulator.process import free_port
from dialgraph.telephony.simulator.scenario import SCENARIO_NUMBERS
from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer
from tests.fakes.sim_server import text_speech
from tests.fakes.webhook_receiver import Receiver, receiver

SECRET = "whsec-simulated-0123456789"
ADMIN = {"Authorization": "Bearer dev-admin-token"}


@asynccontextmanager
async def hooked_server(tmp_path: Path, database_url: str, hook_url: str, **webhooks: Any) -> AsyncIterator[Settings]:
    port = free_port()
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        database_url=database_url,
        public_url=f"http://127.0.0.1:{port}",
        numbers=SCENARIO_NUMBERS,
        _env_file=None,
        webhooks={
            "endpoints": {"crm": {"url": hook_url, **webhooks.pop("endpoint", {})}},
            "poll_interval_s": 0.1,
            "settle_s": 0.5,
            "retry_base_s": 0.2,
            **webhooks,
        },
        webhook_secrets=json.dumps({"crm": SECRET}),
    )
    app = create_app(settings, overrides=text_speech())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.02)
        yield settings
    finally:
        server.should_exit = True
        await task


async def call(settings: Settings, scenario: str, out: Path) -> SimulationResult:
    return await simulate(
        scenario,
        url=settings.public_url,
        admin_token="dev-admin-token",
        out_dir=out,
        synthesizer=TextSynthesizer(),
        recognizer=TextRecognizer(),
        database_url=settings.effective_database_url,
        record=False,
    )


def events(rec: Receiver) -> list[str]:
    return [r.headers["x-dialgraph-event"] for r in rec.requests]


async def test_a_whole_call_reports_to_a_signed_receiver(tmp_path: Path, database_url: str) -> None:
    async with receiver() as rec, hooked_server(tmp_path, database_url, rec.url, analysis_wait_s=30) as settings:
        result = await call(settings, "scheduling_demo", tmp_path / "out")
        assert result.ok, (result.checks, result.failures)
        await rec.wait_for(lambda got: "call.ended" in [r.headers["x-dialgraph-event"] for r in got], timeout=60)
        async with httpx.AsyncClient(base_url=settings.public_url, headers=ADMIN) as api:
            page = (await api.get("/api/webhooks/deliveries", params={"event": "call.ended"})).json()
            listed = (await api.get("/api/webhooks/deliveries", params={"limit": 1})).json()
            second = await api.get("/api/webhooks/deliveries", params={"limit": 5, "cursor": listed["next_cursor"]})
            bad = await api.get("/api/webhooks/deliveries", params={"status": "lost"})
            bad_cursor = await api.get("/api/webhooks/deliveries", params={"cursor": "nope"})
            anonymous = await api.get("/api/webhooks/deliveries", headers={"Authorization": ""})
            (ended_item,) = page["items"]
            detail = (await api.get(f"/api/webhooks/deliveries/{ended_item['id']}")).json()
            again = await api.post(f"/api/webhooks/deliveries/{ended_item['id']}/retry")
            unknown = await api.post("/api/webhooks/deliveries/nope/retry")

    assert events(rec) == ["transfer.started", "transfer.failed", "call.ended"]
    for got in rec.requests:
        assert verify_signature(SECRET, got.body, got.headers["x-dialgraph-signature"])
        assert got.status == 200
        assert "5551230001" not in got.body.decode(), "the caller's number is masked"
    started, failed, ended = (r.json() for r in rec.requests)
    assert started["data"]["transfer"]["target"] == "front_desk" and started["data"]["transfer"]["status"] == "dialing"
    assert failed["data"]["transfer"]["status"] == "no-answer"
    report = ended["data"]
    assert ended["event"] == "call.ended" and report["call_sid"] == result.call_sid
    assert report["direction"] == "inbound" and report["flow"] == "scheduling"
    assert report["from"] == "+1555*****01" and report["to"] == "+1555*****01"
    assert report["outcome"] == "ended_by_agent" and report["status"] == "completed"
    assert report["transfer"] == {"target": "front_desk", "status": "no-answer"}
    assert report["started_at"] and report["ended_at"] and report["duration_s"] > 0
    roles = {t["role"] for t in report["transcript"]}
    assert roles == {"caller", "agent"} and len(report["transcript"]) >= 6
    assert any("parking" in t["text"] for t in report["transcript"] if t["role"] == "caller")
    assert report["cost"] is not None and "total" in report["cost"]
    assert report["analysis"] is not None and report["analysis"]["summary"]
    assert ended["id"] == ended_item["id"] == rec.requests[-1].headers["x-dialgraph-delivery"]

    assert ended_item["status"] == "delivered" and ended_item["attempts"] == 1
    assert detail["body"] == ended
    assert len(listed["items"]) == 1 and listed["next_cursor"]
    assert [i["id"] for i in second.json()["items"]] == [r.headers["x-dialgraph-delivery"] for r in rec.requests][:2][
        ::-1
    ]
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "status"]
    assert bad_cursor.status_code == 422 and bad_cursor.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert anonymous.status_code == 401
    assert again.status_code == 409 and again.json()["detail"]["reason"] == "delivered"
    assert again.json()["detail"]["rule"] == "webhooks.retry"
    assert unknown.status_code == 404


async def test_a_dead_receiver_does_not_delay_the_call(tmp_path: Path, sqlite_url: str) -> None:
    """The receiver takes every POST and never answers: the call runs and ends while the
    worker's POST of transfer.started is still held open."""
    async with (
        receiver(answer=lambda n: None) as rec,
        hooked_server(tmp_path, sqlite_url, rec.url, endpoint={"timeout_s": 30}, analysis_wait_s=0) as settings,
    ):
        loop = asyncio.get_running_loop()
        began = loop.time()
        result = await call(settings, "support_basic", tmp_path / "out")
        took = loop.time() - began
        assert result.ok, (result.checks, result.failures)
        assert rec.open_requests >= 1 and events(rec)[0] == "transfer.started"
        assert took < 30, "the call did not wait for the receiver's timeout"
        db = Database(sqlite_url)
        try:
            async with db.sessionmaker() as s:
                ended = await s.get(Call, result.call_sid)
                rows = list(await s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.created_at)))
        finally:
            await db.aclose()
        assert ended is not None and ended.status == "completed"
        assert [r.event for r in rows] == ["transfer.started", "call.ended"]
        assert rows[0].status == "delivering"  # still held by the dead receiver
        async with httpx.AsyncClient(base_url=settings.public_url, headers=ADMIN) as api:
            busy = await api.post(f"/api/webhooks/deliveries/{rows[0].id}/retry")
        assert busy.status_code == 409 and busy.json()["detail"]["reason"] == "delivering"
