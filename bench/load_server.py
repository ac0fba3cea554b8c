"""A dialgraph server for load benchmarks: the real app and graphs, fast fake speech or the
cloud speech path against local stand-ins (their default keys).

``--speech text`` (the default, for ``bench.load_calls``): speech is the simulator's
text-carrying stand-in (``simulator.text_speech``: instant ASR/TTS standing in for cloud
providers answering at once). ``--speech cloud`` (for ``bench.load_whole``): the real
Deepgram SDK client and our ElevenLabs WebSocket client, pointed at ``--deepgram-url`` and
``--elevenlabs-url`` (the simulator's vendor stand-ins, run by the load generator), and the
product's VAD. Everything else (webhooks, signatures, the media session, the offline model,
the checkpointer, the database) is the real thing.

    python -m bench.load_server --port 8765 --data-dir /tmp/x [--database-url URL] [--max-calls N]
        [--speech text|cloud --deepgram-url ws://... --elevenlabs-url http://...] [--workers N]

Served with ``dialgraph serve``'s uvicorn options (``server.cli.uvicorn_options``: no
permessage-deflate on the media socket). ``--max-calls`` / ``--max-loop-lag-ms`` set
``[overload]``: past them new calls get the "all lines are busy" answer (per process).
``--workers N`` serves as ``dialgraph serve --workers N`` does: N processes on the port,
the database and the checkpoint tables created once first, ``/metrics`` summed over them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from dialgraph.server.app import create_app
from dialgraph.server.cli import create_checkpoint_tables, uvicorn_options
from dialgraph.server.core.db import upgrade
from dialgraph.server.core.overload import OverloadSettings
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.scenario import SCENARIO_NUMBERS
from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer, TextVad


def speech(args: argparse.Namespace, settings: Settings) -> Overrides:
    if args.speech == "text":
        return Overrides(recognizer=TextRecognizer(), synthesizer=TextSynthesizer(), vad_factory=TextVad)
    if not (args.deepgram_url and args.elevenlabs_url):
        raise SystemExit("--speech cloud needs --deepgram-url and --elevenlabs-url")
    from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
    from dialgraph.telephony.speech.elevenlabs import ElevenLabsSynthesizer
    from dialgraph.telephony.speech.providers import build_vad_factory

    return Overrides(
        recognizer=DeepgramRecognizer("dg-test-key", url=args.deepgram_url),
        synthesizer=ElevenLabsSynthesizer("el-test-key", url=args.elevenlabs_url),
        vad_factory=build_vad_factory(settings),
    )


ARGS_ENV = "DIALGRAPH_LOAD_SERVER_ARGS"  # --workers: each worker builds its app from these


def settings_for(args: argparse.Namespace) -> Settings:
    return Settings(  # type: ignore[call-arg]
        data_dir=Path(args.data_dir),
        database_url=args.database_url,
        public_url=f"http://127.0.0.1:{args.port}",
        numbers=SCENARIO_NUMBERS,
        log_level="WARNING",
        overload=OverloadSettings(
            max_calls=args.max_calls,
            max_loop_lag_ms=args.max_loop_lag_ms,
            loop_lag_window_s=args.loop_lag_window_s,
        ),
        _env_file=None,
    )


def app_from_env() -> Any:
    """One worker's app (``--workers``): the arguments come through the environment."""
    args = argparse.Namespace(**json.loads(os.environ[ARGS_ENV]))
    settings = settings_for(args)
    return create_app(settings, overrides=speech(args, settings))


def prepare(settings: Settings) -> None:
    """The schema and LangGraph's tables, once, before the workers start (as ``dialgraph
    serve --workers`` does: concurrent CREATEs collide on PostgreSQL)."""
    if settings.effective_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    asyncio.run(create_checkpoint_tables(settings))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--database-url", default=None)
    p.add_argument("--max-calls", type=int, default=0, help="[overload] max_calls: refuse new calls past this many")
    p.add_argument("--max-loop-lag-ms", type=float, default=0, help="[overload] max_loop_lag_ms")
    p.add_argument("--loop-lag-window-s", type=float, default=10.0, help="[overload] loop_lag_window_s")
    p.add_argument("--speech", choices=["text", "cloud"], default="text")
    p.add_argument("--deepgram-url", default=None, help="the Deepgram stand-in (--speech cloud)")
    p.add_argument("--elevenlabs-url", default=None, help="the ElevenLabs stand-in (--speech cloud)")
    p.add_argument("--workers", type=int, default=1, help="server processes on the port")
    args = p.parse_args()
    settings = settings_for(args)
    options = {
        **uvicorn_options(settings, host="127.0.0.1", port=args.port),  # as `dialgraph serve` (no deflate)
        "ws_max_queue": 64,
        "backlog": 2048,
    }
    if args.workers <= 1:
        uvicorn.run(create_app(settings, overrides=speech(args, settings)), **options)
        return
    prepare(settings)
    os.environ[ARGS_ENV] = json.dumps(vars(args))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="dialgraph-load-metrics-")
    uvicorn.run("bench.load_server:app_from_env", factory=True, workers=args.workers, **options)


if __name__ == "__main__":
    main()
