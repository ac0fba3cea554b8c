"""What the ``dialgraph call | campaign | dnd`` verbs do, against the configured database and
Twilio account (no running server needed: campaigns are picked up by every running
instance's dispatcher, through the shared database).

Each returns a process exit status and prints JSON on stdout: 0 done, 2 bad input,
3 refused (the 409 reasons of the API), 4 Twilio failed.
"""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import CallingWindow, DltFields
from dialgraph.server.core.settings import Settings
from dialgraph.server.outbound import campaigns
from dialgraph.server.outbound.placer import OutboundPlacer
from dialgraph.server.outbound.types import OutboundRequest, Purpose, Refused
from dialgraph.telephony.twilio.call_control import CallControlError, build_call_control
from dialgraph.tools import do_not_call

EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_TWILIO = 4


def parse_context(pairs: list[str]) -> dict[str, str]:
    """``name=Jane purpose="a follow-up"`` -> a dict (ValueError on a pair without ``=``)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--context takes key=value, got {pair!r}")
        out[key.strip()] = value
    return out


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


async def _database(settings: Settings, stack: AsyncExitStack) -> Database:
    db = Database(settings.effective_database_url)
    stack.push_async_callback(db.aclose)
    if settings.env == "dev":
        await db.upgrade()
    return db


async def place_call(
    settings: Settings,
    *,
    to: str,
    flow: str,
    from_: str | None,
    context: dict[str, Any],
    purpose: Purpose,
    dlt: DltFields | None = None,
) -> int:
    """``dialgraph call +E164 --flow sales --context name=Jane``."""
    from dialgraph.server.outbound.compliance import valid_e164

    if not valid_e164(to):
        print(f"dialgraph: {to!r} is not an E.164 number (like +15551234567)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if flow not in settings.flows:
        print(f"dialgraph: unknown flow {flow!r} (have: {', '.join(sorted(settings.flows))})", file=sys.stderr)
        return EXIT_BAD_INPUT
    caller_id = from_ or settings.flows[flow].caller_id or settings.outbound.default_from
    if not caller_id:
        print(f"dialgraph: no caller ID: pass --from, or set [flows.{flow}].caller_id", file=sys.stderr)
        return EXIT_BAD_INPUT
    async with AsyncExitStack() as stack:
        db = await _database(settings, stack)
        control = build_call_control(settings)
        stack.push_async_callback(control.aclose)
        placer = OutboundPlacer(db, settings, control)
        request = OutboundRequest(to=to, from_=caller_id, flow=flow, purpose=purpose, context=context, dlt=dlt)
        try:
            sid = await placer.place(request)
        except Refused as exc:
            _print({"refused": exc.refusal.body()})
            return EXIT_REFUSED
        except CallControlError as exc:
            print(f"dialgraph: Twilio refused the call: {exc}", file=sys.stderr)
            return EXIT_TWILIO
    _print({"call_sid": sid, "status": "queued"})
    return 0


async def create_campaign(settings: Settings, *, spec: dict[str, Any], csv_path: Path, csv_text: str) -> int:
    """``dialgraph campaign create --name N --flow F --csv contacts.csv [...]``."""
    flow = str(spec.get("flow", ""))
    if flow not in settings.flows:
        print(f"dialgraph: unknown flow {flow!r} (have: {', '.join(sorted(settings.flows))})", file=sys.stderr)
        return EXIT_BAD_INPUT
    spec = {
        **spec,
        "from_number": spec.get("from_number") or settings.flows[flow].caller_id or settings.outbound.default_from,
    }
    if not spec["from_number"]:
        print(f"dialgraph: no caller ID: pass --from, or set [flows.{flow}].caller_id", file=sys.stderr)
        return EXIT_BAD_INPUT
    contacts, errors = campaigns.parse_contacts_csv(csv_text)
    for error in errors:
        print(f"{csv_path}:{error.line}: {error.error}", file=sys.stderr)
    if not contacts:
        print("dialgraph: no valid contact in the file", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(spec.get("window"), dict):
        spec["window"] = CallingWindow.model_validate(spec["window"])
    campaign_spec = campaigns.CampaignSpec.model_validate(spec)
    async with AsyncExitStack() as stack:
        db = await _database(settings, stack)
        campaign = await campaigns.create_campaign(db, campaign_spec, contacts)
    _print({"id": campaign.id, "contacts": len(contacts), "rejected": len(errors)})
    return 0


async def campaign_status(settings: Settings, campaign_id: str) -> int:
    async with AsyncExitStack() as stack:
        db = await _database(settings, stack)
        campaign = await campaigns.get_campaign(db, campaign_id)
        if campaign is None:
            print(f"dialgraph: no campaign {campaign_id!r}", file=sys.stderr)
            return EXIT_BAD_INPUT
        counts = await campaigns.counts(db, campaign_id)
    _print({"id": campaign.id, "name": campaign.name, "status": campaign.status, "counts": counts})
    return 0


async def campaign_action(settings: Settings, campaign_id: str, action: str) -> int:
    change = {"pause": campaigns.pause, "resume": campaigns.resume, "cancel": campaigns.cancel}[action]
    async with AsyncExitStack() as stack:
        db = await _database(settings, stack)
        if await campaigns.get_campaign(db, campaign_id) is None:
            print(f"dialgraph: no campaign {campaign_id!r}", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            await change(db, campaign_id)
        except campaigns.CampaignStateError as exc:
            print(f"dialgraph: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    return await campaign_status(settings, campaign_id)


async def dnd_import(settings: Settings, path: Path) -> int:
    """``dialgraph dnd import FILE``: the NCPR/DND registry file, with its categories (read
    in a worker thread one batch at a time: registry files are large)."""
    async with AsyncExitStack() as stack:
        db = await _database(settings, stack)
        report = await do_not_call.import_registry(db, path)
    for error in report.errors:
        print(f"{path}:{error.line}: {error.reason}", file=sys.stderr)
    _print({"imported": report.imported, "rejected": len(report.errors)})
    return 0
