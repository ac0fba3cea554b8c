"""The composition root: probes, provider choice from settings, and REQUIRE_POSTGRES."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from dialgraph.server.app import create_app
from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.speech.vad import EnergyVad
from tests.fakes.speech import NullRecognizer, NullSynthesizer

ROOT = Path(__file__).resolve().parents[2]


def speechless(**values: object) -> Overrides:
    return Overrides(recognizer=NullRecognizer(), synthesizer=NullSynthesizer(), vad_factory=EnergyVad, **values)  # type: ignore[arg-type]


async def test_probes_and_dev_migrations(settings: Settings) -> None:
    app = create_app(settings, overrides=speechless())
    async with app.router.lifespan_context(app):
        services = app.state.services
        assert sorted(services.runners) == ["sales", "scheduling", "support"]  # real graphs, offline model
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            health = await client.get("/healthz")
            assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["ready"] is True
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        # dev mode applied the migrations on start
        async with services.db.engine.connect() as conn:
            from sqlalchemy import text

            assert (await conn.execute(text("SELECT count(*) FROM calls"))).scalar() == 0


async def test_the_collector_threshold_comes_from_settings(tmp_path: Path) -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        app = create_app(Settings(data_dir=tmp_path, gc_threshold=12_345), overrides=speechless())
        async with app.router.lifespan_context(app):
            assert gc.get_threshold() == (12_345, 10, 10)
        app = create_app(Settings(data_dir=tmp_path, gc_threshold=0), overrides=speechless())
        gc.set_threshold(700, 10, 10)
        async with app.router.lifespan_context(app):
            assert gc.get_threshold() == (700, 10, 10)  # 0: Python's own
    finally:
        gc.set_threshold(*before)


async def test_readyz_says_503_when_the_database_is_down(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    dead = Database("postgresql+psycopg://postgres@127.0.0.1:1/none")
    app = create_app(settings, overrides=speechless(db=dead, runners={}, call_control=object()))
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
        ):
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "database unreachable"
    finally:
        await dead.aclose()


def _run_pg_test(tmp_path: Path, *, require: bool) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_needs_pg.py"
    test.write_text(
        textwrap.dedent(
            """
            async def test_uses_postgres(db):
                assert await db.ping()
            """
        )
    )
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    env = {
        **os.environ,
        "DIALGRAPH_TEST_PG": "postgresql://postgres@127.0.0.1:1/postgres",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("REQUIRE_POSTGRES", None)
    if require:
        env["REQUIRE_POSTGRES"] = "1"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "--rootdir",
            str(tmp_path),
            str(test),
            "-rs",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_postgres_half_skips_without_server_and_fails_under_require_postgres(tmp_path: Path) -> None:
    relaxed = _run_pg_test(tmp_path, require=False)
    assert relaxed.returncode == 0, relaxed.stdout
    assert "1 passed, 1 skipped" in relaxed.stdout and "PostgreSQL not reachable" in relaxed.stdout
    strict = _run_pg_test(tmp_path, require=True)
    assert strict.returncode == 1, strict.stdout
    assert "REQUIRE_POSTGRES=1 but PostgreSQL not reachable" in strict.stdout
