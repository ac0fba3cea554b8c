"""Redaction where things are stored or shown, on a real database: call events through the
process's ``CallEventWriter``, messages through the ``take_message`` tool, the call API's
answer, and a log line."""

from __future__ import annotations

import datetime as dt
import re
import sys

import httpx
import pytest
import structlog
from sqlalchemy import text

from dialgraph.server.app import create_app
from dialgraph.server.core.call_events import CallEventWriter
from dialgraph.server.core.call_store import add_events, record_call
from dialgraph.server.core.db import Database
from dialgraph.server.core.logging import configure_logging
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.redaction import RedactionSettings, Redactor, verhoeff_check_digit
from dialgraph.server.core.settings import Settings
from dialgraph.tools import build_tools
from tests.fakes.tool_graph import FixedClock, ToolGraph, call_context
from tests.server.test_app import speechless
from tests.telephony.harness import new_sids

CARD = "4242424242424242"
AADHAAR = "23456789012" + verhoeff_check_digit("23456789012")
SPOKEN_CARD = " ".join(["four", "two"] * 8)


async def new_call(db: Database) -> str:
    sid = new_sids()[0]
    await record_call(db, sid=sid, direction="inbound", from_number="", to_number="", flow="support", thread_id=sid)
    return sid


async def all_text(db: Database, table: str) -> str:
    """Every value of every row of ``table``, as one string."""
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608 - a fixed table name
    return "\n".join(" ".join(str(v) for v in row) for row in rows)


def no_number_in(stored: str, number: str) -> bool:
    """Neither the number nor its first digits (all but the last four) appear, with any
    separators dropped."""
    return number[:-4] not in re.sub(r"[^0-9]", "", stored) and number not in stored


async def test_call_events_are_stored_redacted(db: Database) -> None:
    sid = await new_call(db)
    async with CallEventWriter(db, interval_s=60) as writer:
        writer.record(CallEvent(call_sid=sid, kind="turn", role="caller", text=f"my card is {SPOKEN_CARD}"))
        writer.record(CallEvent(call_sid=sid, kind="turn", role="agent", text=f"So that's {CARD[:8]} {CARD[8:]}?"))
        writer.record(CallEvent(call_sid=sid, kind="turn", role="caller", text=f"aadhaar {AADHAAR[:4]}-{AADHAAR[4:]}"))
        writer.record(CallEvent(call_sid=sid, kind="turn", role="caller", text="book me for tuesday at 4"))
        await writer.flush_now()
    stored = await all_text(db, "call_events")
    assert no_number_in(stored, CARD) and no_number_in(stored, AADHAAR)
    assert "four two four two" not in stored
    assert "my card is [card ending 4242]" in stored and "So that's [card ending 4242]?" in stored
    assert f"aadhaar [Aadhaar ending {AADHAAR[-4:]}]" in stored and "book me for tuesday at 4" in stored


async def test_keys_typed_in_a_burst_are_masked_after_the_first(db: Database) -> None:
    sid = await new_call(db)
    writer = CallEventWriter(db)
    for key in CARD:
        writer.record(CallEvent(call_sid=sid, kind="dtmf", role="caller", text=key))
    await writer.flush_now()
    async with db.engine.connect() as conn:
        keys = (await conn.execute(text("SELECT text FROM call_events WHERE kind = 'dtmf' ORDER BY id"))).scalars()
        assert list(keys) == ["4"] + ["x"] * 15  # the first key of a burst is a menu choice


async def test_the_writer_follows_the_settings(db: Database) -> None:
    sid = await new_call(db)
    writer = CallEventWriter(db, redactor=Redactor(RedactionSettings(email=False)))
    writer.record(CallEvent(call_sid=sid, kind="turn", role="caller", text=f"jane@example.com, card {CARD}"))
    await writer.flush_now()
    assert "jane@example.com, card [card ending 4242]" in await all_text(db, "call_events")


async def test_a_message_is_stored_redacted(db: Database) -> None:
    graph = ToolGraph(build_tools(db=db, clock=FixedClock(dt.datetime(2026, 11, 23, tzinfo=dt.UTC))).values())
    said = (
        f"Please update my Aadhaar, it is {AADHAAR[:4]} {AADHAAR[4:8]} {AADHAAR[8:]}, and mail me at jane@example.com"
    )
    answer = await graph.text(call_context("+15550104567"), "take_message", message=said, caller_name="Jane Roe")
    assert answer.startswith("Message taken")
    stored = await all_text(db, "messages")
    assert no_number_in(stored, AADHAAR) and "jane@example.com" not in stored
    assert f"it is [Aadhaar ending {AADHAAR[-4:]}], and mail me at [email]" in stored
    assert "Jane Roe" in stored and "+15550104567" in stored  # who called and how to call back stay


async def test_the_call_api_answer_is_redacted(settings: Settings) -> None:
    app = create_app(settings, overrides=speechless())
    async with app.router.lifespan_context(app):
        db = app.state.services.db
        sid = await new_call(db)
        # rows written around the writer (or before redaction existed) never leave unredacted
        await add_events(db, [CallEvent(call_sid=sid, kind="turn", role="caller", text=f"card {CARD} exp 04/27")])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            response = await client.get(f"/api/calls/{sid}", headers={"Authorization": "Bearer dev-admin-token"})
    assert response.status_code == 200
    assert no_number_in(response.text, CARD)
    assert [e["text"] for e in response.json()["events"]] == ["card [card ending 4242] exp [expiry]"]


def test_redaction_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().redaction == RedactionSettings()
    monkeypatch.setenv("DIALGRAPH_REDACTION", '{"email": false, "otp": false}')
    assert Settings().redaction == RedactionSettings(email=False, otp=False)


def test_a_log_line_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    before = structlog.get_config()
    try:
        configure_logging("INFO")
        log = structlog.get_logger("test")
        log.info(f"charged card {CARD[:4]}-{CARD[4:8]}-{CARD[8:12]}-{CARD[12:]}", call_sid="CA4242424242424242")
        log.warning("lookup failed", error=f"no row for aadhaar {AADHAAR}", text=f"card {CARD}")
        sys.stderr.flush()
        err = capsys.readouterr().err
    finally:
        structlog.configure(**before)
    assert no_number_in(err.replace("CA4242424242424242", ""), CARD) and AADHAAR not in err
    assert "charged card [card ending 4242]" in err and "call_sid='CA4242424242424242'" in err  # ids are not text
    assert f"no row for aadhaar [Aadhaar ending {AADHAAR[-4:]}]" in err and "text='<21 chars>'" in err
