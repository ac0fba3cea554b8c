"""The ``dialgraph`` command line: serve, config check, db upgrade/prune, chat, demo, simulate."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
    options = {
        "host": args.host,
        "port": args.port,
        "log_level": settings.log_level.lower(),
        "ws_max_size": 1 << 16,
        "ws_ping_interval": None,  # Twilio does not answer pings reliably; its stop/close ends calls
        "proxy_headers": True,
    }
    if args.workers <= 1:
        from dialgraph.server.app import create_app

        uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
        return 0
    # Several processes on one port: each worker rebuilds the settings from the same
    # environment and config file (a call's state is per process, shared state is in SQL).
    if args.config:
        os.environ["DIALGRAPH_CONFIG"] = str(Path(args.config).resolve())
    if settings.env == "dev":  # migrate once here, not racing in every worker's startup
        cmd_db_upgrade(args)
    uvicorn.run("dialgraph.server.app:create_app_from_env", factory=True, workers=args.workers, **options)  # type: ignore[arg-type]
    return 0


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
    from dialgraph.server.maintenance import prune

    settings = _settings(args)
    removed = asyncio.run(prune(settings))
    print(f"pruned {removed} conversation thread(s) older than {settings.checkpoint_retention_days:g} day(s)")
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

    return simulate_main([args.scenario, "--url", args.url, *rest])


def cmd_demo(args: argparse.Namespace) -> int:
    from dialgraph.server.demo import run_demo

    return run_demo(_settings(args), out_dir=Path(args.out).resolve())


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
    prune = db_sub.add_parser("prune", help="delete conversation checkpoints past checkpoint_retention_days")
    prune.set_defaults(func=cmd_db_prune)

    chat = sub.add_parser("chat", help="hold a text conversation with a flow in the terminal")
    chat.add_argument("--flow", default="scheduling")
    chat.add_argument("--from", dest="from_number", default="+15551230000", help="caller number")
    chat.add_argument("--thread", default=None, help="resume this thread id")
    chat.set_defaults(func=cmd_chat)

    demo = sub.add_parser("demo", help="run a spoken demo call against a local server (no keys)")
    demo.add_argument("--out", default="out/demo", help="where the transcript, recording and server log go")
    demo.set_defaults(func=cmd_demo)

    simulate = sub.add_parser("simulate", help="play Twilio and a scripted caller against a running server")
    simulate.add_argument("scenario")
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
