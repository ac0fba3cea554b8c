"""The rate-limit check's cost: microseconds per ``limits.admit`` (one SQL statement).

A ``calls`` table of ``--calls`` rows (default 200 000: 90 days of traffic from 50 000
numbers, 0.5 % of them still live: 1 000 live calls at the default) on SQLite (a file, WAL) and PostgreSQL (a fresh
database on ``--pg``); then ``--n`` admissions of random callers, one at a time, as
``/twilio/voice`` makes them, under four rule sets:

- ``per caller``: calls per hour, per day and concurrent for the caller (the caller's rows of
  the last day, on ``ix_calls_from_started``);
- ``per caller + deployment``: the same and the deployment's live calls (``ix_calls_live``);
- ``withheld ID``: a withheld caller ID under ``anonymous_calls_per_hour``;
- ``none set``: no rule, so no statement (the floor: the Python around it);
- ``SELECT 1``: a trivial statement through the same engine (the round trip's own floor).

Figures: wall µs per admission, p50 / p99 / mean, measured in this process around the
``await`` (so they include the driver, the pool checkout and the database's work; on
PostgreSQL a loopback round trip). Run:

    .venv/bin/python -m bench.limits [--calls 200000] [--n 2000] [--backends sqlite,postgres]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from sqlalchemy import insert, text

from dialgraph.server.core.db import Database
from dialgraph.server.core.limits import Limits, admit
from dialgraph.server.core.models import Call

OFF = {  # the shipped defaults switched off: each rule set below is only what it names
    "caller_calls_per_hour": 0,
    "caller_calls_per_day": 0,
    "caller_concurrent": 0,
    "anonymous_calls_per_hour": 0,
    "caller_daily_budget": 0,
}


def rules(**given: float) -> Limits:
    return Limits.model_validate({**OFF, **given})


RULES = {
    "shipped defaults (+ budget)": Limits(),
    "per caller": rules(caller_calls_per_hour=5, caller_calls_per_day=20, caller_concurrent=2),
    "per caller + deployment": rules(
        caller_calls_per_hour=5, caller_calls_per_day=20, caller_concurrent=2, deployment_concurrent=100_000
    ),
    "withheld ID": rules(anonymous_calls_per_hour=1_000_000, deployment_concurrent=100_000),
    "none set": rules(),
}
NUMBERS = 50_000


def number(i: int) -> str:
    return f"+1555{i:07d}"


async def fill(db: Database, calls: int, now: dt.datetime, rng: random.Random) -> None:
    batch: list[dict[str, object]] = []
    async with db.engine.begin() as conn:
        for i in range(calls):
            live = rng.random() < 0.005
            withheld = rng.random() < 0.01
            batch.append(
                {
                    "sid": f"CA{i:032x}",
                    "direction": "inbound",
                    "from_number": "anonymous" if withheld else number(rng.randrange(NUMBERS)),
                    "to_number": "+15550009999",
                    "flow": "support",
                    "thread_id": f"CA{i:032x}",
                    "status": "in-progress" if live else "completed",
                    "started_at": now - dt.timedelta(seconds=rng.randrange(3 * 3600 if live else 90 * 86400)),
                }
            )
            if len(batch) == 5000:
                await conn.execute(insert(Call), batch)
                batch = []
        if batch:
            await conn.execute(insert(Call), batch)
    async with db.engine.connect() as conn:
        await conn.exec_driver_sql("ANALYZE")
        await conn.commit()


async def measure(db: Database, rules: Limits, n: int, now: dt.datetime, rng: random.Random) -> list[float]:
    anonymous = rules.anonymous_calls_per_hour > 0
    for _ in range(50):  # warm: pool, prepared statements, caches
        await admit(db, rules, caller=number(rng.randrange(NUMBERS)), now=now, call_sid="CAwarm")
    samples = []
    for _ in range(n):
        caller = "anonymous" if anonymous else number(rng.randrange(NUMBERS))
        t0 = time.perf_counter()
        decision = await admit(db, rules, caller=caller, now=now, call_sid="CAbench")
        samples.append((time.perf_counter() - t0) * 1e6)
        assert decision.allowed, decision
    return samples


async def round_trip(db: Database, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        samples.append((time.perf_counter() - t0) * 1e6)
    return samples


async def run_backend(name: str, url: str, calls: int, n: int) -> list[tuple[str, str, list[float]]]:
    db = Database(url)
    rows = []
    try:
        await db.upgrade()
        now = dt.datetime.now(dt.UTC)
        rng = random.Random(13)
        await fill(db, calls, now, rng)
        for label, rules in RULES.items():
            rows.append((name, label, await measure(db, rules, n, now, rng)))
        rows.append((name, "SELECT 1", await round_trip(db, n)))
    finally:
        await db.aclose()
    return rows


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    results: list[tuple[str, str, list[float]]] = []
    backends = args.backends.split(",")
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'limits.db'}"
            results += await run_backend("SQLite", url, args.calls, args.n)
    if "postgres" in backends:
        name = f"dialgraph_bench_limits_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
            results += await run_backend("PostgreSQL", url, args.calls, args.n)
        finally:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"\nlimits.admit: µs per incoming call ({args.calls} calls in the table, {args.n} admissions each)\n")
    print(f"| {'database':<10} | {'rules':<24} | {'p50 µs':>7} | {'p99 µs':>7} | {'mean µs':>7} |")
    print(f"|{'-' * 12}|{'-' * 26}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for backend, label, samples in results:
        print(
            f"| {backend:<10} | {label:<24} | {pct(samples, 0.5):7.0f} | {pct(samples, 0.99):7.0f} "
            f"| {statistics.fmean(samples):7.0f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
