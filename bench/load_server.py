"""A dialgraph server for load benchmarks: the real app and graphs, fast fake speech.

Speech is the text-carrying fake of ``tests.fakes.speech`` (instant ASR/TTS standing in
for cloud providers answering at once); everything else (webhooks, signatures, the media
session, the offline model, the checkpointer, the database) is the real thing.

    python bench/load_server.py --port 8765 --data-dir /tmp/x [--database-url URL]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dialgraph.server.app import create_app  # noqa: E402
from dialgraph.server.core.settings import Settings  # noqa: E402
from tests.fakes.sim_server import SCENARIO_NUMBERS, text_speech  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--database-url", default=None)
    args = p.parse_args()
    settings = Settings(  # type: ignore[call-arg]
        data_dir=Path(args.data_dir),
        database_url=args.database_url,
        public_url=f"http://127.0.0.1:{args.port}",
        numbers=SCENARIO_NUMBERS,
        log_level="WARNING",
        _env_file=None,
    )
    app = create_app(settings, overrides=text_speech())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", ws_max_queue=64, backlog=2048)


if __name__ == "__main__":
    main()
