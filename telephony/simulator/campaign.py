"""A campaign through the simulator: the callees answer (or not) while the server dials them.

``simulate_campaign`` gives each contact's number its ``Callee`` on the simulator's Twilio
API, creates the campaign with ``POST /api/campaigns`` (admin token), polls
``GET /api/campaigns/{id}`` until it is completed, and returns the server's counts, each
contact's outcome, and what the simulator saw of every call. ``render_campaign`` prints it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from dialgraph.telephony.simulator.outbound_call import OutboundCall
from dialgraph.telephony.simulator.scenario import Callee
from dialgraph.telephony.simulator.text_speech import decode_texts
from dialgraph.telephony.simulator.twilio_api import TwilioApi


@dataclass(frozen=True, slots=True)
class CampaignContact:
    """One person on the campaign's list, and who picks up at that number."""

    to: str
    callee: Callee
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CampaignResult:
    campaign_id: str | None
    status: str
    counts: dict[str, int]
    contacts: list[dict[str, Any]]
    calls: dict[str, list[OutboundCall]]  # by number: what the simulated Twilio placed
    rejected: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None
    transcripts: dict[str, list[str]] = field(default_factory=dict)  # by number: the server's record of the talk


async def simulate_campaign(
    *,
    url: str,
    api: TwilioApi,
    contacts: Sequence[CampaignContact],
    campaign: Mapping[str, Any],
    admin_token: str = "dev-admin-token",
    timeout_s: float = 600.0,
    poll_s: float = 0.5,
) -> CampaignResult:
    """Run ``campaign`` (the ``POST /api/campaigns`` body without ``contacts``) over
    ``contacts`` and wait until the server says it is completed."""
    for contact in contacts:
        api.callees[contact.to] = contact.callee
    body = {**campaign, "contacts": [{"to": c.to, "context": dict(c.context)} for c in contacts]}
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=30.0, trust_env=False) as http:
        created = await http.post("/api/campaigns", json=body)
        if created.status_code != 201:
            return CampaignResult(None, "refused", {}, [], {}, failure=f"{created.status_code}: {created.text[:300]}")
        campaign_id = str(created.json()["id"])
        rejected = list(created.json().get("rejected", []))
        state: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    state = (await http.get(f"/api/campaigns/{campaign_id}")).json()
                    if state.get("status") in ("completed", "cancelled"):
                        break
                    await asyncio.sleep(poll_s)
        except TimeoutError:
            failure: str | None = f"the campaign did not complete within {timeout_s:g} s"
        else:
            failure = None
        await api.wait_idle(timeout_s=60)
        listed = (await http.get(f"/api/campaigns/{campaign_id}/contacts")).json()
        calls = {c.to: api.calls_to(c.to) for c in contacts}
        transcripts: dict[str, list[str]] = {}
        for number, placed in calls.items():
            for call in placed:
                if call.answered_at is None:
                    continue
                record = await http.get(f"/api/calls/{call.sid}")
                if record.status_code == 200:
                    events = record.json().get("events", [])
                    transcripts.setdefault(number, []).extend(
                        f"{e['role']:<6} {e['text']}" for e in events if e.get("kind") == "turn" and e.get("text")
                    )
    return CampaignResult(
        campaign_id=campaign_id,
        status=str(state.get("status", "unknown")),
        counts={k: v for k, v in dict(state.get("counts", {})).items() if v},
        contacts=list(listed.get("contacts", [])),
        calls=calls,
        rejected=rejected,
        failure=failure,
        transcripts=transcripts,
    )


def render_campaign(result: CampaignResult) -> str:
    """The campaign's counts, then one line per contact with what happened on the phone and
    the conversation as the server recorded it."""
    if result.campaign_id is None:
        return f"campaign refused: {result.failure}"
    lines = [f"Campaign {result.campaign_id}: {result.status}"]
    lines.append("  counts: " + ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items())))
    for contact in result.contacts:
        number = str(contact.get("to", ""))
        calls = result.calls.get(number, [])
        seen = ", ".join(f"{c.status} (answered by {c.answered_by or '-'})" for c in calls) or "never dialled"
        lines.append(
            f"  {number}  {contact.get('outcome') or contact.get('state')}  attempts={contact.get('attempts')}  "
            f"twilio: {seen}"
        )
        for call in calls:
            for play in call.plays:
                words = " ".join(decode_texts(play))
                lines.append(f"      voicemail left: {words or f'{len(play) / 8000:.1f} s of audio'}")
        for text in result.transcripts.get(number, []):
            lines.append(f"      {text}")
    if result.rejected:
        lines.append(f"  rejected rows: {result.rejected}")
    if result.failure:
        lines.append(f"FAIL {result.failure}")
    return "\n".join(lines)
