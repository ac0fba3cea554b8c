"""A real dialgraph server on 127.0.0.1 for simulator-driven tests.

``live_server(settings, overrides)`` serves ``create_app`` with uvicorn on a free port in
the running event loop and stops it (every task awaited) on the way out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from dialgraph.server.app import create_app
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.simulator.process import free_port
from dialgraph.telephony.simulator.scenario import SCENARIO_NUMBERS
from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer, TextVad


@dataclass(frozen=True, slots=True)
class LiveServer:
    url: str
    settings: Settings
    app: Any

    @property
    def database_url(self) -> str:
        return self.settings.effective_database_url


def sim_settings(tmp_path: Path, port: int, **values: Any) -> Settings:
    """Dev settings on a SQLite file under ``tmp_path``, public URL on ``port``."""
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'dialgraph.db'}",
        public_url=f"http://127.0.0.1:{port}",
        numbers=SCENARIO_NUMBERS,
        _env_file=None,
        **values,
    )


def text_speech() -> Overrides:
    """Instant speech that carries its text in the audio (``simulator.text_speech``)."""
    return Overrides(recognizer=TextRecognizer(), synthesizer=TextSynthesizer(), vad_factory=TextVad)


@asynccontextmanager
async def live_server(
    tmp_path: Path, *, overrides: Overrides | None = None, port: int | None = None, **settings: Any
) -> AsyncIterator[LiveServer]:
    port = port or free_port()
    cfg = sim_settings(tmp_path, port, **settings)
    app = create_app(cfg, overrides=overrides if overrides is not None else text_speech())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.02)
        yield LiveServer(url=cfg.public_url, settings=cfg, app=app)
    finally:
        server.should_exit = True
        await task
