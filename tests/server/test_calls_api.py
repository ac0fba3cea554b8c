"""The call log API: list with filters, keyset paging and totals, live calls, and the live
event stream (SSE) of one call, on SQLite and PostgreSQL, with calls and events written by
the real writers (``call_store``, ``CallEventWriter``, ``limits.record_refusal``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from dialgraph.server.app import create_app
from dialgraph.server.core import call_store
from dialgraph.server.core.limits import LimitDecision, record_refusal
from dialgraph.server.core.live import hub
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.settings import Settings
from dialgraph.server.routes.calls_api import mask_number
from dialgraph.server.services import Overrides, Services
from dialgraph.telephony.simulator.process import free_port
from dialgraph.telephony.speech.vad import EnergyVad
from tests.fakes.speech import NullRecognizer, NullSynthesizer

ADMIN = {"Authorization": "Bearer dev-admin-token"}
T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)


def speechless() -> Overrides:
    return Overrides(recognizer=NullRecognizer(), synthesizer=NullSynthesizer(), vad_factory=EnergyVad, runners={})


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    app = create_app(settings, overrides=speechless())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield client, app.state.services


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[str, Services]]:
    """The app under uvicorn on 127.0.0.1 (SSE needs a real server: ASGITransport buffers)."""
    port = free_port()
    app = create_app(settings, overrides=speechless())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}", app.state.services
    finally:
        server.should_exit = True
        await task


async def add_call(
    services: Services,
    sid: str,
    *,
    started: dt.datetime,
    direction: str = "inbound",
    from_number: str = "+15550001111",
    to_number: str = "+15550009999",
    flow: str = "support",
    **values: Any,
) -> None:
    """A call through ``call_store`` (as the webhooks write it), then its state."""
    db = services.db
    await call_store.record_call(
        db, sid=sid, direction=direction, from_number=from_number, to_number=to_number, flow=flow, thread_id=sid
    )
    await call_store.update_call(db, sid, started_at=started, **values)


async def add_turns(services: Services, sid: str, *texts: str) -> None:
    writer = services.call_events
    for i, text in enumerate(texts):
        writer.record(CallEvent(call_sid=sid, kind="turn", role="caller" if i % 2 == 0 else "agent", text=text))
    await writer.flush_call(sid)


async def seed(services: Services) -> None:
    await add_call(
        services,
        "CA01",
        started=T0,
        from_number="+919812345621",
        to_number="+15550004000",
        flow="scheduling",
        status="completed",
        outcome="ended_by_agent",
        answered_at=T0 + dt.timedelta(seconds=2),
        ended_at=T0 + dt.timedelta(seconds=62),
        cost_total=0.0425,
    )
    await add_turns(services, "CA01", "hello", "hi, how can I help?", "book me in", "done")
    await add_call(
        services,
        "CA02",
        started=T0 + dt.timedelta(hours=1),
        direction="outbound",
        from_number="+15550004000",
        to_number="+447700900123",
        flow="sales",
        status="completed",
        outcome="voicemail",
        campaign_id="camp1",
        ended_at=T0 + dt.timedelta(hours=1, seconds=30),
    )
    await add_call(
        services,
        "CA03",
        started=T0 + dt.timedelta(days=1),
        flow="support",
        status="in-progress",
        from_number="+15551230003",
    )
    await add_turns(services, "CA03", "my card is 4242 4242 4242 4242", "let me check")
    await add_call(
        services,
        "CA04",
        started=T0 + dt.timedelta(days=1, hours=2),
        direction="outbound",
        to_number="+919812340000",
        flow="sales",
        status="no-answer",
        outcome="no_answer",
        campaign_id="camp1",
    )
    # A refused call, as the limit writes it (its own started_at is now: moved back).
    await record_refusal(
        services.db,
        LimitDecision(False, "limits.caller_calls_per_hour", 60),
        sid="CA05",
        from_number="+15551230003",
        to_number="+15550004000",
        flow="support",
        status="ringing",
    )
    await call_store.update_call(services.db, "CA05", started_at=T0 + dt.timedelta(days=2))


async def get(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await client.get("/api/calls", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    return dict(r.json())


def sids(page: dict[str, Any]) -> list[str]:
    return [item["sid"] for item in page["items"]]


def test_mask_number() -> None:
    assert mask_number("+919812345621") == "+9198******21"
    assert mask_number("+15551230001") == "+1555*****01"
    assert mask_number("+4930123") == "+4****23"  # short: less is kept
    assert mask_number("12345") == "*****"
    assert mask_number("anonymous") == "***"
    assert mask_number("") == ""


async def test_list_filters_totals_masks(settings: Settings) -> None:
    async with api(settings) as (client, services):
        await seed(services)
        assert (await client.get("/api/calls")).status_code == 401
        assert (await client.get("/api/calls", headers={"Authorization": "Bearer nope"})).status_code == 401
        assert (await client.get("/api/calls/live")).status_code == 401
        assert (await client.get("/api/calls/CA01/events")).status_code == 401

        everything = await get(client)
        assert sids(everything) == ["CA05", "CA04", "CA03", "CA02", "CA01"]  # newest first
        assert everything["total"] == 5 and everything["next_cursor"] is None
        first = everything["items"][-1]
        assert first["from_number"] == "+9198******21" and first["to_number"] == "+1555*****00"
        assert first["turns"] == 4 and first["duration_s"] == 60.0 and first["cost_total"] == pytest.approx(0.0425)
        assert first["flow"] == "scheduling" and first["outcome"] == "ended_by_agent"
        raw = (await client.get("/api/calls", headers=ADMIN)).text
        for number in ("+919812345621", "919812345621", "+447700900123", "+15551230003"):
            assert number not in raw  # matched, never shown

        assert sids(await get(client, flow="sales")) == ["CA04", "CA02"]
        assert sids(await get(client, direction="outbound")) == ["CA04", "CA02"]
        assert sids(await get(client, outcome="voicemail")) == ["CA02"]
        assert sids(await get(client, outcome="rate_limited")) == ["CA05"]
        assert sids(await get(client, status="in-progress")) == ["CA03"]
        assert sids(await get(client, campaign_id="camp1")) == ["CA04", "CA02"]
        assert sids(await get(client, phone="+919812345621")) == ["CA01"]  # exact E.164, From
        assert sids(await get(client, phone="+447700900123")) == ["CA02"]  # exact E.164, To
        assert sids(await get(client, phone="+9198123456")) == []  # exact means exact
        assert sids(await get(client, phone="5621")) == ["CA01"]  # digits: the end of a number
        assert sids(await get(client, phone="230003")) == ["CA05", "CA03"]
        assert sids(await get(client, phone="9812340000")) == ["CA04"]
        day2 = await get(client, **{"from": "2026-03-11", "to": "2026-03-11"})  # a date: its whole day
        assert sids(day2) == ["CA04", "CA03"] and day2["total"] == 2
        assert sids(await get(client, **{"from": "2026-03-10T09:30:00Z"})) == ["CA05", "CA04", "CA03", "CA02"]
        assert sids(await get(client, to="2026-03-10T10:00:00+00:00")) == ["CA02", "CA01"]  # inclusive
        assert sids(await get(client, to="2026-03-10T10:00:00")) == ["CA02", "CA01"]  # naive: UTC
        both = await get(client, flow="sales", direction="outbound", outcome="no_answer", phone="0000")
        assert sids(both) == ["CA04"] and both["total"] == 1

        # Live: CA03 (in progress), not the refused CA05 nor the ended ones. CA01..CA04 are
        # older than the live horizon, so a fresh live call is what shows.
        now = dt.datetime.now(dt.UTC)
        await add_call(services, "CA06", started=now - dt.timedelta(seconds=30), status="in-progress")
        await call_store.update_call(services.db, "CA06", answered_at=now - dt.timedelta(seconds=20))
        await add_call(services, "CA07", started=now - dt.timedelta(seconds=5), status="ringing")
        await add_call(services, "CA08", started=now - dt.timedelta(seconds=50), status="completed")
        r = await client.get("/api/calls/live", headers=ADMIN)
        assert r.status_code == 200, r.text
        live = r.json()
        assert [i["sid"] for i in live["items"]] == ["CA07", "CA06"] and live["total"] == 2
        assert 19 <= live["items"][1]["live_s"] < 60 and live["items"][1]["from_number"] == "+1555*****11"


BAD_FILTERS: list[tuple[dict[str, Any], str]] = [
    ({"direction": "sideways"}, "direction"),
    ({"outcome": "exploded"}, "outcome"),
    ({"status": "happy"}, "status"),
    ({"from": "yesterday"}, "from"),
    ({"to": "2026-13-01"}, "to"),
    ({"from": "2026-03-11", "to": "2026-03-10"}, "to"),
    ({"phone": "call me"}, "phone"),
    ({"phone": "12"}, "phone"),
    ({"limit": 0}, "limit"),
    ({"limit": 201}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "WyJ4IiwieSJd"}, "cursor"),  # valid base64 of ["x","y"]
    ({"flow": "no such/flow"}, "flow"),
]


async def test_bad_filters_are_422_naming_the_field(settings: Settings) -> None:
    async with api(settings) as (client, _):
        for params, name in BAD_FILTERS:
            r = await client.get("/api/calls", params=params, headers=ADMIN)
            assert r.status_code == 422, (params, r.text)
            assert [err["loc"] for err in r.json()["detail"]] == [["query", name]], (params, r.json())
        assert (await client.get("/api/calls", params={"limit": 200}, headers=ADMIN)).status_code == 200


async def test_cursor_paging_under_concurrent_inserts(settings: Settings) -> None:
    async with api(settings) as (client, services):
        # 13 calls, some sharing a started_at (the sid breaks the tie).
        for i in range(13):
            await add_call(services, f"CB{i:02d}", started=T0 + dt.timedelta(minutes=i // 3), flow="support")
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await get(client, limit=4, flow="support", **({"cursor": cursor} if cursor else {}))
            pages += 1
            assert page["total"] == 13 + 2 * (pages - 1)  # the count follows the inserts
            seen += sids(page)
            # Between pages, calls start (newer than anything listed) and one lands at the
            # very instant of the last item with a larger sid (so before it in the order).
            last = page["items"][-1]
            await add_call(services, f"CN{pages:02d}", started=dt.datetime.now(dt.UTC), flow="support")
            started = dt.datetime.fromisoformat(last["started_at"])
            await add_call(services, f"{last['sid']}z", started=started, flow="support")
            cursor = page["next_cursor"]
            if cursor is None:
                break
        expected = [f"CB{i:02d}" for i in range(13)]
        expected.sort(key=lambda s: (int(s[2:]) // 3, s), reverse=True)
        assert seen == expected  # no repeat, no skip, in order
        assert pages == 4
        # What was inserted at an instant already listed shows on a fresh listing, in place.
        exact = await get(client, limit=5, **{"from": "2026-03-10T09:03:00Z", "to": "2026-03-10T09:04:00Z"})
        assert sids(exact) == ["CB12", "CB11", "CB10", "CB09z", "CB09"] and exact["next_cursor"] is None


# --- the live event stream ----------------------------------------------------------------------
@dataclass
class SseReader:
    """Reads an SSE response into parsed events as they arrive."""

    events: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self, response: httpx.Response) -> None:
        current: dict[str, Any] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "event" in current:
                    current["data"] = json.loads(current["data"])
                    self.events.append(current)
                    self.arrived.set()
                current = {}
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(": ")
                current[name] = value

    async def until(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self.arrived.clear()
                await self.arrived.wait()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]


async def test_event_stream_follows_a_call_until_it_ends(settings: Settings) -> None:
    async with served(settings) as (url, services):
        now = dt.datetime.now(dt.UTC)
        await add_call(services, "CS01", started=now, status="in-progress")
        await add_turns(services, "CS01", "hello there")  # before the client came: sent first
        async with (
            httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=20) as client,
            client.stream("GET", "/api/calls/CS01/events") as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = SseReader()
            task = asyncio.create_task(reader.read(response))
            try:
                first = await reader.until(lambda e: e["event"] == "call_event")
                assert first["data"]["text"] == "hello there" and first["id"] == str(first["data"]["id"])
                await reader.until(lambda e: e["event"] == "status")
                # The writer stores a turn while the client listens: it arrives, redacted.
                services.call_events.record(
                    CallEvent(call_sid="CS01", kind="turn", role="caller", text="my card is 4242 4242 4242 4242")
                )
                card = await reader.until(lambda e: e["event"] == "call_event" and "card" in (e["data"]["text"] or ""))
                assert "4242 4242" not in card["data"]["text"] and "[card ending 4242]" in card["data"]["text"]
                # Interim caller text of a call on this process, through the hub: redacted too.
                while hub.subscribers == 0:
                    await asyncio.sleep(0.01)
                hub.caller_speech("CS01", "my otp is 123456", final=False)
                hub.caller_speech("CS99", "another call", final=False)  # not this call's
                interim = await reader.until(lambda e: e["event"] == "interim")
                assert interim["data"]["final"] is False and "id" not in interim
                assert "123456" not in interim["data"]["text"] and "[OTP]" in interim["data"]["text"]
                # The call ends: a last event, then the terminal status, then the stream closes.
                services.call_events.record(CallEvent(call_sid="CS01", kind="end_call", role="system"))
                await services.call_events.flush_call("CS01")
                await call_store.update_call(services.db, "CS01", status="completed", outcome="ended_by_agent")
                async with asyncio.timeout(15):
                    await task
            finally:
                task.cancel()
        kinds = [e["data"]["kind"] for e in reader.of("call_event")]
        assert kinds == ["turn", "turn", "end_call"]
        ids = [int(e["id"]) for e in reader.of("call_event")]
        assert ids == sorted(ids) and len(set(ids)) == 3
        assert [e["data"]["text"] for e in reader.of("interim")] == ["my otp is [OTP]"]
        assert reader.events[-1]["event"] == "end" and reader.events[-1]["data"]["status"] == "completed"
        assert reader.of("status")[-1]["data"] == {
            "status": "completed",
            "outcome": "ended_by_agent",
            "transfer_status": None,
        }
        assert hub.subscribers == 0  # the subscription went with the stream

        # Last-Event-ID resumes after the given event; an ended call's stream ends by itself.
        async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=20) as client:
            again = SseReader()
            headers = {"Last-Event-ID": str(ids[0])}
            async with client.stream("GET", "/api/calls/CS01/events", headers=headers) as response:
                await again.read(response)
            assert [int(e["id"]) for e in again.of("call_event")] == ids[1:]
            assert again.events[-1]["event"] == "end"
            bad = await client.get("/api/calls/CS01/events", headers={"Last-Event-ID": "abc"})
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]
            assert (await client.get("/api/calls/CA404/events")).status_code == 404


async def test_a_whole_call_shows_on_the_event_stream(tmp_path: Path) -> None:
    """A simulated call over the real WebSocket: its stored turns and its caller's words as
    recognised (through the hub: the session runs in this process) reach the stream, which
    ends with the call."""
    from dialgraph.telephony.simulator.cli import simulate
    from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer
    from tests.fakes.sim_server import live_server

    async with live_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url, headers=ADMIN) as client:
        call = asyncio.create_task(
            simulate(
                "support_basic",
                url=server.url,
                admin_token="dev-admin-token",
                out_dir=tmp_path / "out",
                synthesizer=TextSynthesizer(),
                recognizer=TextRecognizer(),
                database_url=server.database_url,
                record=False,
            )
        )
        try:
            async with asyncio.timeout(20):
                while not (live := (await client.get("/api/calls/live")).json()["items"]):
                    await asyncio.sleep(0.02)
            (item,) = live
            assert item["flow"] == "support" and item["from_number"] == "+1555*****02"
            reader = SseReader()
            async with client.stream("GET", f"/api/calls/{item['sid']}/events", timeout=None) as response:
                async with asyncio.timeout(120):
                    await reader.read(response)
            result = await call
        finally:
            call.cancel()
    assert result.ok, (result.checks, result.failures)
    assert result.call_sid == item["sid"]
    turns = [e["data"] for e in reader.of("call_event") if e["data"]["kind"] == "turn"]
    said = [line.text.removesuffix(" (barge-in)") for line in result.transcript if line.role == "caller"]
    assert [t["text"] for t in turns if t["role"] == "caller"] == said  # every caller turn, in order
    assert any(t["role"] == "agent" and t["latency_ms"] is not None for t in turns)
    assert [t["role"] for t in turns if t["interrupted"]] == ["agent"]  # the barge-in
    assert "transfer" in [e["data"]["kind"] for e in reader.of("call_event")]
    heard = [e["data"]["text"] for e in reader.of("interim")]
    assert heard and all(e["data"]["final"] for e in reader.of("interim"))  # the text recogniser gives finals
    assert set(heard) <= set(said) and heard[-1] == said[-1]
    assert reader.events[-1]["event"] == "end" and reader.events[-1]["data"]["status"] == "completed"
