"""Load mode: many concurrent simulated calls with cheap callers, for the benchmarks.

Caller audio is rendered once and shared by every call; the agent's audio is neither
recorded nor transcribed. Each call still plays Twilio exactly (signed webhooks, 20 ms
frames at real-time pace, marks, clears, ``<Dial>``), so what the server sees is real load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dialgraph.telephony.simulator.cli import render_caller_audio, simulate
from dialgraph.telephony.simulator.report import SimulationResult, percentile
from dialgraph.telephony.simulator.scenario import Scenario, load_scenario
from dialgraph.telephony.speech.base import SpeechSynthesizer


@dataclass(frozen=True, slots=True)
class CallStats:
    call_sid: str
    ok: bool
    reply_ms: tuple[float, ...]
    server_ms: tuple[float, ...]
    gap_p99_ms: float | None
    underruns: int
    violations: int
    failures: tuple[str, ...]


@dataclass
class LoadResult:
    n_calls: int
    wall_s: float
    calls: list[CallStats] = field(default_factory=list)

    def _all(self, attr: str) -> list[float]:
        return [v for c in self.calls for v in getattr(c, attr)]

    @property
    def reply_p50_ms(self) -> float | None:
        return percentile(self._all("reply_ms"), 50)

    @property
    def reply_p99_ms(self) -> float | None:
        return percentile(self._all("reply_ms"), 99)

    @property
    def server_p50_ms(self) -> float | None:
        return percentile(self._all("server_ms"), 50)

    @property
    def server_p99_ms(self) -> float | None:
        return percentile(self._all("server_ms"), 99)

    @property
    def gap_p99_ms(self) -> float | None:
        return max((c.gap_p99_ms for c in self.calls if c.gap_p99_ms is not None), default=None)

    @property
    def underruns(self) -> int:
        return sum(c.underruns for c in self.calls)

    @property
    def violations(self) -> int:
        return sum(c.violations for c in self.calls)

    @property
    def failed(self) -> list[CallStats]:
        return [c for c in self.calls if not c.ok]


def _stats(result: SimulationResult) -> CallStats:
    return CallStats(
        call_sid=result.call_sid,
        ok=result.ok,
        reply_ms=tuple(result.reply_latencies_ms()),
        server_ms=tuple(t.server_ms for t in result.turns if t.server_ms is not None),
        gap_p99_ms=result.agent_gap_p99_ms,
        underruns=result.underruns,
        violations=result.protocol_violations,
        failures=tuple(result.failures) + tuple(c.label for c in result.checks if not c.ok),
    )


async def load(
    n_calls: int,
    scenario: Scenario | str | Path,
    *,
    url: str,
    auth_token: str = "dev-auth-token",
    admin_token: str | None = None,
    synthesizer: SpeechSynthesizer | None = None,
    caller_audio: Mapping[str, bytes] | None = None,
    ramp_s: float = 5.0,
    max_duration_s: float = 300.0,
) -> LoadResult:
    """``n_calls`` concurrent calls of ``scenario``, started evenly over ``ramp_s``.

    Each call dials from its own number (no callback linking between them). With
    ``admin_token`` each call's server-side latencies are fetched after it ends.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if caller_audio is None:
        if synthesizer is None:
            from contextlib import AsyncExitStack

            from dialgraph.telephony.simulator.cli import offline_speech

            async with AsyncExitStack() as stack:
                _, tts = await offline_speech(stack, asr=False, tts=True)
                caller_audio = await render_caller_audio(scenario, tts)
        else:
            caller_audio = await render_caller_audio(scenario, synthesizer)
    audio = dict(caller_audio)

    async def one(i: int) -> CallStats:
        await asyncio.sleep(ramp_s * i / max(1, n_calls))
        result = await simulate(
            dataclasses.replace(scenario, from_number=f"+1555{7000000 + i:07d}"),
            url=url,
            auth_token=auth_token,
            admin_token=admin_token,
            transcribe=False,
            caller_audio=audio,
            record=False,
            check=False,
            poll_s=0.1,
            max_duration_s=max_duration_s,
            http_client=client,
        )
        return _stats(result)

    started = time.monotonic()
    # One HTTP client for every call: building one loads the CA store (~40 ms of CPU each).
    limits = httpx.Limits(max_connections=max(10, n_calls), max_keepalive_connections=max(10, n_calls))
    async with httpx.AsyncClient(timeout=30.0, trust_env=False, limits=limits) as client:
        calls = await asyncio.gather(*(one(i) for i in range(n_calls)))
    return LoadResult(n_calls=n_calls, wall_s=time.monotonic() - started, calls=list(calls))
