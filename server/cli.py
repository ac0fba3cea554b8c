"""The ``dialgraph`` command line: serve, config check, db upgrade/prune, data erase, chat, call,
campaign, dnd, demo, simulate."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dialgraph.server.core.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "config", None):
        overrides["config_file"] = args.config
    try:
        return Settings(**overrides)
    except (ValidationError, ValueError) as exc:
        print(f"dialgraph: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MEDIA_WS = "dialgraph.server.routes.media_socket:MediaWebSocketProtocol"


def uvicorn_options(settings: Settings, *, host: str, port: int) -> dict[str, Any]:
    """How uvicorn serves dialgraph (``dialgraph serve``, with or without ``--workers``, which
    the demo and the simulator's server processes run too; ``bench.load_server``)."""
    return {
        "host": host,
        "port": port,
        "log_level": settings.log_level.lower(),
        "ws_max_size": 1 << 16,
        "ws_ping_interval": None,  # Twilio does not answer pings reliably; its stop/close ends calls
        # No permessage-deflate on the media socket: base64 mu-law does not compress, and
        # deflating every 20 ms frame both ways cost ~7 % of a core at 200 calls (a client
        # that offers it, as the websockets library does, gets an uncompressed socket).
        "ws_per_message_deflate": False,
        "proxy_headers": True,
        # /twilio/media on picows (frames parsed in C); other WebSockets on websockets-sansio
        "ws": MEDIA_WS,
    }


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings(args)  # validated here, before any worker starts
    if settings.env == "dev" and not _is_loopback(args.host):
        # Dev mode fills in well-known secrets (admin token, stream-token key): never
        # expose that on a network interface.
        print(
            f"dialgraph: refusing to serve dev mode on {args.host}: dev secrets are public. "
            "Set DIALGRAPH_ENV=production with real secrets, or bind to 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    options = uvicorn_options(settings, host=args.host, port=args.port)
    if args.workers <= 1:
        from dialgraph.server.app import create_app

        uvicorn.run(create_app(settings), **options)
        return 0
    # Several processes on one port: each worker rebuilds the settings from the same
    # environment and config file (a call's state is per process, shared state is in SQL).
    if args.config:
        os.environ["DIALGRAPH_CONFIG"] = str(Path(args.config).resolve())
    if settings.env == "dev":  # migrate once here, not racing in every worker's startup
        cmd_db_upgrade(args)
    asyncio.run(
        create_checkpoint_tables(settings)
    )  # likewise LangGraph's tables (concurrent CREATEs collide on PostgreSQL)
    # /metrics sums every worker: prometheus_client's multiprocess mode, in a fresh directory
    # per serve (stale files of an earlier run would count); the workers read it through
    # Settings.metrics_multiproc_dir (and prometheus_client from the same variable).
    metrics_dir = tempfile.mkdtemp(prefix="dialgraph-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("dialgraph.server.app:create_app_from_env", factory=True, workers=args.workers, **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


async def create_checkpoint_tables(settings: Settings) -> None:
    """Create the checkpoint saver's tables once, before several workers each set it up."""
    from contextlib import AsyncExitStack

    from dialgraph.graphs.checkpoint import checkpointer

    async with AsyncExitStack() as stack:
        await checkpointer(settings.effective_database_url, stack=stack)


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(json.dumps(settings.public(), indent=2, sort_keys=True, default=str))
    providers = settings.public()["providers"]
    print(f"active providers: asr={providers['asr']} tts={providers['tts']} model={providers['model']}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from dialgraph.server.core.db import upgrade
    from dialgraph.server.core.settings import mask_url

    settings = _settings(args)
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    print(f"database at head: {mask_url(url)}")
    return 0


def cmd_db_prune(args: argparse.Namespace) -> int:
    from dialgraph.server.maintenance import prune_report

    settings = _logged(_settings(args))
    report = asyncio.run(prune_report(settings))
    print("pruned, per kind ([retention] in dialgraph.toml):")
    for line in report.lines(settings):
        print(f"  {line}")
    return 0


def cmd_data_erase(args: argparse.Namespace) -> int:
    from dialgraph.server.privacy.erasure import InvalidPhone, erase_person_by_settings

    settings = _logged(_settings(args))
    try:
        report = asyncio.run(erase_person_by_settings(settings, args.phone))
    except InvalidPhone as exc:
        print(f"dialgraph: --phone: {exc}", file=sys.stderr)
        return 2
    print(f"erased person {report.ref} (their opt-outs are kept as this hash):")
    for kind, count in report.counts().items():
        print(f"  {kind}: {count}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from dialgraph.graphs.chat import run_chat

    settings = _settings(args)
    if args.flow not in settings.flows:
        print(f"dialgraph: unknown flow {args.flow!r} (have: {', '.join(sorted(settings.flows))})", file=sys.stderr)
        return 2
    return asyncio.run(run_chat(settings, flow=args.flow, caller=args.from_number, thread_id=args.thread))


def cmd_simulate(args: argparse.Namespace, rest: list[str]) -> int:
    from dialgraph.telephony.simulator.cli import simulate_main

    return simulate_main([*([args.scenario] if args.scenario else []), "--url", args.url, *rest])


def cmd_demo(args: argparse.Namespace) -> int:
    from dialgraph.server.demo import run_demo

    return run_demo(_settings(args), out_dir=Path(args.out).resolve())


def _logged(settings: Settings) -> Settings:
    """Logs to stderr (redacted), so a command's JSON answer owns stdout."""
    from dialgraph.server.core.logging import configure_logging
    from dialgraph.server.core.redaction import redactor_for

    configure_logging(settings.log_level, redactor=redactor_for(settings.redaction))
    return settings


def cmd_call(args: argparse.Namespace) -> int:
    from dialgraph.server.outbound import commands

    try:
        context = commands.parse_context(args.context or [])
    except ValueError as exc:
        print(f"dialgraph: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(
        commands.place_call(
            _logged(_settings(args)),
            to=args.to,
            flow=args.flow,
            from_=args.from_number,
            context=context,
            purpose=args.purpose,
        )
    )


def cmd_campaign(args: argparse.Namespace) -> int:
    from dialgraph.server.outbound import commands

    settings = _logged(_settings(args))
    if args.campaign_command == "create":
        spec: dict[str, object] = {
            "name": args.name,
            "flow": args.flow,
            "from_number": args.from_number,
            "max_concurrent": args.max_concurrent,
            "calls_per_second": args.calls_per_second,
            "max_attempts": args.max_attempts,
            "retry_after_s": args.retry_after_s,
            "purpose": args.purpose,
        }
        if args.window:
            hours, _, days = args.window.partition(",")
            start, _, end = hours.partition("-")
            spec["window"] = {"start": start, "end": end, **({"days": days.split(",")} if days else {})}
        try:
            csv_path = Path(args.csv)
            text = csv_path.read_text(encoding="utf-8-sig")
            return asyncio.run(commands.create_campaign(settings, spec=spec, csv_path=csv_path, csv_text=text))
        except (ValidationError, ValueError) as exc:
            print(f"dialgraph: invalid campaign:\n{exc}", file=sys.stderr)
            return 2
    if args.campaign_command == "status":
        return asyncio.run(commands.campaign_status(settings, args.id))
    return asyncio.run(commands.campaign_action(settings, args.id, args.campaign_command))


def cmd_dnd_import(args: argparse.Namespace) -> int:
    from dialgraph.server.outbound import commands

    return asyncio.run(commands.dnd_import(_logged(_settings(args)), Path(args.file)))


def cmd_costs_daily(args: argparse.Namespace) -> int:
    """Per UTC day and flow: calls, billed minutes and the cost breakdown, as JSON."""
    import dataclasses
    import datetime as dt

    from dialgraph.server.core.costs import CURRENCY, daily_totals
    from dialgraph.server.core.db import Database

    try:
        last = dt.date.fromisoformat(args.to) if args.to else dt.datetime.now(dt.UTC).date()
        first = dt.date.fromisoformat(args.from_day) if args.from_day else last - dt.timedelta(days=6)
    except ValueError as exc:
        print(f"dialgraph: --from/--to must be YYYY-MM-DD: {exc}", file=sys.stderr)
        return 2
    if first > last:
        print("dialgraph: --from is after --to", file=sys.stderr)
        return 2
    settings = _logged(_settings(args))

    async def run() -> list[dict[str, object]]:
        db = Database(settings.effective_database_url)
        try:
            rows = await daily_totals(db, start=first, end=last, flow=args.flow or None)
        finally:
            await db.aclose()
        return [{**dataclasses.asdict(r), "currency": CURRENCY} for r in rows]

    days = asyncio.run(run())
    total = round(sum(float(str(d["total"])) for d in days), 6)
    body = {"from": first.isoformat(), "to": last.isoformat(), "flow": args.flow, "days": days, "total": total}
    print(json.dumps(body, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dialgraph", description="AI voice agent on a Twilio phone number.")
    parser.add_argument("--config", help="path of dialgraph.toml (default: $DIALGRAPH_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP/WebSocket server (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers", type=int, default=1, help="server processes on the port (one per core carries the most calls)"
    )
    serve.set_defaults(func=cmd_serve)

    config = sub.add_parser("config", help="configuration commands")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="print the effective configuration, secrets masked")
    check.set_defaults(func=cmd_config_check)

    db = sub.add_parser("db", help="database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations up to head")
    up.set_defaults(func=cmd_db_upgrade)
    prune = db_sub.add_parser("prune", help="delete personal data past its [retention] period, per kind")
    prune.set_defaults(func=cmd_db_prune)

    data = sub.add_parser("data", help="personal data (DPDP Act 2023 / GDPR requests)")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    erase = data_sub.add_parser("erase", help="remove or anonymise everything about a person; opt-outs kept hashed")
    erase.add_argument("--phone", required=True, help="the person's number, E.164 (+15551234567)")
    erase.set_defaults(func=cmd_data_erase)

    costs = sub.add_parser("costs", help="what calls cost ([prices])")
    costs_sub = costs.add_subparsers(dest="costs_command", required=True)
    daily = costs_sub.add_parser("daily", help="per UTC day and flow: calls, minutes and the cost breakdown (JSON)")
    daily.add_argument("--from", dest="from_day", help="first day, YYYY-MM-DD (default: 6 days before --to)")
    daily.add_argument("--to", help="last day, YYYY-MM-DD, inclusive (default: today, UTC)")
    daily.add_argument("--flow", help="one flow only")
    daily.set_defaults(func=cmd_costs_daily)

    chat = sub.add_parser("chat", help="hold a text conversation with a flow in the terminal")
    chat.add_argument("--flow", default="scheduling")
    chat.add_argument("--from", dest="from_number", default="+15551230000", help="caller number")
    chat.add_argument("--thread", default=None, help="resume this thread id")
    chat.set_defaults(func=cmd_chat)

    purposes = ("promotional", "service", "transactional")
    call = sub.add_parser("call", help="place one outbound call (compliance checks first)")
    call.add_argument("to", help="the callee, E.164 (+15551234567)")
    call.add_argument("--flow", required=True)
    call.add_argument("--from", dest="from_number", default=None, help="caller ID (default: the flow's)")
    call.add_argument("--context", nargs="*", metavar="KEY=VALUE", help="what the agent knows: name=Jane ...")
    call.add_argument("--purpose", choices=purposes, default="service")
    call.set_defaults(func=cmd_call)

    campaign = sub.add_parser("campaign", help="outbound campaigns")
    campaign_sub = campaign.add_subparsers(dest="campaign_command", required=True)
    create = campaign_sub.add_parser("create", help="queue a campaign from a CSV with a 'to' column")
    create.add_argument("--name", required=True)
    create.add_argument("--flow", required=True)
    create.add_argument("--csv", required=True, help="contacts: a 'to' column plus any fields")
    create.add_argument("--from", dest="from_number", default=None)
    create.add_argument("--max-concurrent", type=int, default=1)
    create.add_argument("--calls-per-second", type=float, default=1.0)
    create.add_argument("--max-attempts", type=int, default=1)
    create.add_argument("--retry-after-s", type=int, default=3600)
    create.add_argument("--purpose", choices=purposes, default="service")
    create.add_argument("--window", default=None, help="callee-local hours and days: 09:00-21:00[,mon,tue,...]")
    for verb in ("status", "pause", "resume", "cancel"):
        one = campaign_sub.add_parser(verb, help=f"{verb} a campaign")
        one.add_argument("id")
    campaign.set_defaults(func=cmd_campaign)

    dnd = sub.add_parser("dnd", help="do-not-call list")
    dnd_sub = dnd.add_subparsers(dest="dnd_command", required=True)
    dnd_import = dnd_sub.add_parser("import", help="import the NCPR/DND registry file (number[,categories])")
    dnd_import.add_argument("file")
    dnd_import.set_defaults(func=cmd_dnd_import)

    demo = sub.add_parser("demo", help="run a spoken demo call against a local server (no keys)")
    demo.add_argument("--out", default="out/demo", help="where the transcript, recording and server log go")
    demo.set_defaults(func=cmd_demo)

    simulate = sub.add_parser("simulate", help="play Twilio and a scripted caller against a running server")
    simulate.add_argument("scenario", nargs="?", help="a scenario file or name (optional with --callee)")
    simulate.add_argument("--url", default="http://127.0.0.1:8000")
    simulate.set_defaults(func=None, passthrough=cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", None):
        return int(args.passthrough(args, rest))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
