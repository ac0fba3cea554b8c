"""The whole-call privacy test (issue 13, "Done when").

A call over the real WebSocket (the simulator against the real server under uvicorn, the
real support flow and offline model, text-carrying speech) in which the caller says a card
number (as digits in groups, then as words) and an Aadhaar number (as words). Afterwards no
12-digit run of either (digit words read as digits, separators removed:
``tests.fakes.db_dump.leaks``, independent of the redactor) appears in:

- any SQL table, every column of every row, checkpoint blobs included (read as bytes and
  as the msgpack inside): calls (transfer summary, reply heard), call_events (text, data),
  messages, checkpoints;
- the server log (structlog and uvicorn, captured at the file descriptors);
- the admin API's answer (``GET /api/calls/{sid}``);
- every body sent out: the end-of-call and transfer webhooks a receiver on 127.0.0.1 got
  (the call.ended report carries the transcript and the post-call summary), and the
  whisper TwiML Twilio fetches and reads to the human on a transfer (it carries the
  transfer summary, which here quotes the caller's first words).

And the agent still did the task that needed the number: the message is taken, its body
says ``[card ending 1111]``; the transfer to billing went through.

Runs on SQLite and on PostgreSQL (``database_url``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import structlog
import uvicorn
from sqlalchemy import select

from dialgraph.server.app import create_app
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Call, Message
from dialgraph.server.core.settings import Settings
from dialgraph.telephony.simulator.cli import simulate
from dialgraph.telephony.simulator.process import free_port
from dialgraph.telephony.simulator.scenario import SCENARIO_NUMBERS, load_scenario
from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer
from tests.fakes.db_dump import digits_view, dump_database, leaks
from tests.fakes.sim_server import text_speech
from tests.fakes.webhook_receiver import Receiver, receiver

pytestmark = pytest.mark.slow

CARD = "4111111111111111"  # Luhn-valid
AADHAAR = "234567890124"  # Verhoeff-valid
NUMBERS = (CARD, AADHAAR)
ADMIN = {"Authorization": "Bearer dev-admin-token"}

SCENARIO = """
name: privacy_call
flow: support
to: "+15550001002"
from: "+15551230002"
quiet_ms: 1200
steps:
  - wait_for_agent: true
  - say: "Why was my card 4111 1111 1111 1111 charged twice?"
  - wait_for_agent: true
  - say: "I would like to leave a message"
  - wait_for_agent: true
  - say: >-
      Please refund my card four one one one, one one one one, one one one one, one one one one.
      My Aadhaar number is two three four five six seven eight nine zero one two four.
  - wait_for_agent: true
  - say: "Can I talk to someone in billing?"
  - transfer: {answer: true, ring_s: 1, talk_s: 1}
  - wait_for_agent: true
expect:
  message_left: true
  transfer_to: billing
  transfer_status: completed
"""


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[str]:
    """The real app under uvicorn on 127.0.0.1 (``tests.fakes.sim_server``'s, on any database)."""
    app = create_app(settings, overrides=text_speech())
    port = int(settings.public_url.rsplit(":", 1)[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.02)
        yield settings.public_url
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def hooks() -> AsyncIterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (answers 200)."""
    async with receiver() as got:
        yield got


async def test_a_card_and_an_aadhaar_number_said_on_a_call_are_stored_nowhere(
    tmp_path: Path, database_url: str, capfd: pytest.CaptureFixture[str], hooks: Receiver
) -> None:
    port = free_port()
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        database_url=database_url,
        public_url=f"http://127.0.0.1:{port}",
        numbers=SCENARIO_NUMBERS,
        log_level="DEBUG",
        _env_file=None,
        webhooks={
            "endpoints": {"crm": {"url": hooks.url, "mask_numbers": False}},
            "poll_interval_s": 0.1,
            "settle_s": 0.5,
        },  # fmt: skip
        webhook_secrets=json.dumps({"crm": "privacy-test-webhook-secret"}),
    )
    path = tmp_path / "privacy_call.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    before = structlog.get_config()  # create_app points structlog at this test's captured stderr
    try:
        async with served(settings) as url:
            result = await simulate(
                load_scenario(path),
                url=url,
                admin_token="dev-admin-token",
                out_dir=tmp_path / "out",
                synthesizer=TextSynthesizer(),
                recognizer=TextRecognizer(),
                database_url=settings.effective_database_url,
                record=False,
            )
            # the end-of-call report goes out after the post-call analysis
            await hooks.wait_for(lambda got: any(r.headers["x-dialgraph-event"] == "call.ended" for r in got), 60)
            async with httpx.AsyncClient(base_url=url, headers=ADMIN) as client:
                answer = await client.get(f"/api/calls/{result.call_sid}")
        sys.stderr.flush()
        logs = capfd.readouterr()
    finally:
        structlog.configure(**before)
    assert result.ok, (result.checks, result.failures)
    assert result.protocol_violations == 0, result.violations

    # The caller's words reached the agent whole (the simulator heard what the agent said).
    said = [line.text for line in result.transcript if line.role == "caller"]
    assert any("4111 1111 1111 1111" in s for s in said)

    # The task that needed the number was done: the message, the transfer.
    db = Database(settings.effective_database_url)
    try:
        async with db.sessionmaker() as s:
            (message,) = list(await s.scalars(select(Message).where(Message.call_sid == result.call_sid)))
            call = await s.get(Call, result.call_sid)
    finally:
        await db.aclose()
    assert "[card ending 1111]" in message.body and "[Aadhaar ending 0124]" in message.body
    assert call is not None and (call.transfer_target, call.transfer_status) == ("billing", "completed")
    assert call.transfer_summary and "[card ending 1111]" in call.transfer_summary  # the caller's words, redacted

    # 1. Every value of every table, checkpoints included.
    stored = await dump_database(settings.effective_database_url)
    tables = {table for table, _, _ in stored}
    assert {"calls", "call_events", "messages"} <= tables
    assert tables & {"checkpoints", "checkpoint_blobs"}, tables
    assert any("[card ending 1111]" in text for table, _, text in stored if table.startswith("checkpoint"))
    leaked = sorted({(table, column) for table, column, text in stored if leaks(text, NUMBERS)})
    assert leaked == [], [digits_view(text)[:300] for _, _, text in stored if leaks(text, NUMBERS)][:3]

    # 2. The server log (structlog on stderr, uvicorn's access log).
    log_text = logs.out + logs.err
    assert "turn_done" in log_text and "/twilio/media" in log_text  # the capture holds the server's log
    assert [line for line in log_text.splitlines() if leaks(line, NUMBERS)] == []

    # 3. The admin API's answer.
    assert answer.status_code == 200
    body = answer.text
    assert "[card ending 1111]" in body and json.loads(body)["sid"] == result.call_sid
    assert leaks(body, NUMBERS) == []

    # 4. What went out: the webhooks (the call.ended report with its transcript and summary),
    # and the whisper read to the human before the transfer.
    events = [r.headers["x-dialgraph-event"] for r in hooks.requests]
    assert {"call.ended", "transfer.started"} <= set(events), events
    ended = next(r.json() for r in hooks.requests if r.headers["x-dialgraph-event"] == "call.ended")
    assert ended["data"]["transcript"] and ended["data"]["analysis"] is not None
    assert any("[card ending 1111]" in (t["text"] or "") for t in ended["data"]["transcript"])
    assert [r.headers["x-dialgraph-event"] for r in hooks.requests if leaks(r.body.decode(), NUMBERS)] == []
    (transfer,) = result.transfers
    whisper = " ".join(transfer["whisper"])
    assert "card ending 1111" in whisper
    assert leaks(whisper, NUMBERS) == []


def test_the_test_would_see_a_leak() -> None:
    """``leaks`` finds the numbers however they were said: it is not a rubber stamp."""
    assert leaks("card 4111-1111-1111-1111", NUMBERS) == [CARD]
    assert leaks("four one one one one one one one one one one one", NUMBERS) == [CARD]
    assert leaks("aadhaar two three four five six seven eight nine zero one two four", NUMBERS) == [AADHAAR]
    assert leaks(json.dumps({"t": "2345 6789 0124"}), NUMBERS) == [AADHAAR]
    assert leaks("[card ending 1111] [Aadhaar ending 0124]", NUMBERS) == []
