"""Whole calls under load: one server process on one core, hundreds of real calls against it.

For each N, a fresh ``bench.load_server --speech cloud`` (the real app under uvicorn with
``dialgraph serve``'s options, the offline model, the real Deepgram SDK and our ElevenLabs
client, SQLite in a temp dir or ``--database-url``) is pinned to core 0; this process, on
core 1, runs the vendors' protocol stand-ins with their published timing
(``DEEPGRAM_TIMING``: results 200 ms after their audio, an interim per second of speech;
``ELEVENLABS_TIMING``: 100 ms to first byte, streamed at 4x real time, ~150 words a minute)
and N lean Twilio callers (``simulator.lean``: one tick loop sends every call's 20 ms frame;
the caller's speech is precomputed word-coded audio the Deepgram stand-in "hears"). Calls
start evenly over ``--ramp`` seconds; each is a support call (``bench/scenarios/
load_support.yaml``): the greeting, then the caller's questions in turn until ``--seconds``,
then goodbye, each said after the agent's reply has played and 0.8 s of quiet.

It prints, per N:

- calls admitted / refused (``--max-calls`` sets the server's ``[overload] max_calls``) and
  greeted (the greeting's first frame arrived);
- underruns per agent-minute: Twilio's playback buffer (``PlaybackBuffer``) running dry
  within a reply, per minute of agent audio received;
- end of speech -> first agent frame received, p50 / p99 (the caller's clock; includes the
  stand-ins' own delays: endpointing 300 ms of audio + 200 ms result latency + 100 ms TTFB);
- the service's share, final transcript -> first frame sent, p50 / p99, from the server's
  own turn records (``latency_ms`` of each caller-triggered agent turn, admin API); it
  includes the TTS stand-in's first byte, so "own" also prints it less the TTS stage
  (``data.timings``: first model token -> first TTS audio), i.e. ours alone;
- server CPU per call-second (ms of CPU per second of call) and its share of the core;
- server RSS at 0 calls, at 100 live calls and at N (MB), and per call ((RSS@N - RSS@0) / N);
- event-loop lag p99: the worst 10 s window of ``/healthz``'s ``loop_lag_p99_ms`` (the
  overload rule's own probe) sampled every 5 s;
- this process's CPU and tick lag, so a saturated generator is seen, not mistaken for the server;
- the checkpoint writes' time (queue + trip to the database) from the server's ``/metrics``
  histogram ``dialgraph_checkpoint_write_seconds``: count, mean, and the bucket 99 % are under.

    .venv/bin/python -m bench.load_whole --calls 100 150 200 250 [--database-url URL]
        [--no-pin] [--max-calls N] [--seconds 40] [--ramp S] [--vendor-timing none]
        [--workers N --server-cores 0,1 --gen-core 1]

``--workers N`` serves with N processes on the port (as ``dialgraph serve --workers N``),
pinned together to ``--server-cores``; CPU and RSS are then the sum over the server's
processes (``--max-calls`` is per process). On a 2-core box the generator cannot have a core
of its own beside two workers: ``--workers 2 --server-cores 0,1 --gen-core 1`` shares core 1,
and the "generator + stand-ins" share says how much of the servers' second core it took.

The machine may be shared: figures are noisy, CPU time is the steadier one. Two runs would
pin their servers to the same core, so a run takes a lock (``/tmp/dialgraph-load-whole.lock``)
and a second one waits for the first. The server dies with this process (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.server_readings import ADMIN_TOKEN, checkpoint_writes, core_times, tree_cpu_s, tree_rss_kb
from dialgraph.telephony.simulator.lean import LeanLeg
from dialgraph.telephony.simulator.process import free_port
from dialgraph.telephony.simulator.protocol import (
    FRAME_BYTES,
    SAMPLE_RATE,
    SILENCE_PAYLOAD,
    AgentAudio,
    AgentClear,
    Received,
    TwilioProtocol,
    Violation,
    payload,
)
from dialgraph.telephony.simulator.report import percentile
from dialgraph.telephony.simulator.scenario import Say, load_scenario
from dialgraph.telephony.simulator.twiml import ConnectVerb, parse_twiml
from dialgraph.telephony.simulator.vendors import (
    DEEPGRAM_TIMING,
    ELEVENLABS_TIMING,
    DeepgramFake,
    DeepgramTiming,
    ElevenLabsFake,
    ElevenLabsTiming,
    word_audio,
)
from dialgraph.telephony.simulator.webhooks import TwilioWebhookClient, call_params, new_sid, stream_signature

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "bench" / "scenarios" / "load_support.yaml"
AUTH_TOKEN = "dev-auth-token"
ENDPOINTING_MS = 300  # what the server asks Deepgram for (telephony/speech/deepgram.py)
MAX_REPLY_GAP_S = 2.0  # as MediaLeg: a longer agent silence is a new reply
REPLY_TIMEOUT_S = 20.0  # no agent audio this long after the caller spoke: the call failed
TICK_S = 0.02
PR_SET_PDEATHSIG = 1
LOCK = Path(tempfile.gettempdir()) / "dialgraph-load-whole.lock"


# --- the caller's speech, rendered once --------------------------------------------------------
def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9'-]+", text.lower())


@dataclass(frozen=True, slots=True)
class Utterance:
    """One caller line as 20 ms ``media`` payloads; the speech ends ``tail_s`` before the
    end of frame ``last_voiced`` (a frame goes out when its 20 ms have been captured)."""

    payloads: tuple[str, ...]
    last_voiced: int
    tail_s: float


def utterance(text: str, vocab: list[str]) -> Utterance:
    audio = word_audio(words_of(text), vocab)
    voiced = len(audio)
    audio += b"\xff" * (-len(audio) % FRAME_BYTES)
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    last = (voiced - 1) // FRAME_BYTES
    return Utterance(tuple(payload(f) for f in frames), last, ((last + 1) * FRAME_BYTES - voiced) / SAMPLE_RATE)


# --- one call, driven by the tick loop --------------------------------------------------------
@dataclass
class WholeCall:
    index: int
    sid: str
    questions: list[Utterance]
    goodbye: Utterance
    seconds: float
    quiet_s: float
    leg: LeanLeg | None = None
    refused: bool = False
    opened_at: float | None = None
    ended_at: float | None = None
    greeted_at: float | None = None
    phase: str = "greeting"  # greeting | speaking | waiting | bye | done
    said: int = 0
    line: Utterance | None = None
    pos: int = 0
    spoke_at: float = 0.0  # the caller's last end of speech
    eos: float | None = None  # waiting for the reply to this end of speech
    last_media_at: float | None = None
    agent_bytes: int = 0
    underruns: int = 0
    violations: int = 0
    reply_ms: list[float] = field(default_factory=list)
    reply_at: list[float] = field(default_factory=list)
    failure: str | None = None
    saying_goodbye: bool = False

    def on_event(self, event: Received, now: float) -> None:
        if isinstance(event, AgentAudio):
            self.agent_bytes += len(event.audio)
            last = self.last_media_at
            if last is not None and self.spoke_at < last and now - last < MAX_REPLY_GAP_S and event.dry_s > 0:
                self.underruns += 1
            self.last_media_at = now
            if self.greeted_at is None:
                self.greeted_at = now
            if self.eos is not None:
                self.reply_ms.append((now - self.eos) * 1000)
                self.reply_at.append(now)
                self.eos = None
        elif isinstance(event, AgentClear):
            self.last_media_at = None
        elif isinstance(event, Violation):
            self.violations += 1

    def tick(self, now: float) -> None:
        leg = self.leg
        assert leg is not None and self.opened_at is not None
        b64 = SILENCE_PAYLOAD
        if self.phase == "speaking" and self.line is not None:
            b64 = self.line.payloads[self.pos]
            if self.pos == self.line.last_voiced:
                self.eos = self.spoke_at = now - self.line.tail_s
            self.pos += 1
            if self.pos == len(self.line.payloads):
                self.phase = "bye" if self.saying_goodbye else "waiting"
        leg.tick(now, b64)
        if self.phase in ("greeting", "waiting", "bye"):
            heard = self.greeted_at if self.phase == "greeting" else self.last_media_at
            waited_from = self.opened_at if self.phase == "greeting" else self.spoke_at
            if heard is None or heard < waited_from:
                if now - waited_from > REPLY_TIMEOUT_S:
                    self.failure = f"no agent audio {REPLY_TIMEOUT_S:.0f} s after the caller's turn {self.said}"
                    self.hang_up()
                return
            if not leg.protocol.playback.idle(now) or now - leg.protocol.playback.end < self.quiet_s:
                return
            if self.phase == "bye":
                self.hang_up()
                return
            self.saying_goodbye = now - self.opened_at >= self.seconds
            self.line = self.goodbye if self.saying_goodbye else self.questions[self.said % len(self.questions)]
            self.said += 1
            self.pos = 0
            self.phase = "speaking"

    def hang_up(self) -> None:
        if self.phase != "done" and self.leg is not None:
            self.phase = "done"
            self.leg.hang_up()


# --- the run ------------------------------------------------------------------------------------
@dataclass
class RunResult:
    n: int
    calls: list[WholeCall]
    wall_s: float
    server_cpu_s: float
    gen_cpu_s: float
    rss_mb: dict[str, float]
    lag_p99_ms: list[float]
    tick_lag_ms: list[float]
    service_ms: list[float]
    server_eos_ms: list[float]  # the server's own end of speech -> first frame sent
    own_ms: list[float]  # service share less the TTS vendor's time (first token -> first TTS audio)
    stages: list[tuple[float, float, float]]
    steady_reply_ms: list[float]  # EoS -> first frame for replies after the ramp (+5 s)
    cores: dict[int, float]  # each core's busy share during the run (every process on it)
    writes: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # checkpoint writes by op

    def admitted(self) -> list[WholeCall]:
        return [c for c in self.calls if not c.refused]


class Run:
    def __init__(self, args: argparse.Namespace, n: int, url: str, pid: int, lines: tuple[list[Utterance], Utterance]):
        self.args, self.n, self.url, self.pid = args, n, url, pid
        self.questions, self.goodbye = lines
        self.active: list[WholeCall] = []
        self.stop = asyncio.Event()
        self.tick_lag: list[float] = []
        self.lag: list[float] = []
        self.rss: dict[str, float] = {}
        self.stages: list[tuple[float, float, float]] = []  # (final -> token, token -> TTS audio, -> frame sent)
        self.started = 0.0

    async def ticker(self) -> None:
        """One loop for every call: each tick sends each live call's next frame."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not self.stop.is_set():
            now = loop.time()
            self.tick_lag.append((now - due) * 1000)
            for call in self.active:
                if call.phase != "done":
                    call.tick(now)
            due += TICK_S
            if loop.time() - due > 0.2:  # far behind: skip ahead rather than burst
                due = loop.time()
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def sample(self, http: httpx.AsyncClient, target: int) -> None:
        """RSS at 100 live calls and at N (or all admitted), and the loop-lag probe every 5 s."""
        self.rss["0"] = tree_rss_kb(self.pid) / 1024
        next_health = 0.0
        while not self.stop.is_set():
            live = sum(1 for c in self.active if c.phase != "done")
            if live >= 100 and "100" not in self.rss:
                self.rss["100"] = tree_rss_kb(self.pid) / 1024
            if live >= target and "N" not in self.rss:
                self.rss["N"] = tree_rss_kb(self.pid) / 1024
            self.rss["peak"] = max(self.rss.get("peak", 0.0), tree_rss_kb(self.pid) / 1024)
            if time.monotonic() >= next_health:
                next_health = time.monotonic() + 5
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    body = (await http.get("/healthz")).json()
                    self.lag.append(float(body["loop_lag_p99_ms"]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)

    async def one(self, i: int, http: httpx.AsyncClient, twilio: TwilioWebhookClient) -> WholeCall:
        args = self.args
        call = WholeCall(i, new_sid("CA"), self.questions, self.goodbye, args.seconds, 0.8)
        await asyncio.sleep(args.ramp * i / max(1, self.n))
        params = call_params(call.sid, from_number=f"+1555{7000000 + i:07d}", to_number=args.to)
        try:
            response = await twilio.post("/twilio/voice", {**params, "CallStatus": "ringing"})
            verbs = parse_twiml(response.content, base_url=self.url)
            connect = next((v for v in verbs if isinstance(v, ConnectVerb)), None)
            if connect is None or connect.stream is None:
                call.refused = True
                await twilio.post("/twilio/status", {**params, "CallStatus": "completed", "CallDuration": "1"})
                return call
            target = urlsplit(connect.stream.url)
            leg = LeanLeg(TwilioProtocol(stream_sid=new_sid("MZ"), call_sid=call.sid), call.on_event)
            call.leg = leg
            await leg.open(
                target.hostname or "127.0.0.1",
                target.port or 80,
                path=target.path,
                signature=stream_signature(AUTH_TOKEN, self.url),
                parameters=connect.stream.parameters,
            )
            call.opened_at = asyncio.get_running_loop().time()
            self.active.append(call)
            try:
                async with asyncio.timeout(args.seconds + 120):
                    await leg.closed
            except TimeoutError:
                call.failure = call.failure or "still going past its time: hung up"
                call.hang_up()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await leg.closed
            call.ended_at = asyncio.get_running_loop().time()
            server_ended = call.phase != "done"
            if server_ended and call.failure is None and not call.saying_goodbye:
                call.failure = f"the server ended the call after {call.said} caller turn(s)"
            call.phase = "done"
            if server_ended and connect.action:  # Twilio asks what next only when the call goes on
                await twilio.post(urlsplit(connect.action).path, {**params, "CallStatus": "in-progress"})
            duration = str(max(1, round(call.ended_at - call.opened_at)))
            await twilio.post("/twilio/status", {**params, "CallStatus": "completed", "CallDuration": duration})
        except (OSError, httpx.HTTPError) as exc:
            call.failure = call.failure or f"{type(exc).__name__}: {exc}"[:200]
            call.phase = "done"
            if call.opened_at is not None and call.ended_at is None:
                call.ended_at = asyncio.get_running_loop().time()
        return call

    async def server_turns(
        self, http: httpx.AsyncClient, calls: list[WholeCall]
    ) -> tuple[list[float], list[float], list[float]]:
        """The server's own records of each caller-triggered reply (after the run)."""
        service: list[float] = []
        eos: list[float] = []
        own: list[float] = []
        stages = self.stages
        gate = asyncio.Semaphore(8)

        async def fetch(sid: str) -> None:
            async with gate:
                r = await http.get(f"/api/calls/{sid}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            if r.status_code != 200:
                return
            for e in r.json().get("events", []):
                data = e.get("data") or {}
                if e.get("role") == "agent" and e.get("kind") == "turn" and data.get("trigger") == "caller":
                    if e.get("latency_ms") is not None:
                        service.append(float(e["latency_ms"]))
                    t = data.get("timings") or {}
                    if (first := t.get("first_frame_ms")) is not None:
                        eos.append(float(first))
                    if all(k in t for k in ("asr_final_ms", "first_token_ms", "first_tts_audio_ms", "first_frame_ms")):
                        model = t["first_token_ms"] - t["asr_final_ms"]
                        tts = t["first_tts_audio_ms"] - t["first_token_ms"]
                        send = t["first_frame_ms"] - t["first_tts_audio_ms"]
                        own.append(model + send)
                        stages.append((model, tts, send))

        await asyncio.gather(*(fetch(c.sid) for c in calls if c.opened_at is not None))
        return service, eos, own

    async def run(self) -> RunResult:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=self.url, timeout=30.0, trust_env=False, limits=limits) as http:
            twilio = TwilioWebhookClient(http, public_url=self.url, auth_token=AUTH_TOKEN)
            target = self.n if not self.args.max_calls else min(self.n, self.args.max_calls)
            ticker = asyncio.create_task(self.ticker())
            sampler = asyncio.create_task(self.sample(http, target))
            cores0 = core_times()
            cpu0, gen0, wall0 = tree_cpu_s(self.pid), time.process_time(), time.monotonic()
            self.started = asyncio.get_running_loop().time()
            calls = await asyncio.gather(*(self.one(i, http, twilio) for i in range(self.n)))
            server_cpu, gen_cpu, wall = (
                tree_cpu_s(self.pid) - cpu0,
                time.process_time() - gen0,
                time.monotonic() - wall0,
            )
            cores1 = core_times()
            cores = {c: (busy - cores0[c][0]) / max(1e-9, total - cores0[c][1]) for c, (busy, total) in cores1.items()}
            self.stop.set()
            await asyncio.gather(ticker, sampler)
            service, eos, own = await self.server_turns(http, calls)
            writes = await checkpoint_writes(http)
        steady_from = self.started + self.args.ramp + 5
        return RunResult(
            self.n, calls, wall, server_cpu, gen_cpu, self.rss, self.lag, self.tick_lag, service, eos, own,
            self.stages, [ms for c in calls for at, ms in zip(c.reply_at, c.reply_ms, strict=True) if at >= steady_from],
            cores, writes,
        )  # fmt: skip


# --- report -------------------------------------------------------------------------------------
def fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


HEADER = (
    f"{'calls':>5} {'admit':>5} {'refus':>5} {'greet':>5} {'fail':>4} {'und/min':>7} "
    f"{'EoS p50':>7} {'EoS p99':>7} {'svc p50':>7} {'svc p99':>7} {'own p50':>7} {'own p99':>7} {'CPUms/cs':>8} {'srv CPU':>7} "
    f"{'RSS@0':>6} {'@100':>6} {'@N':>6} {'MB/call':>7} {'lag p99':>7} {'gen CPU':>7} {'tick p99':>8}"
)


def report(r: RunResult) -> str:
    admitted = r.admitted()
    greeted = sum(1 for c in admitted if c.greeted_at is not None)
    failed = [c for c in admitted if c.failure]
    agent_min = sum(c.agent_bytes for c in admitted) / SAMPLE_RATE / 60
    underruns = sum(c.underruns for c in admitted)
    replies = [v for c in admitted for v in c.reply_ms]
    call_s = sum((c.ended_at or 0) - c.opened_at for c in admitted if c.opened_at is not None)
    rss = r.rss_mb

    def stage(i: int, q: float) -> str:
        return fmt(percentile([s[i] for s in r.stages], q), ".1f")

    per_call = (rss["N"] - rss["0"]) / max(1, len(admitted)) if "N" in rss else None
    line = (
        f"{r.n:>5} {len(admitted):>5} {len(r.calls) - len(admitted):>5} {greeted:>5} {len(failed):>4} "
        f"{fmt(underruns / agent_min if agent_min else None, '.2f'):>7} "
        f"{fmt(percentile(replies, 50)):>7} {fmt(percentile(replies, 99)):>7} "
        f"{fmt(percentile(r.service_ms, 50), '.1f'):>7} {fmt(percentile(r.service_ms, 99), '.1f'):>7} "
        f"{fmt(percentile(r.own_ms, 50), '.1f'):>7} {fmt(percentile(r.own_ms, 99), '.1f'):>7} "
        f"{fmt(r.server_cpu_s * 1000 / call_s if call_s else None, '.2f'):>8} {r.server_cpu_s / r.wall_s:>7.0%} "
        f"{fmt(rss.get('0')):>6} {fmt(rss.get('100')):>6} {fmt(rss.get('N')):>6} {fmt(per_call, '.2f'):>7} "
        f"{fmt(max(r.lag_p99_ms, default=None)):>7} {r.gen_cpu_s / r.wall_s:>7.0%} "
        f"{fmt(percentile(r.tick_lag_ms, 99)):>8}"
    )
    extra = [
        f"      {len(replies)} replies, {agent_min:.1f} agent-min, {underruns} underruns, "
        f"{sum(c.violations for c in admitted)} protocol violations; {call_s:.0f} call-s in {r.wall_s:.0f} s; "
        f"server's EoS estimate->first frame sent p50 {fmt(percentile(r.server_eos_ms, 50))} "
        f"p99 {fmt(percentile(r.server_eos_ms, 99))} ms; lag p99 by 10 s window "
        f"median {fmt(statistics.median(r.lag_p99_ms) if r.lag_p99_ms else None)} ms",
        f"      after the ramp: {len(r.steady_reply_ms)} replies, EoS p50 {fmt(percentile(r.steady_reply_ms, 50))} "
        f"p99 {fmt(percentile(r.steady_reply_ms, 99))} ms; server stages p50/p99 (ms): final->first token "
        f"{stage(0, 50)}/{stage(0, 99)}, token->first TTS audio {stage(1, 50)}/{stage(1, 99)}, "
        f"TTS audio->first frame sent {stage(2, 50)}/{stage(2, 99)}",
        "      cores busy during the run (every process): "
        + ", ".join(f"core {c} {share:.0%}" for c, share in sorted(r.cores.items()))
        + f"; of which server {r.server_cpu_s / r.wall_s:.0%}, generator + stand-ins {r.gen_cpu_s / r.wall_s:.0%}",
    ]
    if r.writes:
        extra.append(
            "      checkpoint writes (queue + trip, the server's /metrics): "
            + "; ".join(
                f"{op} {n}, mean {mean:.1f} ms, p99 <= {p99:g} ms" for op, (n, mean, p99) in sorted(r.writes.items())
            )
        )
    for c in failed[:3]:
        extra.append(f"      failed {c.sid}: {c.failure}")
    return "\n".join([line, *extra])


# --- processes ----------------------------------------------------------------------------------
def start_server(
    args: argparse.Namespace, port: int, data: str, dg_url: str, el_url: str, log: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "bench.load_server", "--port", str(port), "--data-dir", data,
        "--speech", "cloud", "--deepgram-url", dg_url, "--elevenlabs-url", el_url,
        "--max-calls", str(args.max_calls), "--loop-lag-window-s", "10", "--workers", str(args.workers),
    ]  # fmt: skip
    if args.database_url:
        cmd += ["--database-url", args.database_url]

    def before_exec() -> None:  # in the child: die with the generator, and take the server's core
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if not args.no_pin:
            os.sched_setaffinity(0, server_cores(args))  # the workers inherit it

    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, preexec_fn=before_exec, stdout=out, stderr=subprocess.STDOUT)  # noqa: PLW1509


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=url, trust_env=False) as http, asyncio.timeout(120):
        while proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit("the load server did not start")


async def main_async(args: argparse.Namespace) -> None:
    scenario = load_scenario(SCENARIO)
    lines = [s.text for s in scenario.steps if isinstance(s, Say)]
    vocab = sorted({w for line in lines for w in words_of(line)})
    questions = [utterance(line, vocab) for line in lines[:-1]]
    goodbye = utterance(lines[-1], vocab)
    if args.vendor_timing == "published":
        dg_timing, el_timing = DEEPGRAM_TIMING, ELEVENLABS_TIMING
    else:
        dg_timing, el_timing = DeepgramTiming(), ElevenLabsTiming(ms_per_char=ELEVENLABS_TIMING.ms_per_char)
    own = ENDPOINTING_MS + dg_timing.result_latency_ms + el_timing.first_byte_ms
    cores = ",".join(str(c) for c in sorted(server_cores(args)))
    pinning = "off" if args.no_pin else f"server on core {cores}, generator + stand-ins on {args.gen_core}"
    if args.workers > 1:
        pinning += f"; {args.workers} server workers"
    print(
        f"whole calls: scenario {SCENARIO.name}, {args.seconds:.0f} s calls, pinning {pinning}, "
        f"{'PostgreSQL' if args.database_url else 'SQLite'}, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}"
    )
    print(
        f"stand-ins: Deepgram {dg_timing}, ElevenLabs {el_timing}; their own delay in EoS->audio: "
        f"endpointing {ENDPOINTING_MS} + results {dg_timing.result_latency_ms:.0f} + TTFB "
        f"{el_timing.first_byte_ms:.0f} = {own:.0f} ms"
    )
    print(
        "columns: und/min underruns per agent-minute; EoS caller's end of speech -> first agent frame (ms); svc final "
        "transcript -> first frame sent, server records (ms, includes the TTS stand-in's TTFB); own: svc less "
        "first token -> first TTS audio (ms); CPUms/cs server CPU ms per call-second; RSS MB; "
        "lag p99 worst 10 s window (ms); tick p99 generator tick lateness (ms)"
    )
    logs = Path(tempfile.mkdtemp(prefix="dialgraph-whole-logs-"))
    print(HEADER, flush=True)
    async with (
        DeepgramFake(vocab, timing=dg_timing, record_audio=False) as deepgram,
        ElevenLabsFake(timing=el_timing) as elevenlabs,
    ):
        for n in args.calls:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            with tempfile.TemporaryDirectory(prefix="dialgraph-whole-") as data:
                log = logs / f"server-{n}.log"
                proc = start_server(args, port, data, deepgram.url, elevenlabs.url, log)
                try:
                    await wait_ready(url, proc)
                    ramp = min(30.0, n / 10) if args.ramp is None else args.ramp
                    run_args = argparse.Namespace(**{**vars(args), "ramp": ramp})
                    result = await Run(run_args, n, url, proc.pid, (questions, goodbye)).run()
                    print(report(result), flush=True)
                    text = log.read_text(errors="replace")
                    warnings, errors = text.count("level='warning'"), text.count("level='error'")
                    print(f"      server log {log}: {warnings} warnings, {errors} errors (during the run)", flush=True)
                finally:
                    proc.terminate()
                    await asyncio.to_thread(proc.wait, 30)
            deepgram.connections.clear()
            elevenlabs.sockets.clear()


def server_cores(args: argparse.Namespace) -> set[int]:
    return {int(c) for c in str(args.server_cores).split(",")} if args.server_cores else {args.server_core}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--calls", type=int, nargs="+", default=[100, 150, 200, 250])
    p.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite in a temp dir)")
    p.add_argument("--no-pin", action="store_true", help="leave both processes to the scheduler")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--server-cores", default=None, help="with --workers: the servers' cores, e.g. 0,1")
    p.add_argument("--workers", type=int, default=1, help="server processes on the port (dialgraph serve --workers)")
    p.add_argument("--gen-core", type=int, default=1)
    p.add_argument("--max-calls", type=int, default=0, help="the server's [overload] max_calls (0: no limit)")
    p.add_argument("--seconds", type=float, default=40.0, help="each call's length before it says goodbye")
    p.add_argument("--ramp", type=float, default=None, help="calls start evenly over this (default N/10, <= 30 s)")
    p.add_argument("--to", default="+15550001002", help="the number dialled (its flow answers)")
    p.add_argument("--vendor-timing", choices=["published", "none"], default="published")
    args = p.parse_args()
    lock = LOCK.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        print(
            f"waiting for another whole-call run on this machine ({lock.read().strip()}): cores are shared", flush=True
        )
        fcntl.flock(lock, fcntl.LOCK_EX)
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}, {' '.join(sys.argv[1:])}")
    lock.flush()
    if not args.no_pin:
        os.sched_setaffinity(0, {args.gen_core})
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(main_async(args))


if __name__ == "__main__":
    main()
