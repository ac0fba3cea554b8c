"""Campaign dispatch: the scheduler's SQL cost per placed call, and calls placed per second.

1. **Scheduler overhead** (no Twilio at all): the queue's SQL work for one contact, as the
   dispatcher and the status webhook do it: ``campaigns.claim`` (``--batch`` contacts per
   claim, default 1), ``start_dialing``, ``mark_dialing`` and ``on_call_status(completed)``
   (which also tries to complete the campaign). Each instance is its own process (its own
   engine and pool) claiming from the same campaign as fast as it can; an empty claim (the
   campaign row is held by another instance: ``SKIP LOCKED``) is retried after 2 ms and
   counted. Figures: wall ms and client CPU ms (``time.process_time``) per contact, and
   contacts/s, for 1 instance on SQLite and on PostgreSQL and for ``--instances`` on
   PostgreSQL. The database server's own CPU is not in the figure.
2. **Dispatch end to end**: real ``dialgraph serve`` processes (the app's
   ``CampaignDispatcher`` and ``OutboundPlacer``, the real twilio client) against the
   simulator's Twilio REST API in this process, every callee busy at once (no media); the
   status callbacks reach the servers' ``/twilio/status`` (signed), which finish each contact.
   A campaign of ``--contacts`` with ``max_concurrent`` 50 and ``calls_per_second`` 100
   (the API's ceiling; ``[outbound] account_calls_per_second`` 100 too, so 100/s is the most
   any number of instances may reach), window all day, ``callee_attempts_per_day`` 0.
   Figures: calls placed per second (REST creates, first to last), time to the campaign's
   completion, and CPU ms per placed call of the server processes (``/proc``: placing,
   compliance, the call row and audit, three status callbacks, the dispatcher's rounds)
   and, apart, of this process (the Twilio fake and the status polling).

    .venv/bin/python -m bench.dispatch [--contacts 500] [--backends sqlite,postgres] [--instances 3]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from dialgraph.server.core.db import Database
from dialgraph.server.core.logging import configure_logging
from dialgraph.server.core.models import utcnow
from dialgraph.server.outbound import campaigns
from dialgraph.server.outbound.campaigns import CampaignSpec, ContactIn
from dialgraph.telephony.simulator.process import ServerProcess, server_env
from dialgraph.telephony.simulator.scenario import Callee
from dialgraph.telephony.simulator.twilio_api import TwilioApi

ADMIN_TOKEN = "admin-token-for-the-dispatch-bench"
CALLER_ID = "+15559870000"
MAX_CONCURRENT = 50
CALLS_PER_SECOND = 100.0  # CampaignSpec's ceiling
ALL_DAY = {"start": "00:00", "end": "24:00"}
RING_S = 0.2  # busy after 200 ms: see the note in the report about callbacks that beat the call row
STALE_CALL_S = 5.0  # a contact whose callback was lost is reconciled (a REST fetch) after this
HORIZON_S = 1e7  # scheduler bench: the campaign's rate never binds (its SQL still runs)
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


def numbers(n: int) -> list[str]:
    return [f"+1212555{i:04d}" for i in range(n)]


# --- databases -----------------------------------------------------------------------------------
@dataclass
class Backend:
    name: str
    url: str  # SQLAlchemy async URL
    drop: str | None = None  # the temporary PostgreSQL database to drop


def make_backend(name: str, admin_dsn: str, tmp: Path) -> Backend:
    if name == "sqlite":
        return Backend(name, f"sqlite+aiosqlite:///{tmp / f'dispatch-{uuid.uuid4().hex[:6]}.db'}")
    db_name = f"dialgraph_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    url = admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{db_name}"
    return Backend(name, url, drop=db_name)


def drop_backend(backend: Backend, admin_dsn: str) -> None:
    if backend.drop:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{backend.drop}" WITH (FORCE)')


async def fresh_campaign(url: str, n: int) -> str:
    db = Database(url)
    try:
        await db.upgrade()
        spec = CampaignSpec.model_validate(
            {
                "name": "scheduler-bench",
                "flow": "sales",
                "from": CALLER_ID,
                "max_concurrent": 1000,
                "calls_per_second": CALLS_PER_SECOND,
                "window": ALL_DAY,
            }
        )
        campaign = await campaigns.create_campaign(db, spec, [ContactIn(to=to) for to in numbers(n)])
        return campaign.id
    finally:
        await db.aclose()


# --- 1. scheduler overhead -----------------------------------------------------------------------
async def worker(url: str, campaign_id: str, instance: str, batch: int) -> dict[str, Any]:
    """One instance: claim and run contacts through the queue until none is left."""
    db = Database(url)
    try:
        await campaigns.counts(db, campaign_id)  # connect and warm the pool before the start
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        done = empties = 0
        t0, c0 = time.time(), time.process_time()
        while True:
            claimed = await campaigns.claim(db, instance, utcnow(), limit=batch, horizon_s=HORIZON_S)
            if not claimed:
                if (await campaigns.counts(db, campaign_id))["queued"] == 0:
                    break
                empties += 1
                await asyncio.sleep(0.002)
                continue
            for contact in claimed:
                sid = "CA" + uuid.uuid4().hex
                if not await campaigns.start_dialing(db, contact.contact_id, instance):
                    raise RuntimeError("a claim was lost")
                await campaigns.mark_dialing(db, contact.contact_id, sid)
                await campaigns.on_call_status(db, sid, "completed")
                done += 1
        return {"done": done, "empties": empties, "t0": t0, "t1": time.time(), "cpu": time.process_time() - c0}
    finally:
        await db.aclose()


async def scheduler_run(backend: Backend, n: int, instances: int, batch: int) -> dict[str, Any]:
    campaign_id = await fresh_campaign(backend.url, n)
    procs = []
    for i in range(instances):
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.dispatch",
                "--worker",
                backend.url,
                campaign_id,
                f"bench-{i}",
                str(batch),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=server_env(os.environ),
                cwd=str(ROOT),
            )  # fmt: skip
        )
    for p in procs:
        assert p.stdout is not None
        line = await p.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"scheduler worker failed to start: {line!r}")
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        await p.stdin.drain()
    results = []
    for p in procs:
        out, _ = await p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"scheduler worker exited {p.returncode}")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    db = Database(backend.url)
    try:
        tally = await campaigns.counts(db, campaign_id)
        state = await campaigns.get_campaign(db, campaign_id)
    finally:
        await db.aclose()
    done = sum(r["done"] for r in results)
    if done != n or tally["completed"] != n or state is None or state.status != "completed":
        raise RuntimeError(f"scheduler run ended wrong: {done} done of {n}, counts {tally}")
    wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return {
        "label": f"{backend.name}, {instances} instance{'s' if instances > 1 else ''}",
        "contacts": n,
        "wall_ms": wall * 1000 / n * instances,  # per contact, per instance: the latency of one
        "cpu_ms": sum(r["cpu"] for r in results) * 1000 / n,
        "per_s": n / wall,
        "empties": sum(r["empties"] for r in results),
    }


# --- 2. dispatch end to end ----------------------------------------------------------------------
def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def server_settings_env(url: str, api: TwilioApi, data_dir: Path) -> dict[str, str]:
    outbound = {
        "account_calls_per_second": CALLS_PER_SECOND,
        "window": ALL_DAY,
        "dispatcher": True,
        "stale_call_s": STALE_CALL_S,
    }
    return server_env(
        os.environ,
        DATABASE_URL=url,
        DIALGRAPH_DATA_DIR=str(data_dir),
        DIALGRAPH_MODEL="offline",
        DIALGRAPH_LOG_LEVEL="WARNING",
        DIALGRAPH_ADMIN_TOKEN=ADMIN_TOKEN,
        DIALGRAPH_OUTBOUND=json.dumps(outbound),
        DIALGRAPH_LIMITS=json.dumps({"callee_attempts_per_day": 0}),
        **api.env(),
    )


async def start_servers(names: list[str], env: dict[str, str], logs: Path) -> list[ServerProcess]:
    servers = []
    for name in names:
        server = ServerProcess(name, env, logs)
        server.env["DIALGRAPH_PUBLIC_URL"] = server.url  # callbacks come back to the placing instance
        servers.append(server)
    await asyncio.gather(*(s.start() for s in servers))
    return servers


async def campaign_run(api: TwilioApi, servers: list[ServerProcess], backend: Backend, n: int) -> dict[str, Any]:
    api.calls.clear()
    api.created_at.clear()
    api.dials.clear()
    api.requests.clear()
    api.max_live = api.live
    body = {
        "name": "dispatch-bench",
        "flow": "sales",
        "from": CALLER_ID,
        "contacts": [{"to": to} for to in numbers(n)],
        "max_concurrent": MAX_CONCURRENT,
        "calls_per_second": CALLS_PER_SECOND,
        "window": ALL_DAY,
        "purpose": "service",
    }
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    pids = [s.proc.pid for s in servers if s.proc is not None]
    async with httpx.AsyncClient(base_url=servers[0].url, headers=headers, timeout=30, trust_env=False) as http:
        server_cpu0, own_cpu0, t0 = sum(map(proc_cpu_s, pids)), time.process_time(), time.monotonic()
        created = await http.post("/api/campaigns", json=body)
        if created.status_code != 201:
            raise RuntimeError(f"campaign refused: {created.status_code} {created.text[:300]}")
        campaign_id = created.json()["id"]
        async with asyncio.timeout(max(60.0, n / 5)):
            while True:
                state = (await http.get(f"/api/campaigns/{campaign_id}")).json()
                if state["status"] == "completed":
                    break
                await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t0
        server_cpu, own_cpu = sum(map(proc_cpu_s, pids)) - server_cpu0, time.process_time() - own_cpu0
    await api.wait_idle(timeout_s=30)
    placed = len(api.created_at)
    fetches = sum(1 for r in api.requests if r.method == "GET" and r.call_sid)
    # A REST create that failed (the fake closed a pooled keep-alive connection: aiohttp's
    # ClientOSError) is not retried by the placer (it cannot know Twilio did not take it):
    # the contact ends ``failed``. Counted, not hidden.
    rest_errors = state["counts"].get("failed", 0)
    once = all(v == 1 for v in api.dials.values())
    if placed + rest_errors != n or state["counts"].get("busy") != placed or not once:
        raise RuntimeError(f"campaign ended wrong: {placed} placed of {n}, counts {state['counts']}")
    span = api.created_at[-1] - api.created_at[0]
    return {
        "label": f"{backend.name}, {len(servers)} instance{'s' if len(servers) > 1 else ''}",
        "contacts": n,
        "per_s": (placed - 1) / span if span > 0 else float("inf"),
        "elapsed_s": elapsed,
        "server_cpu_ms": server_cpu * 1000 / placed,
        "fake_cpu_ms": own_cpu * 1000 / placed,
        "max_live": api.max_live,
        "fetches": fetches,
        "rest_errors": rest_errors,
    }


async def dispatch_runs(backend: Backend, n: int, instance_counts: list[int], tmp: Path) -> list[dict[str, Any]]:
    out = []
    logs = tmp / f"logs-{backend.name}"
    logs.mkdir(exist_ok=True)
    async with TwilioApi(default_callee=Callee(kind="busy", ring_s=RING_S), record=False) as api:
        env = server_settings_env(backend.url, api, logs)
        servers: list[ServerProcess] = []
        try:
            for count in instance_counts:
                servers += await start_servers([f"{backend.name}-{i}" for i in range(len(servers), count)], env, logs)
                await asyncio.sleep(1.0)  # let the dispatchers' first rounds (reaping) pass
                out.append(await campaign_run(api, servers, backend, n))
        finally:
            await asyncio.gather(*(s.aclose() for s in servers))
    return out


# --- the report ----------------------------------------------------------------------------------
async def main_async(args: argparse.Namespace) -> int:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="dialgraph-dispatch-"))
    scheduler: list[dict[str, Any]] = []
    dispatch: list[dict[str, Any]] = []
    for name in backends:
        counts = [1] if name == "sqlite" else sorted({1, args.instances})
        backend = make_backend(name, args.pg, tmp)
        try:
            for instances in counts:
                scheduler.append(await scheduler_run(backend, args.contacts, instances, args.batch))
            if not args.skip_dispatch:
                dispatch += await dispatch_runs(backend, args.contacts, counts, tmp)
        finally:
            drop_backend(backend, args.pg)
    shutil.rmtree(tmp, ignore_errors=True)  # kept when a run failed: its servers' logs are there

    print(f"\nscheduler overhead per contact: claim (batch {args.batch}) + start_dialing + mark_dialing")
    print("  + on_call_status(completed), no Twilio; each instance a process, as fast as it can")
    print(f"  {'':24s} {'contacts':>8s} {'wall ms':>8s} {'CPU ms':>7s} {'contacts/s':>11s} {'empty claims':>13s}")
    for r in scheduler:
        print(
            f"  {r['label']:24s} {r['contacts']:8d} {r['wall_ms']:8.2f} {r['cpu_ms']:7.2f} "
            f"{r['per_s']:11.0f} {r['empties']:13d}"
        )
    print("  (wall ms: one instance's time per contact; CPU ms: the instances' client CPU per contact)")
    if dispatch:
        print(
            f"\ndispatch end to end: dialgraph serve + the Twilio REST fake, every callee busy after {RING_S:g} s, "
            f"max_concurrent {MAX_CONCURRENT}, {CALLS_PER_SECOND:g} calls/s allowed (campaign and account)"
        )
        print(
            f"  {'':24s} {'contacts':>8s} {'placed/s':>9s} {'to done s':>10s} "
            f"{'server CPU ms/call':>19s} {'fake CPU ms/call':>17s} {'max live':>9s} {'fetches':>8s} {'REST err':>9s}"
        )
        for r in dispatch:
            print(
                f"  {r['label']:24s} {r['contacts']:8d} {r['per_s']:9.1f} {r['elapsed_s']:10.1f} "
                f"{r['server_cpu_ms']:19.2f} {r['fake_cpu_ms']:17.2f} {r['max_live']:9d} {r['fetches']:8d} {r['rest_errors']:9d}"
            )
        print("  (server CPU: the dialgraph processes, incl. 3 signed status callbacks per call;")
        print("   fake CPU: this process, the Twilio REST fake and the status polling;")
        print(f"   fetches: contacts reconciled by a REST fetch after {STALE_CALL_S:g} s, their final callback lost;")
        print("   REST err: creates that failed on a connection the fake had closed: contact failed, not retried)")
    parts = [f"{r['label']}: {r['cpu_ms']:.1f} ms CPU/contact, {r['per_s']:.0f} contacts/s" for r in scheduler]
    parts += [f"{r['label']}: {r['per_s']:.0f} calls/s, {r['server_cpu_ms']:.1f} ms CPU/call" for r in dispatch]
    print("\nfigures for the README: scheduler " + "; ".join(parts[: len(scheduler)]))
    if dispatch:
        print("                        dispatch " + "; ".join(parts[len(scheduler) :]))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--backends", default="sqlite,postgres", help="comma list of sqlite, postgres")
    parser.add_argument("--instances", type=int, default=3, help="instances on PostgreSQL (besides 1)")
    parser.add_argument("--batch", type=int, default=1, help="contacts per claim in the scheduler bench")
    parser.add_argument("--skip-dispatch", action="store_true", help="only the scheduler overhead")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin DSN")
    parser.add_argument("--worker", nargs=4, metavar=("URL", "CAMPAIGN", "INSTANCE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging("WARNING")
    if args.worker:
        url, campaign_id, instance, batch = args.worker
        print(json.dumps(asyncio.run(worker(url, campaign_id, instance, int(batch)))), flush=True)
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
