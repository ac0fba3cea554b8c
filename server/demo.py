"""`dialgraph demo`: the embedded default holding real spoken calls on this machine.

Starts the real server (a separate process, embedded defaults: SQLite, offline speech,
offline model) on a free local port, pointed at the simulator's Twilio REST API, then:

1. runs the shipped scheduling scenario (an inbound call) through the phone simulator over
   Twilio's protocol and prints what the simulator prints;
2. places a small outbound campaign (a person who books a follow-up, an answering machine,
   a busy line, a number on the national do-not-call registry) and prints its counts.

Exit status: 1 when an expectation of the call or of the campaign failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dialgraph.server.core.settings import Settings

SCENARIO = Path(__file__).resolve().parents[1] / "telephony" / "simulator" / "scenarios" / "scheduling_demo.yaml"


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s")


# The campaign: Indian numbers (the DLT and NCPR rules apply), a service call. The window is
# opened to the whole day so the demo runs at any hour; the default is 09:00-21:00.
CAMPAIGN_FROM = "+15550003000"
HUMAN, MACHINE, BUSY, DND = "+919800000001", "+919800000002", "+919800000003", "+919800000004"
DEMO_OUTBOUND = {
    "default_from": CAMPAIGN_FROM,
    "window": {"start": "00:00", "end": "24:00"},
    "dispatch_interval_s": 0.25,
}
EXPECTED_OUTCOMES = {HUMAN: "completed", MACHINE: "voicemail", BUSY: "busy", DND: "skipped_dnd"}


async def campaign_demo(url: str, api_port: int, database_url: str, out_dir: Path) -> int:
    """The outbound half of the demo; returns 1 when a contact ended otherwise than expected."""
    from sqlalchemy import select

    from dialgraph.server.core.db import Database
    from dialgraph.server.core.models import Appointment
    from dialgraph.telephony.simulator.campaign import CampaignContact, render_campaign, simulate_campaign
    from dialgraph.telephony.simulator.cli import offline_speech
    from dialgraph.telephony.simulator.scenario import Callee, load_scenario
    from dialgraph.telephony.simulator.twilio_api import TwilioApi
    from dialgraph.tools import do_not_call

    registry = out_dir / "ncpr.csv"
    registry.write_text("number,categories\n9800000004,0\n")  # fully blocked on the national registry
    db = Database(database_url)
    try:
        report = await do_not_call.import_registry(db, registry)
    finally:
        await db.aclose()
    print(f"\ndialgraph demo: imported {report.imported} number(s) from the DND registry file {registry}")
    human = load_scenario("outbound_sales_human")
    async with contextlib.AsyncExitStack() as stack:
        _, voice = await offline_speech(stack, asr=False, tts=True)
        api = await stack.enter_async_context(TwilioApi(port=api_port, synthesizer=voice))
        contacts = [
            CampaignContact(HUMAN, Callee(kind="human", ring_s=1.0, steps=human.steps, quiet_ms=human.quiet_ms),
                            {"name": "Jane Doe", "purpose": "your demo request"}),
            CampaignContact(MACHINE, Callee(kind="voicemail", ring_s=1.0, beep_after_s=2.0),
                            {"name": "Ravi Kumar", "purpose": "your solar quote"}),
            CampaignContact(BUSY, Callee(kind="busy", ring_s=1.0), {"name": "Asha Rao"}),
            CampaignContact(DND, Callee(kind="human", ring_s=1.0), {"name": "Vikram Shah"}),
        ]  # fmt: skip
        campaign = {
            "name": "demo follow-ups",
            "flow": "sales",
            "purpose": "service",
            "max_concurrent": 2,
            "calls_per_second": 1,
            "max_attempts": 1,
            "dlt": {"entity_id": "1101234567890123456", "header": "ACMESL"},
        }
        print("dialgraph demo: placing a campaign of 4 contacts (max 2 at once, 1 call per second)", flush=True)
        result = await simulate_campaign(url=url, api=api, contacts=contacts, campaign=campaign, timeout_s=420)
    print(render_campaign(result))
    (out_dir / "campaign.json").write_text(
        json.dumps({"counts": result.counts, "contacts": result.contacts}, indent=2, default=str)
    )
    outcomes = {str(c["to"]): c.get("outcome") for c in result.contacts}
    wrong: dict[str, object] = {
        n: (outcomes.get(n), want) for n, want in EXPECTED_OUTCOMES.items() if outcomes.get(n) != want
    }
    db = Database(database_url)
    try:
        async with db.sessionmaker() as s:
            booked = (await s.scalars(select(Appointment).where(Appointment.phone == HUMAN))).all()
    finally:
        await db.aclose()
    for appointment in booked:
        print(f"  {HUMAN} booked a follow-up: {appointment.starts_at:%A %Y-%m-%d %H:%M} UTC")
    if len(booked) != 1:
        wrong["follow-up booked"] = len(booked)
    if result.failure or wrong:
        print(f"FAIL campaign: {result.failure or ''} {wrong or ''}".rstrip())
        return 1
    print(f"PASS campaign: {', '.join(f'{n} {o}' for n, o in outcomes.items())}")
    return 0


def run_demo(settings: Settings, *, out_dir: Path, scenario: Path = SCENARIO) -> int:
    """Run the demo call; returns the process exit status."""
    from dialgraph.telephony.simulator.process import free_port

    data_dir = out_dir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    port, api_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DIALGRAPH_ENV": "dev",
        "DIALGRAPH_DATA_DIR": str(data_dir),
        "DIALGRAPH_PUBLIC_URL": url,
        "DIALGRAPH_MODEL": "offline",
        "DIALGRAPH_ASR": "offline",
        "DIALGRAPH_TTS": "offline",
        "TWILIO_API_URL": f"http://127.0.0.1:{api_port}",  # the simulator's Twilio REST API
        "DIALGRAPH_OUTBOUND": json.dumps(DEMO_OUTBOUND),
    }
    env.pop("DATABASE_URL", None)
    env.pop("DIALGRAPH_CONFIG", None)
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):  # the simulator's defaults sign both sides
        env.pop(name, None)
    log_path = out_dir / "server.log"
    print(f"dialgraph demo: starting the server on {url} (log: {log_path})", flush=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dialgraph.server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(url, proc, timeout_s=180)
            from dialgraph.telephony.simulator.cli import simulate_main

            database_url = f"sqlite+aiosqlite:///{(data_dir / 'dialgraph.db').resolve()}"
            status = simulate_main(
                [
                    str(scenario),
                    "--url",
                    url,
                    "--auth-token",
                    "dev-auth-token",
                    "--admin-token",
                    "dev-admin-token",
                    "--database-url",
                    database_url,
                    "--out",
                    str(out_dir),
                ]
            )
            return max(status, asyncio.run(campaign_demo(url, api_port, database_url, out_dir)))
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
