"""Media-path density benchmark: N concurrent calls over real WebSockets on 127.0.0.1.

The server runs as its own process(es): ``uvicorn`` with ``--workers W`` semantics (one
process, or a supervisor and W worker processes sharing the port, as ``dialgraph serve
--workers W`` runs it), each worker building ``create_app`` with instant scripted providers
(``dialgraph.telephony.simulator.scripted``): the recognizer says a final every 4 s of caller audio, the
graph answers at once, TTS returns 2 s of audio at once. The VAD is the production one
(silero behind its noise-floor gate) unless ``--vad energy``, or ``--vad silero-silence``
(the gate before issue 16: digital silence only). So what is measured is our media path:
inbound frame handling (parse, gap check, recognizer push, VAD, policy), outbound pacing
and marks, the turn plumbing, heard-progress and transcript writes (SQLite).

This process plays Twilio for every call (the simulator's ``LeanLeg``: hand-rolled framing
and no task per call, so it stays cheap next to the server on the same cores): a
20 ms frame per call per tick (1.2 s of speech-like noise before each final, silence
otherwise: digital silence, or white line noise at ``--line-dbfs``), marks echoed when their audio would have finished playing (a simulated
playback buffer per call), arrival time and audio length of every media message kept.

Figures (within a reply; gaps > 1 s are between replies and not counted):
  srv ms/call-s   server CPU per second of call (user+sys of every server process, /proc)
  srv% / cli%     server and client CPU, % of one core
  msg             outbound audio per media message (ms): follows ``--lead-ms``
  gap p50/p99/max inter-arrival of outbound media messages
  late p99        how much later than its predecessor's audio ran out a message came
                  (gap minus the previous message's duration; a 20 ms frame gap of 40 ms
                  is 20 ms late)
  slack p1        audio still buffered at Twilio when a message arrived (p1, ms)
  underruns       messages that arrived after the simulated buffer had run dry
  lat p50/p99     final transcript -> first audio frame sent (server clock, per turn)
  rss MB/call     server resident memory growth per call (all processes)

Usage: python -m bench.media_path [--calls 50,100,250] [--seconds 20] [--workers 1,2]
       [--lead-ms 200] [--vad silero|silero-silence|energy] [--line-dbfs -45]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from dialgraph.telephony.simulator.lean import LeanLeg
from dialgraph.telephony.simulator.process import free_port
from dialgraph.telephony.simulator.protocol import (
    SILENCE_PAYLOAD,
    AgentAudio,
    AgentMark,
    Received,
    TwilioProtocol,
    payload,
)
from dialgraph.telephony.simulator.webhooks import stream_signature

AUTH_TOKEN = "bench-auth-token-0123456789"
STREAM_SECRET = "bench-stream-secret-0123456789"
PUBLIC_URL = "http://bench.invalid"
REPLY = "Sure, I can help with that. Which day suits you best?"
TURN_FRAMES = 200  # the caller's turn: a final every 4 s of caller audio
SPEECH_FRAMES = range(130, 190)  # frames of each turn that carry speech-like noise
BYTES_PER_WORD = 1600  # 200 ms of speech a word
FRAME_S = 0.02


# --- server process(es) ---------------------------------------------------------------------
def _settings(data_dir: Path, lead_ms: int = 200) -> Any:
    from pydantic import SecretStr

    from dialgraph.server.core.settings import Settings

    return Settings(
        data_dir=data_dir,
        public_url=PUBLIC_URL,
        twilio_auth_token=SecretStr(AUTH_TOKEN),
        stream_token_secret=SecretStr(STREAM_SECRET),
        log_level="WARNING",
        playback_lead_ms=lead_ms,
        _env_file=None,  # type: ignore[call-arg]
    )


class _Instrumented:
    """ASGI wrapper: a loop-lag monitor while the app lives, stats written at shutdown."""

    def __init__(self, app: Any, stats_path: Path) -> None:
        self.app = app
        self.stats_path = stats_path
        self.lags: list[float] = []
        self.latencies: list[float] = []
        self.stats: dict[str, Any] = {"calls": 0, "silence_frames": 0, "duplicates": 0, "barge_ins": 0}
        app.state.call_observer = self._finished

    def _finished(self, session: Any) -> None:
        self.stats["calls"] += 1
        for key in ("silence_frames", "duplicates", "barge_ins"):
            self.stats[key] += getattr(session.state, key)
        self.latencies.extend(
            t.latency_ms for t in session.timings if t.trigger == "caller" and t.latency_ms is not None
        )

    async def _monitor(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.005)
            self.lags.append((loop.time() - t - 0.005) * 1000)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        monitor = asyncio.create_task(self._monitor())
        try:
            await self.app(scope, receive, send)
        finally:
            monitor.cancel()
            lags = sorted(self.lags) or [-1.0]
            self.stats["loop_lag_p99_ms"] = round(lags[int(0.99 * (len(lags) - 1))], 1)
            self.stats["loop_lag_max_ms"] = round(lags[-1], 1)
            self.stats_path.write_text(json.dumps({"latencies_ms": self.latencies, **self.stats}))


def bench_app() -> Any:
    """The uvicorn factory of every server process (configured by the environment the
    bench's parent process sets: this is a bench, not the app)."""
    from dialgraph.server.app import create_app
    from dialgraph.server.services import Overrides
    from dialgraph.telephony.simulator.scripted import ScriptedRecognizer, ScriptedRunner, ScriptedSynthesizer
    from dialgraph.telephony.speech.base import Final

    data_dir = Path(os.environ["MEDIA_BENCH_DATA_DIR"])
    if os.environ.get("MEDIA_BENCH_VAD", "").startswith("silero"):
        import functools

        from dialgraph.telephony.speech.vad import SileroVad

        SileroVad.preload()
        vad_factory: Any = SileroVad
        if os.environ["MEDIA_BENCH_VAD"] == "silero-silence":
            vad_factory = functools.partial(SileroVad, floor_margin_db=None)
    else:
        from dialgraph.telephony.speech.vad import EnergyVad

        vad_factory = EnergyVad
    overrides = Overrides(
        recognizer=ScriptedRecognizer(
            [(TURN_FRAMES, Final("I need a cleaning", 0.0, 0.1))], repeat_every=TURN_FRAMES, keep_audio=False
        ),
        synthesizer=ScriptedSynthesizer(bytes_per_word=BYTES_PER_WORD, chunk_bytes=3200),
        vad_factory=vad_factory,
        runners={"scheduling": ScriptedRunner(default=REPLY)},
        call_control=object(),
    )
    app = create_app(_settings(data_dir, int(os.environ["MEDIA_BENCH_LEAD_MS"])), overrides=overrides)
    return _Instrumented(app, data_dir / f"stats-{os.getpid()}.json")


def serve(port: int, workers: int, profile: str = "") -> None:
    import uvicorn

    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "factory": True,
        "workers": workers,
        "log_level": "warning",
        "access_log": False,
        "ws_max_size": 65536,
        "ws_ping_interval": None,
    }
    try:
        if profile and workers == 1:
            import cProfile

            cProfile.runctx(
                "uvicorn.run('bench.media_path:bench_app', **options)",
                globals(),
                {"uvicorn": uvicorn, "options": options},
                profile,
            )
        else:
            uvicorn.run("bench.media_path:bench_app", **options)
    except KeyboardInterrupt:
        pass


# --- Twilio side --------------------------------------------------------------------------------
def _line_frames(dbfs: float) -> list[bytes]:
    """Steady white noise at ``dbfs``: a phone line with nobody speaking on it."""
    from dialgraph.telephony.audio import pcm16_to_ulaw

    rng = random.Random(11)
    sd = 32768 * 10 ** (dbfs / 20)
    frames = []
    for _ in range(50):
        pcm = b"".join(
            max(-32768, min(32767, int(rng.gauss(0, sd)))).to_bytes(2, "little", signed=True) for _ in range(160)
        )
        frames.append(pcm16_to_ulaw(pcm))
    return frames


def _speech_frames() -> list[bytes]:
    from dialgraph.telephony.audio import pcm16_to_ulaw

    rng = random.Random(7)
    frames = []
    for _ in range(16):
        pcm = bytearray()
        for i in range(160):
            v = int(6000 * ((rng.random() - 0.5) + 0.8 * ((i * 37) % 53 - 26) / 26))
            pcm += v.to_bytes(2, "little", signed=True)
        frames.append(pcm16_to_ulaw(bytes(pcm)))
    return frames


class BenchCall:
    """One call's script (speech-like noise before each final, silence otherwise) and the
    arrival of every agent message, on a ``LeanLeg``."""

    __slots__ = ("call_sid", "leg", "chunk", "times", "sizes", "gens", "measure_from")

    SPEECH: list[str] = []
    QUIET: list[str] = [SILENCE_PAYLOAD]  # the caller's line between turns

    def __init__(self, call_sid: str, stream_sid: str) -> None:
        self.call_sid = call_sid
        self.leg = LeanLeg(TwilioProtocol(stream_sid=stream_sid, call_sid=call_sid), self.on_event)
        self.chunk = 0
        self.times: list[float] = []  # arrival of each outbound media message
        self.sizes: list[int] = []  # its audio bytes
        self.gens: list[tuple[int, int]] = []  # (media messages received when a mark came, its generation)
        self.measure_from = 0.0

    def next_payload(self) -> str:
        """The caller's next 20 ms: speech-like noise for part of every turn, else silence."""
        self.chunk += 1
        n = self.chunk
        if (n % TURN_FRAMES) in SPEECH_FRAMES:
            return self.SPEECH[n % len(self.SPEECH)]
        return self.QUIET[n % len(self.QUIET)]

    def on_event(self, event: Received, now: float) -> None:
        if isinstance(event, AgentAudio):
            self.times.append(now)
            self.sizes.append(len(event.audio))
        elif isinstance(event, AgentMark):
            self.gens.append((len(self.times), int(event.name[1 : event.name.index(".")])))

    def figures(self) -> tuple[list[float], list[float], list[float], int]:
        """Within one reply (generation): inter-arrival gaps, lateness (gap minus the
        previous message's audio), slack (audio still buffered on arrival), underruns."""
        gaps: list[float] = []
        late: list[float] = []
        slack: list[float] = []
        underruns = 0
        start = 0
        prev_gen = -1
        play_end = 0.0
        for end, gen in self.gens:
            for i in range(start, end):
                t = self.times[i]
                if gen == prev_gen and i > 0 and t >= self.measure_from and t - self.times[i - 1] < 1.0:
                    gap = t - self.times[i - 1]
                    gaps.append(gap)
                    late.append(gap - self.sizes[i - 1] / 8000)
                    slack.append(play_end - t)
                    if t > play_end + 0.005:
                        underruns += 1
                else:
                    play_end = t
                play_end = max(play_end, t) + self.sizes[i] / 8000
                prev_gen = gen
            start = end
        return gaps, late, slack, underruns


async def _record_calls(data_dir: Path, calls: list[BenchCall]) -> None:
    from dialgraph.server.core.call_store import record_call
    from dialgraph.server.core.db import Database

    db = Database(_settings(data_dir).effective_database_url)
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


async def _open(port: int, c: BenchCall) -> None:
    from dialgraph.server.core.security import issue_stream_token

    token = issue_stream_token(STREAM_SECRET, call_sid=c.call_sid, thread_id=c.call_sid, flow="scheduling", ttl_s=300)
    signature = stream_signature(AUTH_TOKEN, PUBLIC_URL)
    await c.leg.open("127.0.0.1", port, path="/twilio/media", signature=signature, parameters={"token": token})


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(x.split()[1]) / 1024 for x in lines if x.startswith("VmRSS:")), 0.0)
    return total


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


async def drive(
    port: int, pid: int, n: int, seconds: float, data_dir: Path, warmup: float = 3.0, line_dbfs: float | None = None
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    BenchCall.SPEECH = [payload(f) for f in _speech_frames()]
    BenchCall.QUIET = [SILENCE_PAYLOAD] if line_dbfs is None else [payload(f) for f in _line_frames(line_dbfs)]
    calls = [BenchCall("CA" + uuid.uuid4().hex, "MZ" + uuid.uuid4().hex) for _ in range(n)]
    await _record_calls(data_dir, calls)
    pids = _tree(pid)
    rss0 = _rss_mb(pids)
    for i in range(0, n, 25):
        await asyncio.gather(*(_open(port, c) for c in calls[i : i + 25]))
    # Stagger the calls' turns (real calls are not in step): call i starts i/n of a turn in.
    for i, c in enumerate(calls):
        c.leg.send_media([c.next_payload() for _ in range(i * TURN_FRAMES // n)])
    t0 = loop.time()
    tick = t0
    measuring = False
    cpu0 = wall0 = client0 = 0.0
    lag: list[float] = []
    while True:
        now = loop.time()
        if not measuring and now - t0 >= warmup:
            measuring, cpu0, wall0, client0 = True, _cpu_s(pids), time.monotonic(), time.process_time()
            for c in calls:
                c.measure_from = now
        if now - t0 >= warmup + seconds:
            break
        for c in calls:
            c.leg.tick(now, c.next_payload())
        tick += FRAME_S
        await asyncio.sleep(max(0.0, tick - loop.time()))
        lag.append(max(0.0, loop.time() - tick))
    cpu, wall, client_cpu = _cpu_s(pids) - cpu0, time.monotonic() - wall0, time.process_time() - client0
    rss = _rss_mb(pids)
    for c in calls:
        c.leg.close()
    await asyncio.wait([c.leg.closed for c in calls], timeout=10)
    per_call = [c.figures() for c in calls]
    gaps = sorted(g for f in per_call for g in f[0])
    late = sorted(x for f in per_call for x in f[1])
    slack = sorted(x for f in per_call for x in f[2])
    sizes = sorted(s for c in calls for s in c.sizes)
    return {
        "calls": n,
        "cpu_ms_per_call_s": cpu / (n * wall) * 1000,
        "server_cpu_pct": cpu / wall * 100,
        "client_cpu_pct": client_cpu / wall * 100,
        "msg_ms": sizes[len(sizes) // 2] / 8 if sizes else float("nan"),
        "gap_p50": _pct(gaps, 0.5),
        "gap_p99": _pct(gaps, 0.99),
        "gap_max": _pct(gaps, 1.0),
        "late_p99": _pct(late, 0.99),
        "slack_p1": _pct(slack, 0.01),
        "messages": len(gaps),
        "underruns": sum(f[3] for f in per_call),
        "rss_mb_per_call": (rss - rss0) / n,
        "client_tick_lag_p99": _pct(sorted(lag), 0.99),
    }


def run_one(
    n: int,
    seconds: float,
    *,
    workers: int,
    lead_ms: int,
    vad: str,
    profile: str = "",
    line_dbfs: float | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        port = free_port()
        from dialgraph.server.core.db import upgrade

        upgrade(_settings(data_dir).effective_database_url)  # once, before workers start (as the CLI does)
        env = {
            **os.environ,
            "MEDIA_BENCH_DATA_DIR": tmp,
            "MEDIA_BENCH_LEAD_MS": str(lead_ms),
            "MEDIA_BENCH_VAD": vad,
        }
        cmd = [sys.executable, "-m", "bench.media_path", "--serve", str(port), "--workers", str(workers)]
        proc = subprocess.Popen(cmd + (["--profile-to", profile] if profile else []), env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("bench server did not start") from None
                    time.sleep(0.1)
            time.sleep(1.0 if workers > 1 else 0.0)  # every worker up, not just the first
            import uvloop

            result = uvloop.run(drive(port, proc.pid, n, seconds, data_dir, line_dbfs=line_dbfs))
            time.sleep(1.0)  # let the sessions finish and flush
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        lat: list[float] = []
        stats: dict[str, Any] = {}
        for path in data_dir.glob("stats-*.json"):
            worker = json.loads(path.read_text())
            lat += worker.pop("latencies_ms")
            for key, value in worker.items():
                stats[key] = max(stats.get(key, 0), value) if key.startswith("loop_lag") else stats.get(key, 0) + value
        lat.sort()
        result["lat_p50"] = lat[len(lat) // 2] if lat else float("nan")
        result["lat_p99"] = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        result["turns"] = len(lat)
        result.update({f"server_{k}": v for k, v in stats.items()})
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="50,100,250")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", default="1", help="server processes, comma-separated to compare (e.g. 1,2)")
    parser.add_argument("--lead-ms", type=int, default=200, help="playback_lead_ms (200 -> 100 ms messages)")
    parser.add_argument("--vad", choices=("silero", "silero-silence", "energy"), default="silero")
    parser.add_argument("--line-dbfs", type=float, help="white noise on the caller's line between turns (dBFS)")
    parser.add_argument("--profile", help="write a cProfile of the server to this file (1 worker only)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, int(args.workers), args.profile_to or "")
        return
    print(
        f"media path, {args.seconds:.0f} s per row, {os.cpu_count()} CPUs, lead {args.lead_ms} ms, "
        f"VAD {args.vad}, line {'silent' if args.line_dbfs is None else f'{args.line_dbfs:.0f} dBFS'}; "
        "client is this process"
    )
    header = (
        f"{'wkr':>3} {'calls':>5} {'srv ms/call-s':>13} {'srv%':>5} {'cli%':>5} {'msg':>4} "
        f"{'gap p50':>7} {'gap p99':>7} {'gap max':>7} {'late p99':>8} {'slack p1':>8} {'underruns':>9} "
        f"{'turns':>5} {'lat p50':>7} {'lat p99':>7} {'rss MB/call':>11}"
    )
    print(header)
    for workers in (int(w) for w in args.workers.split(",")):
        for n in (int(x) for x in args.calls.split(",")):
            r = run_one(
                n,
                args.seconds,
                workers=workers,
                lead_ms=args.lead_ms,
                vad=args.vad,
                profile=args.profile,
                line_dbfs=args.line_dbfs,
            )
            print(
                f"{workers:>3} {r['calls']:>5} {r['cpu_ms_per_call_s']:>13.2f} {r['server_cpu_pct']:>5.0f} "
                f"{r['client_cpu_pct']:>5.0f} {r['msg_ms']:>4.0f} {r['gap_p50']:>7.1f} {r['gap_p99']:>7.1f} "
                f"{r['gap_max']:>7.1f} {r['late_p99']:>8.1f} {r['slack_p1']:>8.1f} {r['underruns']:>9} "
                f"{r['turns']:>5} {r['lat_p50']:>7.2f} {r['lat_p99']:>7.2f} {r['rss_mb_per_call']:>11.2f}",
                flush=True,
            )
            extra = {k: r[k] for k in r if k.startswith("server_") and k != "server_cpu_pct"}
            print(
                f"          messages={r['messages']} client tick lag p99={r['client_tick_lag_p99']:.1f} ms {extra}",
                flush=True,
            )


if __name__ == "__main__":
    main()
