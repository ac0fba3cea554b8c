"""The campaign API and CLI: create from JSON or a CSV upload (bad rows reported by line,
good rows kept), status with counts, contacts, pause/resume/cancel; and a small campaign run
through the real dispatcher against the simulator's Twilio API (a person, a machine, a busy
line, a number on the national registry)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from dialgraph.server.core.db import Database
from dialgraph.server.outbound import campaigns
from dialgraph.telephony.simulator.campaign import CampaignContact, simulate_campaign
from dialgraph.telephony.simulator.scenario import Callee, Say, WaitForAgent
from dialgraph.telephony.simulator.text_speech import TextSynthesizer
from dialgraph.telephony.simulator.twilio_api import TwilioApi
from dialgraph.tools import do_not_call
from tests.fakes.sim_server import live_server

ADMIN = {"Authorization": "Bearer dev-admin-token"}
OUTBOUND = {"window": {"start": "00:00", "end": "24:00"}, "default_from": "+15550003000"}
CSV = """to,name,plan
+15557770101,Jane Doe,gold
+1 555 777 0102,Sam Lee,silver
12345,Bad Number,none
+15557770101,Jane Again,gold
"""


async def test_csv_upload_reports_bad_rows_by_line_and_keeps_the_good_ones(tmp_path: Path) -> None:
    async with live_server(tmp_path, outbound={**OUTBOUND, "dispatcher": False}) as server:
        async with httpx.AsyncClient(base_url=server.url, headers=ADMIN, trust_env=False) as http:
            spec = {"name": "follow-ups", "flow": "sales", "max_concurrent": 2, "max_attempts": 2}
            r = await http.post(
                "/api/campaigns",
                data={"campaign": json.dumps(spec)},
                files={"contacts": ("contacts.csv", CSV.encode(), "text/csv")},
            )
            assert r.status_code == 201, r.text
            created = r.json()
            assert created["contacts"] == 2
            assert [(e["line"], e["to"]) for e in created["rejected"]] == [(4, "12345"), (5, "+15557770101")]
            cid = created["id"]
            r = await http.get(f"/api/campaigns/{cid}")
            state = r.json()
            assert state["status"] == "active" and state["from"] == "+15550003000" and state["total"] == 2
            assert state["counts"]["queued"] == 2 and state["counts"]["completed"] == 0
            contacts = (await http.get(f"/api/campaigns/{cid}/contacts")).json()["contacts"]
            assert [(c["line"], c["to"], c["attempts"]) for c in contacts] == [
                (2, "+15557770101", 0),
                (3, "+15557770102", 0),
            ]
            assert (await http.post(f"/api/campaigns/{cid}/pause")).json()["status"] == "paused"
            assert (await http.post(f"/api/campaigns/{cid}/resume")).json()["status"] == "active"
            cancelled = (await http.post(f"/api/campaigns/{cid}/cancel")).json()
            assert cancelled["status"] == "cancelled" and cancelled["counts"]["canceled"] == 2
            again = await http.post(f"/api/campaigns/{cid}/resume")
            assert again.status_code == 409 and again.json()["detail"]["reason"] == "campaign_state"
            # bad requests name the field
            r = await http.post("/api/campaigns", json={**spec, "flow": "pizza", "contacts": [{"to": "+15550000001"}]})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "flow"]
            r = await http.post("/api/campaigns", json={**spec, "max_concurrent": 0, "contacts": []})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "max_concurrent"]
            r = await http.post("/api/campaigns", json={**spec, "contacts": [{"to": "nope"}]})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "contacts"]
            assert (await http.get("/api/campaigns/nope")).status_code == 404
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as anonymous:
            assert (await anonymous.get(f"/api/campaigns/{cid}")).status_code == 401


async def test_a_small_campaign_runs_to_completion_with_each_outcome(tmp_path: Path) -> None:
    person = Callee(
        kind="human",
        ring_s=0.2,
        steps=(WaitForAgent(), Say("Sorry, I'm not interested."), WaitForAgent()),
        linger_s=5,
    )
    contacts = [
        CampaignContact("+919800000001", person, {"name": "Jane Doe", "purpose": "your demo request"}),
        CampaignContact("+919800000002", Callee(kind="voicemail", ring_s=0.2, beep_after_s=0.5, hangup_after_s=30)),
        CampaignContact("+919800000003", Callee(kind="busy", ring_s=0.2)),
        CampaignContact("+919800000004", Callee(kind="human", ring_s=0.2)),
    ]
    async with (
        TwilioApi(synthesizer=TextSynthesizer()) as api,
        live_server(tmp_path, twilio_api_url=api.url, outbound={**OUTBOUND, "dispatch_interval_s": 0.1}) as server,
    ):
        db = Database(server.database_url)
        try:
            await do_not_call.import_registry(db, ["9800000004,0"])  # fully blocked on the NCPR
        finally:
            await db.aclose()
        campaign: dict[str, Any] = {
            "name": "demo",
            "flow": "sales",
            "max_concurrent": 2,
            "calls_per_second": 5,
            "dlt": {"entity_id": "1101234567890123456", "header": "ACMESL"},
        }
        result = await simulate_campaign(url=server.url, api=api, contacts=contacts, campaign=campaign, timeout_s=90)
    assert result.failure is None and result.status == "completed"
    outcomes = {c["to"]: c["outcome"] for c in result.contacts}
    assert outcomes == {
        "+919800000001": "completed",
        "+919800000002": "voicemail",
        "+919800000003": "busy",
        "+919800000004": "skipped_dnd",
    }
    assert result.counts == {"completed": 1, "voicemail": 1, "busy": 1, "skipped_dnd": 1}
    assert api.dials["+919800000004"] == 0 and max(api.dials.values()) == 1
    assert api.max_live <= 2


def test_cli_places_a_call_creates_a_campaign_and_imports_the_registry(tmp_path: Path) -> None:
    registry = tmp_path / "ncpr.txt"
    registry.write_text("number,categories\n9812345678,1|2\nnot-a-number\n")
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(CSV)

    async def scenario() -> None:
        async with TwilioApi(default_callee=Callee(kind="busy", ring_s=0.1)) as api:
            env = {
                "PATH": "/usr/bin:/bin",
                "DIALGRAPH_DATA_DIR": str(tmp_path / "data"),
                "DIALGRAPH_OUTBOUND": json.dumps(OUTBOUND),
                **api.env(),
            }

            def cli(*args: str) -> subprocess.CompletedProcess[str]:
                cmd = [sys.executable, "-m", "dialgraph.server.cli", *args]
                return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)

            imported = await asyncio.to_thread(cli, "dnd", "import", str(registry))
            assert imported.returncode == 0, imported.stderr
            assert json.loads(imported.stdout)["imported"] == 1
            assert f"{registry}:3:" in imported.stderr  # the bad line, by number
            placed = await asyncio.to_thread(cli, "call", "+15557770201", "--flow", "sales", "--context", "name=Jane")
            assert placed.returncode == 0, placed.stderr
            sid = json.loads(placed.stdout)["call_sid"]
            assert sid in api.calls and api.calls[sid].to == "+15557770201"
            refused = await asyncio.to_thread(
                cli, "call", "+919812345678", "--flow", "sales", "--purpose", "promotional", "--from", "+911401234567"
            )
            assert refused.returncode == 3 and json.loads(refused.stdout)["refused"]["reason"] in ("dnd", "dlt_missing")
            bad = await asyncio.to_thread(cli, "call", "12345", "--flow", "sales")
            assert bad.returncode == 2
            created = await asyncio.to_thread(
                cli, "campaign", "create", "--name", "n", "--flow", "sales", "--csv", str(contacts)
            )
            assert created.returncode == 0, created.stderr
            cid = json.loads(created.stdout)["id"]
            assert f"{contacts}:4:" in created.stderr and f"{contacts}:5:" in created.stderr
            paused = await asyncio.to_thread(cli, "campaign", "pause", cid)
            assert paused.returncode == 0 and json.loads(paused.stdout)["status"] == "paused"
            db = Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'dialgraph.db'}")
            try:
                state = await campaigns.status(db, cid)
                assert state is not None and state.total == 2
            finally:
                await db.aclose()
            assert len([c for c in api.calls.values()]) == 1  # the refused call made no request

    asyncio.run(scenario())
