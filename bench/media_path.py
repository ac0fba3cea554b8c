"""Media-path benchmark: N concurrent calls over real WebSockets on 127.0.0.1.

The server (``create_app`` under uvicorn, its own process) runs with instant scripted
providers (tests/fakes/scripted_call.py): the recognizer says a final every 4 s of caller
audio, the graph answers at once, TTS returns audio at once. So what is measured is our
media path: inbound frame handling (parse, gap check, recognizer push, VAD, policy),
outbound pacing and marks, the turn plumbing, and the batched transcript writes.

This process plays Twilio for every call: a 20 ms frame per call per tick, marks echoed
when their audio would have finished playing (a simulated playback buffer per call),
inter-arrival gaps of outbound frames recorded per call.

Figures:
  cpu ms/call-s   server CPU time per second of call (user+sys, /proc)
  gap p50/p99/max inter-arrival of outbound media frames within a reply (gaps > 1 s are
                  between replies and not counted)
  underruns       frames that arrived after the simulated Twilio buffer had run dry
  lat p50/p99     final transcript -> first audio frame sent (server clock, per turn)
  rss MB/call     server resident memory growth per call

Usage: python -m bench.media_path [--calls 50,100,250] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

AUTH_TOKEN = "bench-auth-token-0123456789"
STREAM_SECRET = "bench-stream-secret-0123456789"
PUBLIC_URL = "http://bench.invalid"
REPLY = "Sure, I can help with that. Which day suits you best?"
TURN_FRAMES = 200  # the caller's turn: a final every 4 s of caller audio
BYTES_PER_WORD = 1600  # 200 ms of speech a word
FRAME_S = 0.02


# --- server process ---------------------------------------------------------------------------
def _settings(data_dir: Path) -> Any:
    from pydantic import SecretStr

    from server.settings import Settings

    return Settings(
        data_dir=data_dir,
        public_url=PUBLIC_URL,
        twilio_auth_token=SecretStr(AUTH_TOKEN),
        stream_token_secret=SecretStr(STREAM_SECRET),
        log_level="WARNING",
        _env_file=None,  # type: ignore[call-arg]
    )


def serve(port: int, data_dir: Path, stats_path: Path, profile: str = "", freeze: bool = False) -> None:
    import uvicorn

    from server.app import create_app
    from server.services import Overrides
    from telephony.speech import Final
    from telephony.vad import EnergyVad
    from tests.fakes.scripted_call import ScriptedRecognizer, ScriptedRunner, ScriptedSynthesizer

    runner = ScriptedRunner(default=REPLY)
    overrides = Overrides(
        recognizer=ScriptedRecognizer(
            [(TURN_FRAMES, Final("I need a cleaning", 0.0, 0.1))], repeat_every=TURN_FRAMES, keep_audio=False
        ),
        synthesizer=ScriptedSynthesizer(bytes_per_word=BYTES_PER_WORD, chunk_bytes=3200),
        vad_factory=EnergyVad,
        runners={"scheduling": runner},
        call_control=object(),
    )
    app = create_app(_settings(data_dir), overrides=overrides)
    latencies: list[float] = []
    stats: dict[str, int] = {"calls": 0, "silence_frames": 0, "duplicates": 0, "protocol_errors": 0, "barge_ins": 0}

    def finished(session: Any) -> None:
        stats["calls"] += 1
        for key in ("silence_frames", "duplicates", "protocol_errors", "barge_ins"):
            stats[key] += getattr(session.state, key)
        latencies.extend(t.latency_ms for t in session.timings if t.trigger == "caller" and t.latency_ms is not None)

    app.state.call_observer = finished
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, ws_max_size=65536, loop="uvloop"
    )
    server = uvicorn.Server(config)
    lags: list[float] = []
    gc_pauses: list[float] = []
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        elif info.get("generation") == 2:
            gc_pauses.append((time.perf_counter() - gc_start[0]) * 1000)

    async def monitor() -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.005)
            lags.append((loop.time() - t - 0.005) * 1000)
            if len(lags) % 1000 == 0:
                stats["gc_tracked_max"] = max(stats.get("gc_tracked_max", 0), len(gc.get_objects()))

    async def freeze_after_start() -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for this
            await asyncio.sleep(0.05)
        gc.collect()
        gc.freeze()  # startup objects (FastAPI, SQLAlchemy, pydantic...) leave the GC's scans

    async def main() -> None:
        tasks = [asyncio.create_task(monitor())]
        if freeze:
            tasks.append(asyncio.create_task(freeze_after_start()))
        try:
            await server.serve()
        finally:
            for task in tasks:
                task.cancel()

    import uvloop

    gc.callbacks.append(on_gc)
    try:
        if profile:
            import cProfile

            cProfile.runctx("uvloop.run(main())", globals(), {"uvloop": uvloop, "main": main}, str(profile))
        else:
            uvloop.run(main())
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it shut down on
        pass
    finally:
        lags.sort()
        stats["loop_lag_p99_ms"] = round(lags[int(0.99 * len(lags))], 1) if lags else -1  # type: ignore[assignment]
        stats["loop_lag_max_ms"] = round(lags[-1], 1) if lags else -1  # type: ignore[assignment]
        stats["gc2_pauses_ms"] = [round(p, 1) for p in sorted(gc_pauses)[-5:]]  # type: ignore[assignment]
        stats_path.write_text(json.dumps({"latencies_ms": latencies, **stats}))


# --- Twilio side --------------------------------------------------------------------------------
class BenchCall:
    __slots__ = (
        "call_sid",
        "stream_sid",
        "ws",
        "chunk",
        "seq",
        "prefix",
        "play_end",
        "marks",
        "times",
        "gens",
        "measure_from",
    )

    def __init__(self, call_sid: str, stream_sid: str) -> None:
        self.call_sid, self.stream_sid = call_sid, stream_sid
        self.ws: Any = None
        self.chunk = 0
        self.seq = 1
        payload = base64.b64encode(b"\xff" * 160).decode()
        self.prefix = (
            '{"event":"media","streamSid":"' + stream_sid + '","media":{"track":"inbound","payload":"' + payload + '",'
        )
        self.play_end = 0.0
        self.marks: list[tuple[float, str]] = []  # (due, echo message), in order
        self.times: list[float] = []  # arrival of each outbound media frame
        self.gens: list[tuple[int, int]] = []  # (frames received when a mark came, its generation)
        self.measure_from = 0.0

    def media_message(self) -> str:
        self.chunk += 1
        self.seq += 1
        return f'{self.prefix}"chunk":"{self.chunk}","timestamp":"{(self.chunk - 1) * 20}"}},"sequenceNumber":"{self.seq}"}}'

    def on_message(self, raw: str, now: float) -> None:
        if raw.startswith('{"event":"media"'):
            self.times.append(now)
            self.play_end = max(self.play_end, now) + FRAME_S
        elif raw.startswith('{"event":"mark"'):
            name = json.loads(raw)["mark"]["name"]
            self.gens.append((len(self.times), int(name[1 : name.index(".")])))
            self.seq += 1
            echo = json.dumps(
                {"event": "mark", "sequenceNumber": str(self.seq), "streamSid": self.stream_sid, "mark": {"name": name}}
            )
            self.marks.append((max(self.play_end, now), echo))
        elif raw.startswith('{"event":"clear"'):
            self.play_end = now

    def gaps(self) -> tuple[list[float], int]:
        """Inter-arrival gaps of frames within one reply (generation), and underruns: frames
        that came after the simulated playback buffer had run dry mid-reply."""
        gaps: list[float] = []
        underruns = 0
        start = 0
        prev_gen = -1
        play_end = 0.0
        for end, gen in self.gens:
            for i in range(start, end):
                t = self.times[i]
                if gen == prev_gen and i > 0 and t >= self.measure_from:
                    gaps.append(t - self.times[i - 1])
                    if t > play_end + 0.005:
                        underruns += 1
                else:
                    play_end = t
                play_end = max(play_end, t) + FRAME_S
                prev_gen = gen
            start = end
        return gaps, underruns


async def _record_calls(data_dir: Path, calls: list[BenchCall]) -> None:
    from server.call_store import record_call
    from server.db import Database

    db = Database(_settings(data_dir).effective_database_url)
    await db.upgrade()
    for c in calls:
        await record_call(
            db,
            sid=c.call_sid,
            direction="inbound",
            from_number="+14155550100",
            to_number="+15550009999",
            flow="scheduling",
            thread_id=c.call_sid,
            status="in-progress",
        )
    await db.aclose()


async def _open(url: str, c: BenchCall) -> None:
    from twilio.request_validator import RequestValidator
    from websockets.asyncio.client import connect

    from server.security import issue_stream_token

    sig = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL.replace("http://", "ws://") + "/twilio/media", {})
    c.ws = await connect(url, additional_headers={"X-Twilio-Signature": sig}, compression=None)
    token = issue_stream_token(STREAM_SECRET, call_sid=c.call_sid, thread_id=c.call_sid, flow="scheduling", ttl_s=300)
    await c.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    start = {
        "accountSid": "AC" + "1" * 32,
        "streamSid": c.stream_sid,
        "callSid": c.call_sid,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"token": token},
    }
    await c.ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": c.stream_sid}))


async def _receive(c: BenchCall) -> None:
    loop = asyncio.get_running_loop()
    try:
        async for raw in c.ws:
            c.on_message(raw, loop.time())
    except Exception:  # the socket closing at the end is expected
        pass


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def drive(url: str, pid: int, n: int, seconds: float, data_dir: Path, warmup: float = 3.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    calls = [BenchCall("CA" + uuid.uuid4().hex, "MZ" + uuid.uuid4().hex) for _ in range(n)]
    await _record_calls(data_dir, calls)
    rss0 = _rss_mb(pid)
    for i in range(0, n, 25):
        await asyncio.gather(*(_open(url, c) for c in calls[i : i + 25]))
    # Stagger the calls' turns (real calls are not in step): call i starts i/n of a turn in.
    for i, c in enumerate(calls):
        for _ in range(i * TURN_FRAMES // n):
            await c.ws.send(c.media_message())
    receivers = [asyncio.create_task(_receive(c)) for c in calls]
    t0 = loop.time()
    tick = t0
    measuring = False
    cpu0 = wall0 = 0.0
    client0 = 0.0
    lag: list[float] = []
    while True:
        now = loop.time()
        if not measuring and now - t0 >= warmup:
            measuring, cpu0, wall0, client0 = True, _cpu_s(pid), time.monotonic(), time.process_time()
            for c in calls:
                c.measure_from = now
        if now - t0 >= warmup + seconds:
            break
        for c in calls:
            await c.ws.send(c.media_message())
            marks = c.marks
            while marks and marks[0][0] <= now:
                await c.ws.send(marks.pop(0)[1])
        tick += FRAME_S
        await asyncio.sleep(max(0.0, tick - loop.time()))
        lag.append(max(0.0, loop.time() - tick))
    cpu, wall, client_cpu = _cpu_s(pid) - cpu0, time.monotonic() - wall0, time.process_time() - client0
    rss = _rss_mb(pid)
    for c in calls:
        await c.ws.close()
    await asyncio.gather(*receivers)
    per_call = [c.gaps() for c in calls]
    gaps = sorted(g for call_gaps, _ in per_call for g in call_gaps)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")

    return {
        "calls": n,
        "cpu_ms_per_call_s": cpu / (n * wall) * 1000,
        "server_cpu_pct": cpu / wall * 100,
        "client_cpu_pct": client_cpu / wall * 100,
        "gap_p50": pct(gaps, 0.5),
        "gap_p99": pct(gaps, 0.99),
        "gap_max": pct(gaps, 1.0),
        "frames": len(gaps),
        "underruns": sum(u for _, u in per_call),
        "rss_mb_per_call": (rss - rss0) / n,
        "client_tick_lag_p99": pct(sorted(lag), 0.99),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_one(n: int, seconds: float, profile: str = "", freeze: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        port = _free_port()
        stats_path = data_dir / "stats.json"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.media_path",
                "--serve",
                str(port),
                "--data-dir",
                tmp,
                "--stats",
                str(stats_path),
            ]
            + (["--profile-to", profile] if profile else [])
            + (["--gc-freeze"] if freeze else []),
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("bench server did not start") from None
                    time.sleep(0.1)
            import uvloop

            result = uvloop.run(drive(f"ws://127.0.0.1:{port}/twilio/media", proc.pid, n, seconds, data_dir))
            time.sleep(1.0)  # let the sessions finish and flush
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {"latencies_ms": []}
        lat = sorted(stats.pop("latencies_ms"))
        result["lat_p50"] = lat[len(lat) // 2] if lat else float("nan")
        result["lat_p99"] = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        result["turns"] = len(lat)
        result["lat_mean"] = statistics.fmean(lat) if lat else float("nan")
        result.update({f"server_{k}": v for k, v in stats.items()})
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="50,100,250")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in the server after startup")
    parser.add_argument("--profile", help="write a cProfile of the server to this file (one row only)")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, Path(args.data_dir), Path(args.stats), args.profile_to or "", args.gc_freeze)
        return
    print(f"media path, {args.seconds:.0f} s per row, {os.cpu_count()} CPUs, 20 ms frames both ways")
    header = (
        f"{'calls':>5} {'cpu ms/call-s':>13} {'server cpu%':>11} {'client cpu%':>11} "
        f"{'gap p50':>7} {'gap p99':>7} {'gap max':>7} {'underruns':>9} {'turns':>5} "
        f"{'lat p50':>7} {'lat p99':>7} {'rss MB/call':>11}"
    )
    print(header)
    for n in (int(x) for x in args.calls.split(",")):
        r = run_one(n, args.seconds, args.profile or "", args.gc_freeze)
        print(
            f"{r['calls']:>5} {r['cpu_ms_per_call_s']:>13.2f} {r['server_cpu_pct']:>11.0f} {r['client_cpu_pct']:>11.0f} "
            f"{r['gap_p50']:>7.1f} {r['gap_p99']:>7.1f} {r['gap_max']:>7.1f} {r['underruns']:>9} {r['turns']:>5} "
            f"{r['lat_p50']:>7.2f} {r['lat_p99']:>7.2f} {r['rss_mb_per_call']:>11.2f}",
            flush=True,
        )
        extra = {k: r[k] for k in r if k.startswith("server_") and k != "server_cpu_pct"}
        print(f"      frames={r['frames']} client tick lag p99={r['client_tick_lag_p99']:.1f} ms {extra}", flush=True)


if __name__ == "__main__":
    main()
