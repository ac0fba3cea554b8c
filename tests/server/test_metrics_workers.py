"""``/metrics`` under ``dialgraph serve --workers 2`` (a real server in a subprocess, on
SQLite and PostgreSQL): webhooks land on both workers, and one scrape, whichever worker
takes it, holds the sum of both (prometheus_client's multiprocess mode in the fresh
directory the serve command made). Each worker's own share is read from its files with
prometheus_client's own merge; the directory is gone after the server stops."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from dialgraph.telephony.simulator.webhooks import TwilioWebhookClient, call_params
from tests.server.test_metrics import parse, total, value

ADMIN = {"Authorization": "Bearer dev-admin-token"}
CALLER = "+14155550111"
REFUSED = "dialgraph_calls_rate_limited_total"
LAG = "dialgraph_event_loop_lag_seconds_count"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _per_worker(directory: Path, name: str) -> dict[int, float]:
    """``name``'s total in each worker's own files (prometheus_client's merge, per pid)."""
    pids = {int(m.group(1)) for f in directory.iterdir() if (m := re.search(r"_(\d+)\.db$", f.name))}
    out = {}
    for pid in pids:
        files = [str(f) for f in directory.iterdir() if f.name.endswith(f"_{pid}.db")]
        samples = [s for metric in MultiProcessCollector.merge(files, accumulate=True) for s in metric.samples]
        out[pid] = sum(s.value for s in samples if s.name == name)
    return out


async def test_one_scrape_sums_both_workers(tmp_path: Path, database_url: str) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path),  # where serve makes its metrics directory
        "DATABASE_URL": database_url,
        "DIALGRAPH_DATA_DIR": str(tmp_path / "data"),
        "DIALGRAPH_PUBLIC_URL": url,
        "DIALGRAPH_LOG_LEVEL": "WARNING",
        "DIALGRAPH_LIMITS": '{"caller_calls_per_hour": 1}',
        "DIALGRAPH_OUTBOUND": '{"dispatcher": false}',
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [sys.executable, "-m", "dialgraph.server.cli", "serve", "--workers", "2", "--host", "127.0.0.1"]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    r = await http.get("/metrics", headers=ADMIN)
                    samples = parse(r.text) if r.status_code == 200 else {}
                    if value(samples, "dialgraph_processes") == 2 and total(samples, LAG) >= 4:
                        break  # both workers up, their loop-lag probes running
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                await asyncio.sleep(0.3)
            [directory] = list(tmp_path.glob("dialgraph-metrics-*"))

            twilio = TwilioWebhookClient(http, public_url=url, auth_token="dev-auth-token")
            n = 0

            async def voice() -> None:
                nonlocal n
                n += 1
                r = await twilio.post("/twilio/voice", call_params(f"CA{n:032d}", from_number=CALLER, status="ringing"))
                assert r.status_code == 200

            await voice()  # admitted: the caller's one call this hour
            refused = 0
            while True:  # every new connection goes to whichever worker accepts it first
                await asyncio.gather(*(voice() for _ in range(8)))
                refused += 8
                shares = _per_worker(directory, REFUSED)
                if len([v for v in shares.values() if v > 0]) == 2 or refused >= 160:
                    break
            assert len([v for v in shares.values() if v > 0]) == 2, shares  # both workers refused some
            assert sum(shares.values()) == refused

            for _ in range(4):  # any worker's scrape: the sum, never one worker's share
                samples = parse((await http.get("/metrics", headers=ADMIN)).text)
                assert total(samples, REFUSED, rule="limits.caller_calls_per_hour") == refused
                assert value(samples, "dialgraph_processes") == 2
                assert value(samples, "dialgraph_calls_rate_limited_last_hour") == refused  # from SQL, once
                assert total(samples, LAG) >= 4
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert not list(tmp_path.glob("dialgraph-metrics-*"))  # each serve's directory is its own, and removed
