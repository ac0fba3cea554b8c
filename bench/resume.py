"""Resume on another instance: dropped stream -> the agent's first audio again.

Starts two ``dialgraph serve`` processes (A and B) sharing one PostgreSQL database (a
temporary one, dropped afterwards; or ``--database-url``), with the Deepgram and
ElevenLabs fakes on loopback as providers (they answer at once, so the figure is the
service's share) and the offline model. Each run places a call on A, lets the greeting
play and one caller turn be answered, then drops A's media socket mid-reply (TCP abort,
no close frame), and times on B, as Twilio would drive it:

    stream-ended webhook (-> new <Connect><Stream>) + WebSocket handshake + start
    + session start, heard-text repair and checkpoint load + reconnection line
    -> first agent media frame received

and prints p50 / p99 / max over the runs, with the webhook and the socket share apart.

    .venv/bin/python -m bench.resume [--runs 30] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from dialgraph.telephony.simulator.leg import TwilioLeg
from dialgraph.telephony.simulator.process import ServerProcess, server_env
from dialgraph.telephony.simulator.twiml import stream_parameters
from dialgraph.telephony.simulator.vendors import DeepgramFake, ElevenLabsFake, word_audio
from dialgraph.telephony.simulator.webhooks import TwilioWebhookClient, call_params, new_call_sid

PUBLIC_URL = "https://voice.example.com"
AUTH_TOKEN = "twilio-auth-token-for-the-resume-bench"
CALLER = "+15551230077"
TURN = ["i'd", "like", "to", "book", "an", "appointment", "please"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def one_run(a_url: str, b_url: str) -> tuple[float, float, float]:
    import httpx

    sid = new_call_sid()
    params = call_params(sid, from_number=CALLER, to_number="+15550001001")
    async with httpx.AsyncClient(base_url=a_url, timeout=30) as ha, httpx.AsyncClient(base_url=b_url, timeout=30) as hb:
        wa = TwilioWebhookClient(ha, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN)
        wb = TwilioWebhookClient(hb, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN)
        twiml = (await wa.post("/twilio/voice", params)).text
        leg_a = TwilioLeg(
            a_url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, call_sid=sid, parameters=stream_parameters(twiml)
        )
        async with leg_a:
            await leg_a.until_audio()
            await leg_a.until_quiet()
            before = len(leg_a.audio)
            leg_a.say(word_audio(TURN, sorted(set(TURN)), tail_ms=600))
            await leg_a.until_audio(before + 1)
            await leg_a.drop()  # mid-reply, the network goes away

        t0 = time.perf_counter()
        answer = await wb.post("/twilio/stream-ended", params)
        t_webhook = time.perf_counter()
        leg_b = TwilioLeg(
            b_url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, call_sid=sid, parameters=stream_parameters(answer.text)
        )
        async with leg_b:
            t_socket0 = time.perf_counter()
            await leg_b.until_audio()
            assert leg_b.first_audio_at is not None
            total = leg_b.first_audio_at - t0
            webhook = t_webhook - t0
            socket_to_audio = leg_b.first_audio_at - t_socket0
            await leg_b.until_quiet()
        await wb.post("/twilio/status", {**params, "CallStatus": "completed"})
    return total * 1000, webhook * 1000, socket_to_audio * 1000


def temp_database(admin_dsn: str) -> tuple[str, str]:
    name = f"dialgraph_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, admin_dsn.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main_async(args: argparse.Namespace) -> int:
    from contextlib import AsyncExitStack

    from dialgraph.graphs.checkpoint import checkpointer
    from dialgraph.server.core.db import Database

    created = None
    url = args.database_url
    if url is None:
        created, dsn = temp_database(args.pg)
        url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        db = Database(url)
        await db.upgrade()
        await db.aclose()
        async with AsyncExitStack() as stack:
            await checkpointer(url, stack=stack, pool_size=1)
        logs = Path(tempfile.mkdtemp(prefix="dialgraph-resume-"))
        async with DeepgramFake(sorted(set(TURN))) as deepgram, ElevenLabsFake() as elevenlabs:
            env = server_env(
                os.environ,
                DATABASE_URL=url,
                DIALGRAPH_PUBLIC_URL=PUBLIC_URL,
                DIALGRAPH_DATA_DIR=str(logs),
                DIALGRAPH_MODEL="offline",
                DIALGRAPH_LOG_LEVEL="WARNING",
                DIALGRAPH_MAX_RECONNECTS="20",
                TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                DIALGRAPH_STREAM_TOKEN_SECRET="stream-secret-shared-by-instances",
                **deepgram.env(),
                **elevenlabs.env(),
            )
            a, b = ServerProcess("a", env, logs), ServerProcess("b", env, logs)
            try:
                await asyncio.gather(a.start(), b.start())
                await one_run(a.url, b.url)  # warm-up (first-call imports, pools)
                results = [await one_run(a.url, b.url) for _ in range(args.runs)]
            finally:
                await a.aclose()
                await b.aclose()
    finally:
        if created:
            drop_database(args.pg, created)
    totals = [r[0] for r in results]
    print(f"resume on another instance, {args.runs} runs (PostgreSQL, fake providers answering at once)")
    print("  stream drop -> first agent audio frame on B (ms):")
    print(
        f"    p50 {percentile(totals, 50):7.1f}   p99 {percentile(totals, 99):7.1f}   "
        f"max {max(totals):7.1f}   mean {statistics.fmean(totals):7.1f}"
    )
    for label, i in (("stream-ended webhook", 1), ("socket open -> first audio", 2)):
        values = [r[i] for r in results]
        print(f"    {label:28s} p50 {percentile(values, 50):7.1f}   p99 {percentile(values, 99):7.1f}")
    print(f"  target: <= 1500 ms  -> {'met' if percentile(totals, 99) <= 1500 else 'NOT met'} at p99")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin DSN")
    parser.add_argument("--database-url", default=None, help="use this database instead of a temporary one")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
