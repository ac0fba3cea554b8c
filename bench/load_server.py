"""A dialgraph server for load benchmarks: the real app and graphs, fast fake speech.

Speech is the simulator's text-carrying stand-in (``simulator.text_speech``: instant ASR/TTS
standing in for cloud providers answering at once); everything else (webhooks, signatures,
the media session, the offline model, the checkpointer, the database) is the real thing.

    python -m bench.load_server --port 8765 --data-dir /tmp/x [--database-url URL]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from dialgraph.server.app import create_app
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.scenario import SCENARIO_NUMBERS
from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer, TextVad


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
    speech = Overrides(recognizer=TextRecognizer(), synthesizer=TextSynthesizer(), vad_factory=TextVad)
    app = create_app(settings, overrides=speech)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", ws_max_queue=64, backlog=2048)


if __name__ == "__main__":
    main()
