"""Webhook queue and worker on real SQLite and PostgreSQL, POSTing to a real HTTP receiver
on 127.0.0.1; signatures; configuration."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from dialgraph.server.core.call_store import get_call, record_call, update_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Campaign, WebhookDelivery, utcnow
from dialgraph.server.core.settings import Settings
from dialgraph.server.webhooks import queue, signing
from dialgraph.server.webhooks.worker import WebhookWorker, backoff_s
from tests.fakes.webhook_receiver import receiver

SECRET = "whsec-test-0123456789abcdef"


def hook_settings(
    tmp_path: Path, url: str, database_url: str, secrets: dict[str, str] | None = None, **webhooks: Any
) -> Settings:
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        database_url=database_url,
        _env_file=None,
        webhooks={
            "endpoints": {"crm": {"url": url}},
            "retry_base_s": 0.01,
            "retry_max_s": 0.05,
            "poll_interval_s": 0.05,
            "settle_s": 0,
            "analysis_wait_s": 0,
            **webhooks,
        },
        webhook_secrets=json.dumps(secrets or {"crm": SECRET}),
    )


async def a_call(db: Database, sid: str = "CA0001") -> Any:
    call = await record_call(
        db,
        sid=sid,
        direction="inbound",
        from_number="+919812345621",
        to_number="+15550001000",
        flow="support",
        thread_id=sid,
        status="in-progress",
    )
    await update_call(db, sid, transfer_target="billing", transfer_reason="billing question")
    return await get_call(db, call.sid)


async def rows(db: Database) -> list[WebhookDelivery]:
    async with db.sessionmaker() as s:
        return list((await s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.created_at))).all())


async def drain(worker: WebhookWorker, db: Database, *, until: str = "delivered", timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while any(r.status != until and r.status != "failed" for r in await rows(db)):
            if not await worker.run_once():
                await asyncio.sleep(0.02)


# --- signing (pure) ------------------------------------------------------------------------------
def test_signature_verifies_and_refuses_tampering_old_timestamps_and_wrong_secrets() -> None:
    body = b'{"event":"call.ended"}'
    now = int(time.time())
    header = signing.sign(SECRET, body, now)
    assert header.startswith(f"t={now},v1=")
    assert signing.verify_signature(SECRET, body, header)
    assert signing.verify_signature(SECRET, body.decode(), header)
    assert not signing.verify_signature(SECRET, body + b" ", header)
    assert not signing.verify_signature("another-secret", body, header)
    assert not signing.verify_signature(SECRET, body, signing.sign(SECRET, body, now - 301))
    assert signing.verify_signature(SECRET, body, signing.sign(SECRET, body, now - 299))
    assert not signing.verify_signature(SECRET, body, signing.sign(SECRET, body, now + 400))
    assert not signing.verify_signature(SECRET, body, "v1=" + header.split("v1=")[1])
    assert not signing.verify_signature(SECRET, body, "t=abc,v1=00")
    # a rotated secret: the receiver accepts a header that carries one good v1 among others
    assert signing.verify_signature(SECRET, body, f"t={now},v1={'0' * 64},v1={header.split('v1=')[1]}")


def test_backoff_doubles_caps_and_jitters() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_s(n, 10, 3600, rng=rng) for n in range(1, 12)]
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20 and 20 <= delays[2] <= 40
    assert all(1800 <= d <= 3600 for d in delays[9:])
    assert len({round(d, 6) for d in delays}) == len(delays)


# --- settings ------------------------------------------------------------------------------------
def test_settings_need_a_secret_per_endpoint_and_read_secret_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = {"endpoints": {"crm": {"url": "https://crm.example/hook", "secret_env": "CRM_HOOK_SECRET"}}}
    with pytest.raises(ValidationError, match="no signing secret"):
        Settings(_env_file=None, webhooks=endpoints)  # type: ignore[call-arg]
    monkeypatch.setenv("CRM_HOOK_SECRET", "from-the-environment")
    s = Settings(_env_file=None, webhooks=endpoints)  # type: ignore[call-arg]
    assert s.webhook_secret("crm") == "from-the-environment"
    assert "from-the-environment" not in json.dumps(s.public())
    with pytest.raises(ValidationError, match="url"):
        Settings(_env_file=None, webhooks={"endpoints": {"x": {"url": "ftp://x"}}})  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="events"):
        Settings(_env_file=None, webhooks={"endpoints": {"x": {"url": "http://x", "events": ["call.started"]}}})  # type: ignore[call-arg]


def test_the_config_file_refuses_webhook_secrets(tmp_path: Path) -> None:
    path = tmp_path / "dialgraph.toml"
    path.write_text('webhook_secrets = \'{"crm": "s3cr3t"}\'\n[webhooks.endpoints.crm]\nurl = "http://x"\n')
    with pytest.raises(ValueError, match="holds secrets"):
        Settings(config_file=path, _env_file=None)  # type: ignore[call-arg]


def test_flow_endpoints_join_or_replace_the_global_ones(tmp_path: Path) -> None:
    s = Settings(  # type: ignore[call-arg]
        _env_file=None,
        webhooks={"endpoints": {"crm": {"url": "http://crm"}}},
        flows={
            "support": {"webhooks": {"endpoints": {"desk": {"url": "http://desk", "events": ["call.ended"]}}}},
            "sales": {"webhooks": {"endpoints": {"sf": {"url": "http://sf"}}, "global_endpoints": False}},
            "scheduling": {},
        },
        webhook_secrets=json.dumps({"crm": "a", "desk": "b", "sf": "c"}),
    )
    assert sorted(s.webhook_endpoints("support")) == ["crm", "desk"]
    assert sorted(s.webhook_endpoints("sales")) == ["sf"]
    assert sorted(s.webhook_endpoints("scheduling")) == ["crm"]
    assert sorted(s.webhook_endpoints()) == ["crm", "desk", "sf"]
    with pytest.raises(ValidationError, match="used twice"):
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            webhooks={"endpoints": {"crm": {"url": "http://crm"}}},
            flows={"support": {"webhooks": {"endpoints": {"crm": {"url": "http://other"}}}}, "scheduling": {}},
            webhook_secrets=json.dumps({"crm": "a"}),
        )


# --- delivery ------------------------------------------------------------------------------------
async def test_a_receiver_failing_three_times_gets_exactly_one_accepted_delivery(
    tmp_path: Path, db: Database, database_url: str
) -> None:
    async with receiver(answer=lambda n: 500 if n < 3 else 200) as rec:
        settings = hook_settings(tmp_path, rec.url, database_url)
        call = await a_call(db)
        assert await queue.enqueue(db, settings, "transfer.started", call=call, status="dialing") == 1
        worker = WebhookWorker(db, settings, instance_id="test-1")
        try:
            await drain(worker, db)
        finally:
            await worker.aclose()
    (row,) = await rows(db)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("delivered", 4, 200, None)
    assert row.delivered_at is not None and row.claimed_by is None
    assert [r.status for r in rec.requests] == [500, 500, 500, 200]
    assert {r.headers["x-dialgraph-delivery"] for r in rec.requests} == {row.id}
    assert len({r.body for r in rec.requests}) == 1, "every retry sends the same bytes"
    for got in rec.requests:
        assert got.method == "POST" and got.path == "/hooks"
        assert got.headers["x-dialgraph-event"] == "transfer.started"
        assert signing.verify_signature(SECRET, got.body, got.headers["x-dialgraph-signature"])
        assert not signing.verify_signature("wrong", got.body, got.headers["x-dialgraph-signature"])
    body = rec.requests[-1].json()
    assert body["id"] == row.id and body["event"] == "transfer.started"
    data = body["data"]
    assert data["from"] == "+9198******21" and data["to"] == "+1555*****00"
    assert data["transfer"] == {"target": "billing", "status": "dialing", "reason": "billing question"}
    assert "9812345621" not in rec.requests[-1].body.decode()


async def test_410_gives_up_and_a_day_of_failures_fails(tmp_path: Path, db: Database, database_url: str) -> None:
    async with receiver(answer=lambda n: 410) as gone:
        settings = hook_settings(tmp_path, gone.url, database_url)
        await queue.enqueue(db, settings, "transfer.failed", call=await a_call(db), status="busy")
        worker = WebhookWorker(db, settings, instance_id="test-1")
        try:
            await drain(worker, db, until="failed")
        finally:
            await worker.aclose()
    (row,) = await rows(db)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("failed", 1, 410, "HTTP 410")
    assert await queue.retry(db, row.id)  # by hand: due again, one more attempt
    (again,) = await rows(db)
    assert again.status == "pending" and again.next_attempt_at >= row.next_attempt_at
    assert (await queue.claim(db, "test-1", limit=5, ttl_s=60))[0].attempts == 2
    assert not await queue.retry(db, row.id)  # in flight now
    assert await queue.finish(db, row.id, "test-1", status="failed", last_error="HTTP 410")

    async with receiver(answer=lambda n: 503) as down:
        settings = hook_settings(tmp_path, down.url, database_url, retry_for_s=0.3)
        await queue.enqueue(db, settings, "transfer.failed", call=await a_call(db, "CA0002"), status="busy")
        worker = WebhookWorker(db, settings, instance_id="test-1")
        try:
            await drain(worker, db, until="failed")
        finally:
            await worker.aclose()
    row = (await rows(db))[-1]
    assert row.status == "failed" and row.last_error == "HTTP 503" and row.attempts == len(down.requests) >= 2


async def test_a_refused_connection_is_retried_and_logged_without_content(
    tmp_path: Path, db: Database, database_url: str
) -> None:
    from dialgraph.telephony.simulator.process import free_port

    settings = hook_settings(tmp_path, f"http://127.0.0.1:{free_port()}/x", database_url)
    await queue.enqueue(db, settings, "transfer.started", call=await a_call(db), status="dialing")
    worker = WebhookWorker(db, settings, instance_id="test-1")
    try:
        assert await worker.run_once() == 1
    finally:
        await worker.aclose()
    (row,) = await rows(db)
    assert row.status == "pending" and row.attempts == 1 and row.last_error == "ConnectError"
    assert row.next_attempt_at > row.created_at


async def test_call_ended_is_queued_once_and_built_at_its_first_attempt(
    tmp_path: Path, db: Database, database_url: str
) -> None:
    async with receiver() as rec:
        endpoints = {
            "crm": {"url": rec.url},
            "raw": {"url": rec.url, "mask_numbers": False, "events": ["call.ended"]},
        }
        secrets = {"crm": SECRET, "raw": SECRET + "2"}
        settings = hook_settings(tmp_path, rec.url, database_url, secrets, endpoints=endpoints)
        call = await a_call(db)
        assert await queue.enqueue(db, settings, "call.ended", call=call) == 2
        assert await queue.enqueue(db, settings, "call.ended", call=call) == 2  # attempted, deduplicated in SQL
        assert len(await rows(db)) == 2 and all(r.body is None for r in await rows(db))
        now = utcnow()
        await update_call(db, call.sid, status="completed", answered_at=now - dt.timedelta(seconds=30), ended_at=now)
        worker = WebhookWorker(db, settings, instance_id="test-1")
        try:
            await drain(worker, db)
        finally:
            await worker.aclose()
    assert len(rec.requests) == 2
    by_endpoint = {r.endpoint: r for r in await rows(db)}
    for got in rec.requests:
        row = next(r for r in by_endpoint.values() if r.id == got.headers["x-dialgraph-delivery"])
        assert got.json() == row.body
        secret = SECRET if row.endpoint == "crm" else SECRET + "2"
        assert signing.verify_signature(secret, got.body, got.headers["x-dialgraph-signature"])
    masked = by_endpoint["crm"].body["data"]  # type: ignore[index]
    raw = by_endpoint["raw"].body["data"]  # type: ignore[index]
    assert masked["from"] == "+9198******21" and raw["from"] == "+919812345621"
    assert masked["duration_s"] == 30.0 and masked["outcome"] is None and masked["analysis"] is None
    assert masked["transfer"] == {"target": "billing", "status": None}


async def test_an_expired_claim_is_taken_over(tmp_path: Path, db: Database, database_url: str) -> None:
    async with receiver() as rec:
        settings = hook_settings(tmp_path, rec.url, database_url)
        await queue.enqueue(db, settings, "transfer.started", call=await a_call(db), status="dialing")
        (claimed,) = await queue.claim(db, "dead-instance", limit=10, ttl_s=0.2)
        assert claimed.status == "delivering" and claimed.attempts == 1
        assert await queue.claim(db, "other", limit=10, ttl_s=60) == []
        await asyncio.sleep(0.3)
        worker = WebhookWorker(db, settings, instance_id="alive")
        try:
            assert await worker.run_once() == 1
        finally:
            await worker.aclose()
        # the dead instance coming back cannot overwrite what the live one wrote
        assert not await queue.finish(db, claimed.id, "dead-instance", status="failed")
    (row,) = await rows(db)
    assert (row.status, row.attempts) == ("delivered", 2)


@pytest.mark.parametrize("instances", [2])
async def test_two_instances_never_deliver_one_row_twice(
    tmp_path: Path, db: Database, database_url: str, instances: int
) -> None:
    async with receiver(delay_s=0.01) as rec:
        settings = hook_settings(tmp_path, rec.url, database_url, concurrency=4)
        for n in range(60):
            await queue.enqueue(db, settings, "transfer.started", call=await a_call(db, f"CA{n:04d}"), status="dialing")
        dbs = [Database(database_url) for _ in range(instances)]
        workers = [WebhookWorker(d, settings, instance_id=f"instance-{i}") for i, d in enumerate(dbs)]
        try:
            for w in workers:
                w.start()
            await rec.wait_for(lambda got: len(got) >= 60)
            async with asyncio.timeout(10):
                while any(r.status != "delivered" for r in await rows(db)):
                    await asyncio.sleep(0.05)
        finally:
            for w in workers:
                await w.aclose()
            for d in dbs:
                await d.aclose()
    ids = [r.headers["x-dialgraph-delivery"] for r in rec.requests]
    assert len(ids) == 60 and len(set(ids)) == 60
    delivered = await rows(db)
    assert all(r.attempts == 1 and r.status == "delivered" for r in delivered)
    assert len({r.claimed_by for r in delivered}) == 1  # released (None) after delivery


async def test_campaign_finished_is_swept_once(tmp_path: Path, db: Database, database_url: str) -> None:
    async with receiver() as rec:
        settings = hook_settings(tmp_path, rec.url, database_url)
        now = utcnow()
        async with db.sessionmaker() as s, s.begin():
            s.add(
                Campaign(
                    id="cmp1",
                    name="Reminders",
                    flow="scheduling",
                    from_number="+15550001000",
                    status="completed",
                    finished_at=now,
                )
            )
            s.add(Campaign(id="cmp2", name="Running", flow="scheduling", from_number="+15550001000"))
        worker = WebhookWorker(db, settings, instance_id="test-1")
        other = WebhookWorker(db, settings, instance_id="test-2")
        try:
            assert await worker.sweep_campaigns() == 1
            assert await other.sweep_campaigns() == 0
            await drain(worker, db)
        finally:
            await worker.aclose()
            await other.aclose()
    (got,) = rec.requests
    body = got.json()
    assert got.headers["x-dialgraph-event"] == "campaign.finished"
    assert body["data"]["campaign_id"] == "cmp1" and body["data"]["status"] == "completed"
    assert body["data"]["counts"]["queued"] == 0


async def test_enqueue_never_raises(tmp_path: Path, database_url: str) -> None:
    settings = hook_settings(tmp_path, "http://127.0.0.1:9/x", database_url)
    closed = Database(database_url)
    await closed.aclose()
    broken = Database("sqlite+aiosqlite:////nonexistent-dir/x/y.db")
    call = type("C", (), {"sid": "CA1", "flow": "support"})()
    assert await queue.enqueue(broken, settings, "call.ended", call=call) == 0  # type: ignore[arg-type]
    await broken.aclose()
