"""Voice to voice on the cloud speech path: real callers' speech through the whole call path,
with the turn detector and preemptive replies off and on.

The callers are piper-rendered utterances (``bench/callers.py``: complete sentences; sentences
with a 300-700 ms pause after their middle word; a start trailing off into "um"/"uh", a pause,
the rest), rendered once and cached with whisper's word timings (``--cache-dir``). Each
configuration is a fresh real ``dialgraph serve`` process (``simulator.process.ServerProcess``:
the product's own provider chains, uvicorn, SQLite in a temp dir) configured by environment:

* Deepgram: ``ScriptedDeepgram`` (``simulator/vendors/deepgram_script.py``) hears each
  utterance by script (its words and their timings), with endpointing measured on the audio's
  energy; published timing (``DEEPGRAM_TIMING``: messages 200 ms after their audio, an interim
  per second of speech); the server asks for ``endpointing=300``.
* ElevenLabs: the stand-in with ``ELEVENLABS_TIMING`` (100 ms to first byte, 4x real time).
* The model: the OpenAI-compatible stand-in with ``HOSTED_MINI`` (350 ms to first token,
  90 tokens/s), read by the real langchain-openai client (``DIALGRAPH_MODEL=openai-compatible:
  ...``); every reply is one short sentence.
* ``[turn] detector`` (``DIALGRAPH_TURN``) and ``preemptive_replies``: off/on per configuration.
  Post-call analysis is off (it would call the model).

A few calls at a time (``--concurrency``), each a lean Twilio caller (``simulator.lean``) on one
20 ms tick loop: after the greeting it says its utterances in turn, each once the agent's
previous reply has played and 0.8 s of quiet passed. Per configuration it prints:

* voice to voice p50/p90: the caller's end of speech (the end of their last word) -> the first
  frame of the agent's reply the caller receives, on the caller's clock, for the utterances the
  agent did not cut off (and, apart, for all: after a cut-off, the first reply begun after the
  end of speech; a reply is told from the one before by its marks' generation);
* false cut-offs: utterances during which (before the end of the last word) agent audio
  reached the caller; "caller turns": the turns the server took for them (more than one an
  utterance: it was split at a pause);
* wasted model runs: requests the model stand-in served, less the caller-triggered agent
  turns the server recorded (played or interrupted): runs nobody heard; with preemptive
  replies on these include discarded preemptive runs (the runner's ``wasted``, which the
  server only adds to the call's cost: "server billed" is the runs on the call's cost meter,
  ``usage.llm`` input tokens over the stand-in's 50 a request, wasted ones included).
  "preempted": recorded replies whose run began before the turn was confirmed
  (``data.preempted``);
* where the time goes: the server's own marks per agent turn (``data.timings``: turn taken,
  first model token, first TTS audio, first frame sent), medians of the steps between them;
  what is left of the clean p50 is end of speech -> turn taken (endpointing, the stand-in's
  result latency, the detector). The marks' own origin, the server's estimate of the end of
  speech, is not used: it is the final result's end, which on the stand-in (word-coded or
  scripted) spans the endpointing silence too.

    .venv/bin/python -m bench.voice_to_voice [--quick] [--concurrency 6] [--config N ...] [--show]

Last, the issue's targets against each configuration: p50 <= 550 ms, p90 <= 750 ms, and no
more cut-offs with the detector on than off.

``--quick``: half the utterances, detector and preemption both off, then both on (~1.5 min).
The full run (every utterance, four configurations) takes ~4.5 min on 2 shared cores, plus
~1.5 min the first time to render the callers (piper, whisper) into the cache.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.callers import LEAD_MS, Utterance, load_set
from dialgraph.telephony.audio import audioop
from dialgraph.telephony.simulator.lean import LeanLeg
from dialgraph.telephony.simulator.process import ServerProcess, server_env
from dialgraph.telephony.simulator.protocol import (
    FRAME_BYTES,
    SAMPLE_RATE,
    SILENCE_PAYLOAD,
    AgentAudio,
    AgentClear,
    AgentMark,
    Received,
    TwilioProtocol,
    payload,
)
from dialgraph.telephony.simulator.report import percentile
from dialgraph.telephony.simulator.twiml import ConnectVerb, parse_twiml
from dialgraph.telephony.simulator.vendors import DEEPGRAM_TIMING, ELEVENLABS_TIMING, ElevenLabsFake
from dialgraph.telephony.simulator.vendors.deepgram_script import ScriptedDeepgram, ScriptedUtterance, ScriptedWord
from dialgraph.telephony.simulator.vendors.openai import HOSTED_MINI, FakeOpenAIServer, ScriptedReply
from dialgraph.telephony.simulator.webhooks import TwilioWebhookClient, call_params, new_sid, stream_signature
from dialgraph.telephony.speech.deepgram import DeepgramRecognizer

ROOT = Path(__file__).resolve().parents[1]
AUTH_TOKEN = "v2v-auth-token"
ADMIN_TOKEN = "v2v-admin-token"
NUMBER, FLOW = "+15550001002", "support"
REPLY = "Sure, let me check that."  # every model reply: one short sentence (~1.6 s of speech)
QUIET_S = 0.8  # the caller speaks this long after the agent's reply played
REPLY_TIMEOUT_S = 10.0  # no reply begun this long after the end of speech: none
VOICED_RMS = 100  # the stand-in's and the trimming's voiced/quiet line
TICK_S = 0.02
PROMPT_TOKENS = 50  # the model stand-in's usage chunk: 50 prompt tokens a request


@dataclass(frozen=True)
class Config:
    name: str
    detector: str  # [turn] detector
    preemptive: bool

    def env(self) -> dict[str, str]:
        return {
            "DIALGRAPH_TURN": json.dumps({"detector": self.detector}),
            "DIALGRAPH_PREEMPTIVE_REPLIES": str(self.preemptive).lower(),
        }


CONFIGS = [
    Config("detector off, preemptive off", "off", False),
    Config("detector off, preemptive on", "off", True),
    Config("detector on,  preemptive off", "smart_turn", False),
    Config("detector on,  preemptive on", "smart_turn", True),
]


# --- one utterance as the caller sends it and the stand-in hears it ------------------------------
def _voiced(frame: bytes) -> bool:
    return audioop.rms(audioop.ulaw2lin(frame, 2), 2) >= VOICED_RMS


@dataclass
class Line:
    """One utterance to say: 20 ms payloads; the speech ends ``tail_s`` before the end of
    frame ``last``. Filled in as it is said: ``start``/``eos`` (the caller's clock), the first
    agent audio before the end of speech (``cut_at``), the first reply begun after it."""

    utterance: Utterance
    payloads: tuple[str, ...]
    last: int
    tail_s: float
    script: ScriptedUtterance
    start: float | None = None
    eos: float | None = None
    cut_at: float | None = None
    reply_at: float | None = None

    @property
    def latency_ms(self) -> float | None:
        return None if self.reply_at is None or self.eos is None else (self.reply_at - self.eos) * 1000


def line(u: Utterance) -> Line:
    speech = u.speech
    n = len(speech)
    padded = speech + b"\xff" * (-n % FRAME_BYTES)
    frames = [padded[i : i + FRAME_BYTES] for i in range(0, len(padded), FRAME_BYTES)]
    voiced = [i for i, f in enumerate(frames) if _voiced(f)]
    onset, end = voiced[0] * TICK_S, (voiced[-1] + 1) * TICK_S  # as the stand-in will see them
    shift = LEAD_MS / 1000 + onset  # words are on the utterance's clock (lead silence included)
    words = tuple(
        ScriptedWord(w.text, max(0.0, round(w.start - shift, 3)), max(0.0, round(w.end - shift, 3))) for w in u.words
    )
    last = (n - 1) // FRAME_BYTES
    return Line(u, tuple(payload(f) for f in frames), last, ((last + 1) * FRAME_BYTES - n) / SAMPLE_RATE,
                ScriptedUtterance(words, end - onset))  # fmt: skip


# --- one call ------------------------------------------------------------------------------------
@dataclass
class Caller:
    sid: str
    lines: list[Line]
    leg: LeanLeg | None = None
    phase: str = "greeting"  # greeting | speaking | waiting | done
    at: int = -1  # the line being said or waited on
    pos: int = 0
    opened_at: float = 0.0
    greeted: bool = False
    generation: str = ""  # of the reply playing or last played
    unmarked_at: float | None = None  # the first agent frame since the last mark
    failure: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, event: Received, now: float) -> None:
        """Agent audio while the caller speaks is a cut-off; a reply begins with its first
        frame, known to be a new reply's when its first mark names a new generation
        (``g<n>.``, telephony/call/playback.py)."""
        if isinstance(event, AgentClear):
            self.unmarked_at = None
        elif isinstance(event, AgentAudio):
            self.greeted = True
            self.unmarked_at = self.unmarked_at or now
            if self.phase == "speaking" and self.lines[self.at].eos is None:
                cur = self.lines[self.at]
                cur.cut_at = cur.cut_at or now
        elif isinstance(event, AgentMark):
            generation = event.name.split(".", 1)[0]
            began, self.unmarked_at = self.unmarked_at or now, None
            if generation == self.generation:
                return
            self.generation = generation
            said = self.lines[self.at] if self.at >= 0 else None
            if said is not None and said.eos is not None and began >= said.eos and said.reply_at is None:
                said.reply_at = began

    def tick(self, now: float) -> None:
        leg = self.leg
        assert leg is not None
        b64 = SILENCE_PAYLOAD
        if self.phase == "speaking":
            cur = self.lines[self.at]
            b64 = cur.payloads[self.pos]
            if self.pos == 0:
                cur.start = now - TICK_S
            if self.pos == cur.last:
                cur.eos = now - cur.tail_s
            self.pos += 1
            if self.pos == len(cur.payloads):
                self.phase = "waiting"
        leg.tick(now, b64)
        if self.phase not in ("greeting", "waiting"):
            return
        playback = leg.protocol.playback
        if self.phase == "greeting":
            if not self.greeted:
                if now - self.opened_at > REPLY_TIMEOUT_S:
                    self.fail("no greeting")
                return
        else:
            cur = self.lines[self.at]
            assert cur.eos is not None
            if cur.reply_at is None:
                if now - cur.eos > REPLY_TIMEOUT_S:
                    self.next(now)  # no reply: the caller goes on
                return
        if playback.idle(now) and now - playback.end >= QUIET_S:
            self.next(now)

    def next(self, now: float) -> None:
        self.at += 1
        self.pos = 0
        if self.at == len(self.lines):
            self.phase = "done"
            assert self.leg is not None
            self.leg.hang_up()
            self.done.set()
        else:
            self.phase = "speaking"

    def fail(self, why: str) -> None:
        self.failure = why
        self.phase = "done"
        if self.leg is not None:
            self.leg.hang_up()
        self.done.set()


# --- one configuration --------------------------------------------------------------------------
@dataclass
class Result:
    config: Config
    callers: list[Caller]
    events: list[dict[str, Any]]
    model_requests: int
    billed_runs: float  # model runs on the server's cost meter (``usage.llm``), wasted ones included
    seconds: float

    @property
    def lines(self) -> list[Line]:
        return [ln for c in self.callers for ln in c.lines]


async def ticker(callers: list[Caller], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    due = loop.time()
    while not stop.is_set():
        now = loop.time()
        for c in callers:
            if c.leg is not None and c.phase != "done":
                c.tick(now)
        due += TICK_S
        if loop.time() - due > 0.2:
            due = loop.time()
        await asyncio.sleep(max(0.0, due - loop.time()))


async def place(caller: Caller, url: str, twilio: TwilioWebhookClient, deepgram: ScriptedDeepgram, i: int) -> None:
    """Dial, open the media stream, and wait until the Deepgram stand-in took this call's script."""
    params = call_params(caller.sid, from_number=f"+1555{8000000 + i:07d}", to_number=NUMBER)
    response = await twilio.post("/twilio/voice", {**params, "CallStatus": "ringing"})
    connect = next((v for v in parse_twiml(response.content, base_url=url) if isinstance(v, ConnectVerb)), None)
    if connect is None or connect.stream is None:
        caller.fail("refused")
        return
    taken = deepgram.expect([ln.script for ln in caller.lines])
    target = urlsplit(connect.stream.url)
    leg = LeanLeg(TwilioProtocol(stream_sid=new_sid("MZ"), call_sid=caller.sid), caller.on_event)
    await leg.open(
        target.hostname or "127.0.0.1",
        target.port or 80,
        path=target.path,
        signature=stream_signature(AUTH_TOKEN, url),
        parameters=connect.stream.parameters,
    )
    caller.opened_at = asyncio.get_running_loop().time()
    caller.leg = leg
    try:
        async with asyncio.timeout(15):
            await taken
    except TimeoutError:
        taken.cancel()
        caller.fail("the server opened no Deepgram socket")


async def run_config(
    config: Config, lines: list[Utterance], args: argparse.Namespace, vendors: tuple[Any, Any, Any], logs: Path
) -> Result:
    deepgram, elevenlabs, model = vendors
    with tempfile.TemporaryDirectory(prefix="dialgraph-v2v-") as data:
        env = server_env(
            os.environ,
            DIALGRAPH_DATA_DIR=data,
            DIALGRAPH_LOG_LEVEL="WARNING",
            DIALGRAPH_MODEL=f"openai-compatible:{model.base_url}/gpt-4o-mini",
            OPENAI_API_KEY="sk-v2v",
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            DIALGRAPH_ADMIN_TOKEN=ADMIN_TOKEN,
            DIALGRAPH_NUMBERS=json.dumps({NUMBER: FLOW}),
            DIALGRAPH_ANALYSIS=json.dumps({"enabled": False}),
            **deepgram.env(),
            **elevenlabs.env(),
            **config.env(),
        )
        server = ServerProcess(config.name.replace(" ", "").replace(",", "-"), env, logs)
        server.env["DIALGRAPH_PUBLIC_URL"] = server.url
        await server.start()
        try:
            return await _calls(config, server.url, lines, args, deepgram, model)
        finally:
            await server.aclose()


async def _calls(
    config: Config,
    url: str,
    utterances: list[Utterance],
    args: argparse.Namespace,
    deepgram: ScriptedDeepgram,
    model: FakeOpenAIServer,
) -> Result:
    n = args.concurrency
    callers = [Caller(new_sid("CA"), [line(u) for u in utterances[i::n]]) for i in range(n)]
    loop = asyncio.get_running_loop()
    started, requests0 = loop.time(), len(model.requests)
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=30.0, trust_env=False) as http:
        twilio = TwilioWebhookClient(http, public_url=url, auth_token=AUTH_TOKEN)
        tick = asyncio.create_task(ticker(callers, stop))
        try:
            for i, caller in enumerate(callers):  # one at a time: each takes the next script
                await place(caller, url, twilio, deepgram, i)
            async with asyncio.timeout(600):
                await asyncio.gather(*(c.done.wait() for c in callers))
            for c in callers:
                if c.leg is not None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(10):
                            await c.leg.closed
        finally:
            stop.set()
            await tick
        seconds = loop.time() - started
        await asyncio.sleep(1.5)  # the server's batched event writer (about once a second)
        events: list[dict[str, Any]] = []
        prompt_tokens = 0
        for c in callers:
            params = call_params(c.sid, to_number=NUMBER)
            await twilio.post("/twilio/status", {**params, "CallStatus": "completed", "CallDuration": "60"})
            r = await http.get(f"/api/calls/{c.sid}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            if r.status_code == 200:
                body = r.json()
                events += body.get("events", [])
                llm = (body.get("usage") or {}).get("llm") or {}
                prompt_tokens += sum(int(v.get("input", 0)) for v in llm.values())
    billed = prompt_tokens / PROMPT_TOKENS
    return Result(config, callers, events, len(model.requests) - requests0, billed, seconds)


# --- report -----------------------------------------------------------------------------------------
def _f(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def targets(results: list[Result]) -> None:
    """The issue's targets, per configuration."""
    off = [sum(ln.cut_at is not None for ln in r.lines) for r in results if r.config.detector == "off"]
    for r in results:
        clean = [ln.latency_ms for ln in r.lines if ln.cut_at is None and ln.latency_ms is not None]
        p50, p90 = percentile(clean, 50), percentile(clean, 90)
        cuts = sum(ln.cut_at is not None for ln in r.lines)
        verdict = [
            f"p50 {_f(p50)} <= 550: {'yes' if p50 is not None and p50 <= 550 else 'NO'}",
            f"p90 {_f(p90)} <= 750: {'yes' if p90 is not None and p90 <= 750 else 'NO'}",
        ]
        if r.config.detector != "off" and off:
            verdict.append(f"cut-offs {cuts} <= off's {min(off)}: {'yes' if cuts <= min(off) else 'NO'}")
        print(f"  {r.config.name:30s} " + "; ".join(verdict))


def report(r: Result, show: bool) -> None:
    lines = r.lines
    clean = [ln.latency_ms for ln in lines if ln.cut_at is None and ln.latency_ms is not None]
    every = [ln.latency_ms for ln in lines if ln.latency_ms is not None]
    cuts = [ln for ln in lines if ln.cut_at is not None]
    turns = [e for e in r.events if e.get("kind") == "turn"]
    agent = [e for e in turns if e.get("role") == "agent" and (e.get("data") or {}).get("trigger") == "caller"]
    caller_turns = sum(1 for e in turns if e.get("role") == "caller")
    preempted = sum(1 for e in agent if (e.get("data") or {}).get("preempted"))
    failures = [c.failure for c in r.callers if c.failure]
    per = []
    for category in ("complete", "paused", "um"):
        rows = [ln for ln in lines if ln.utterance.category == category]
        lat = [ln.latency_ms for ln in rows if ln.cut_at is None and ln.latency_ms is not None]
        cut = sum(ln.cut_at is not None for ln in rows)
        per.append(f"{category} {_f(percentile(lat, 50))}/{_f(percentile(lat, 90))} cut {cut}/{len(rows)}")
    print(
        f"{r.config.name:30s} v2v p50 {_f(percentile(clean, 50)):>4} p90 {_f(percentile(clean, 90)):>4} ms "
        f"({len(clean)} clean) | all p50 {_f(percentile(every, 50))} p90 {_f(percentile(every, 90))} | "
        f"cut-offs {len(cuts)}/{len(lines)} | no reply {sum(ln.latency_ms is None for ln in lines)} | "
        f"caller turns {caller_turns} for {len(lines)} utterances | model runs {r.model_requests} "
        f"(server billed {r.billed_runs:.0f}), replies recorded {len(agent)}, wasted "
        f"{r.model_requests - len(agent)}, preempted {preempted} | "
        f"{r.seconds:.0f} s" + (f" | FAILED {failures}" if failures else "")
    )
    print("      " + "  ".join(per))
    marks = ("asr_final_ms", "first_token_ms", "first_tts_audio_ms", "first_frame_ms")
    names = ("first token", "first TTS audio", "first frame sent")
    timings = [t for e in agent if set(marks) <= set(t := (e.get("data") or {}).get("timings") or {})]
    stages = [statistics.median([t[b] - t[a] for t in timings]) for a, b in zip(marks, marks[1:], strict=False)]
    served = sum(stages) if timings else None
    before = None if served is None or not clean else statistics.median(clean) - served
    steps = ", ".join(f"-> {name} {v:.0f}" for name, v in zip(names, stages, strict=True)) if timings else "-"
    print(
        f"      where the time goes (medians, ms; the server's marks per reply): turn taken {steps}; "
        f"so end of speech -> turn taken ~{_f(before)} (clean p50 less those)"
    )
    if show:
        for ln in lines:
            early = f" CUT {(ln.cut_at - ln.eos) * 1000:+.0f}" if ln.cut_at is not None and ln.eos is not None else ""
            print(f"        {ln.utterance.category:8s} {_f(ln.latency_ms):>5} ms{early}  {ln.utterance.text}")


async def main_async(args: argparse.Namespace) -> None:
    utterances = load_set(Path(args.cache_dir))
    if args.quick:
        utterances = utterances[::2]
    configs = [CONFIGS[i] for i in args.config] if args.config else [CONFIGS[0], CONFIGS[3]] if args.quick else CONFIGS
    print(
        f"{len(utterances)} piper utterances per configuration "
        f"({', '.join(f'{c} {sum(u.category == c for u in utterances)}' for c in ('complete', 'paused', 'um'))}), "
        f"{args.concurrency} calls at a time, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}"
    )
    print(
        f"stand-ins: Deepgram {DEEPGRAM_TIMING} (server asks endpointing=300 ms), ElevenLabs "
        f"{ELEVENLABS_TIMING}, model {HOSTED_MINI}; floor from the profiles alone: 300 + 200 + 350 + 100 = 950 ms"
    )
    wired = "turn_detector" in inspect.signature(DeepgramRecognizer.__init__).parameters
    print(f"turn detector on the Deepgram path in this tree: {'yes' if wired else 'no (the setting is ignored there)'}")
    logs = Path(tempfile.mkdtemp(prefix="dialgraph-v2v-logs-"))
    async with (
        ScriptedDeepgram(timing=DEEPGRAM_TIMING, record_audio=False) as deepgram,
        ElevenLabsFake(timing=ELEVENLABS_TIMING) as elevenlabs,
        FakeOpenAIServer(lambda body: ScriptedReply(text=REPLY), timing=HOSTED_MINI) as model,
    ):
        results = []
        for config in configs:
            result = await run_config(config, utterances, args, (deepgram, elevenlabs, model), logs)
            report(result, args.show)
            results.append(result)
            deepgram.connections.clear()
            elevenlabs.sockets.clear()
    print("targets (issue 17; clean voice to voice, caller's clock):")
    targets(results)
    print(f"server logs: {logs}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="half the utterances, off/off and on/on only")
    p.add_argument("--concurrency", type=int, default=6, help="calls at a time (the utterances shared out)")
    p.add_argument("--cache-dir", default=str(ROOT / "build" / "bench-cache"), help="rendered callers")
    p.add_argument("--show", action="store_true", help="every utterance's latency and cut-off")
    p.add_argument("--config", type=int, nargs="+", choices=range(len(CONFIGS)), help="only these (0-3, as printed)")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
