"""A real dialgraph server on 127.0.0.1 for simulator-driven tests.

``live_server(tmp_path, overrides)`` serves ``create_app`` with uvicorn on a free port in
the running event loop and stops it (every task awaited) on the way out; ``serving(settings)``
does the same for settings a test made itself (its database, its limits), on the port of
their public URL. Both serve with ``dialgraph serve``'s own options
(``server.cli.uvicorn_options``).
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
from dialgraph.server.cli import uvicorn_options
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
async def serving(settings: Settings, overrides: Overrides | None = None) -> AsyncIterator[Any]:
    """The app for ``settings`` under uvicorn on their public URL's port; yields the app."""
    app = create_app(settings, overrides=overrides if overrides is not None else text_speech())
    port = int(settings.public_url.rsplit(":", 1)[1])
    options = uvicorn_options(settings, host="127.0.0.1", port=port) | {"log_level": "warning"}
    server = uvicorn.Server(uvicorn.Config(app, **options, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.02)
        yield app
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def live_server(
    tmp_path: Path, *, overrides: Overrides | None = None, port: int | None = None, **settings: Any
) -> AsyncIterator[LiveServer]:
    cfg = sim_settings(tmp_path, port or free_port(), **settings)
    async with serving(cfg, overrides) as app:
        yield LiveServer(url=cfg.public_url, settings=cfg, app=app)
