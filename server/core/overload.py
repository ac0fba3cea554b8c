"""Graceful overload: a process past its configured load refuses NEW calls, not the ones it holds.

A core carries a certain number of whole calls; past it every call on the process degrades
at once (the event loop falls behind and every reply waits). So each process knows its own
load and, past ``[overload]``'s limit, stops taking new calls:

- **calls in progress here**: the media sessions alive in this app (``app.state.active_calls``,
  kept by ``server/routes/media.py``) plus the calls ``/twilio/voice`` admitted in the last
  ``admission_hold_s`` whose stream has not opened yet (a burst of calls is counted as it is
  admitted, not a second later when the streams arrive);
- **event-loop lag**: one task sleeps ``LAG_EVERY_S`` and records how late it woke, in a window
  of the last ``loop_lag_window_s``; a stall longer than the interval also counts the ticks it
  swallowed (the coordinated-omission correction: a 2 s stall is 20 late ticks, not one), so
  the window's p99 is the lag a 20 ms frame met. No per-frame work.

Past ``max_calls`` or ``max_loop_lag_ms`` (either; 0 turns a rule off), ``/twilio/voice``
answers a new inbound call with a short "all lines are busy" ``<Say>`` and ``<Hangup/>`` in
the flow's language (or ``<Reject reason="busy">``), recorded like the limits' refusals
(outcome ``rate_limited``, rule ``overload.max_calls`` / ``overload.max_loop_lag_ms``), and
``/healthz`` answers 503 ``ready: false`` with the reason, so a load balancer sends new calls
to another instance. Calls in progress are untouched: resumed streams (a reconnect, a failed
transfer) never pass ``/twilio/voice``, and outbound calls we placed are not refused when
the callee answers. Instead, past the limit this process places no outbound call: the
campaign dispatcher claims no contacts (another instance takes them) and ``POST /api/calls``
answers 409 ``{"reason": "overloaded", "rule": ...}``; a contact already claimed goes back to
the queue for ``OVERLOAD_RETRY_S``. A placed call counts from the REST request until its
stream opens (its ring time at most).

One probe: the lag monitor's samples also feed ``/metrics``' lag histogram, and
``dialgraph_ready`` (1/0) mirrors ``/healthz``.

Per process: under ``dialgraph serve --workers N`` each worker counts and refuses on its own
(its ``/healthz`` too, so a balancer's probe sees whichever worker took it), and a call's
``/twilio/voice`` and its media socket may land on different workers: the limit can then be
overshot by the imbalance. Behind a balancer, one process per port (or container) reports
exactly.

**Off by default** (both 0): the right number is a property of the host (cores, providers,
model, database), and a wrong default either refuses genuine callers on a big machine or
protects nothing on a small one; a lag limit on by default would refuse calls on a busy
laptop or CI runner whenever a model loads. Set ``max_calls`` from the whole-call benchmark
(the largest concurrency whose p99 met the target, per process; ``--workers N`` gives each
worker its own), and ``max_loop_lag_ms`` as a backstop for what the count does not see
(long calls of a heavy flow, a noisy neighbour): e.g. 100–200 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from dialgraph.server.core.language import base, twilio_say_language

log = structlog.get_logger(__name__)

LAG_EVERY_S = 0.1  # the lag probe's sleep: 10 wakeups a second, whatever the number of calls
MAX_CALLS_RULE = "overload.max_calls"
LOOP_LAG_RULE = "overload.max_loop_lag_ms"
OVERLOAD_RETRY_S = 30  # an outbound call refused for load is retried this much later

BUSY_MESSAGES = {
    "en": "Sorry, all our lines are busy right now. Please call again later. Goodbye.",
    "hi": "क्षमा करें, इस समय हमारी सभी लाइनें व्यस्त हैं। कृपया थोड़ी देर बाद फिर से कॉल करें। धन्यवाद।",
}


class OverloadSettings(BaseModel):
    """``[overload]``: when this process stops taking new calls (per process; 0: no limit)."""

    model_config = ConfigDict(extra="forbid")

    max_calls: int = Field(
        default=0,
        ge=0,
        description="calls in progress on this process (media sessions + calls admitted whose stream is not open yet)",
    )
    max_loop_lag_ms: float = Field(
        default=0, ge=0, description="event-loop lag, p99 over loop_lag_window_s, past which new calls are refused"
    )
    loop_lag_window_s: float = Field(default=10.0, ge=1.0, le=300.0, description="the lag window (seconds)")
    admission_hold_s: float = Field(
        default=10.0, gt=0, le=120.0, description="an admitted call counts this long before its stream opens"
    )
    refuse_with: Literal["say", "reject"] = Field(default="say", description="<Say> then <Hangup/>, or <Reject>")
    message: str | None = Field(
        default=None, description="the <Say>; default: 'all lines are busy' in the flow's language"
    )

    def busy_message(self, language: str = "en") -> tuple[str, str]:
        """The refusal's words and Twilio's ``<Say language>`` for a flow in ``language``."""
        text = self.message or BUSY_MESSAGES.get(base(language), BUSY_MESSAGES["en"])
        return text, twilio_say_language(language)


class LoopLagMonitor:
    """How late this event loop runs: a task sleeps ``every_s`` and records the overshoot;
    the last ``window_s`` of samples give the p99 and the max (milliseconds)."""

    def __init__(self, *, every_s: float = LAG_EVERY_S, window_s: float = 10.0) -> None:
        self.every_s = every_s
        self._samples: deque[float] = deque(maxlen=max(1, round(window_s / every_s)))
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[float], None]] = []

    def listen(self, listener: Callable[[float], None]) -> None:
        """Also hand every wakeup's lag (seconds) to ``listener`` (the metrics' histogram)."""
        self._listeners.append(listener)

    def record(self, lag_s: float) -> None:
        """One wakeup ``lag_s`` late; a stall longer than the interval also records the ticks
        it swallowed (each ``every_s`` less late), so a long stall weighs what it lasted."""
        samples, lag = self._samples, max(0.0, lag_s)
        samples.append(lag)
        for k in range(1, (samples.maxlen or 1) + 1):
            missed = lag - k * self.every_s
            if missed <= 1e-9:
                break
            samples.append(missed)

    @property
    def samples(self) -> int:
        """How many samples the window holds (a stall adds the ticks it swallowed)."""
        return len(self._samples)

    def p99_ms(self) -> float:
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] * 1000

    def max_ms(self) -> float:
        return max(self._samples, default=0.0) * 1000

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="overload-loop-lag")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.every_s)
            lag = loop.time() - start - self.every_s
            self.record(lag)
            for listener in self._listeners:
                try:
                    listener(lag)
                except Exception:  # a listener's bug must not stop the probe readiness depends on
                    log.exception("loop lag listener failed")


@dataclass(frozen=True, slots=True)
class OverloadState:
    """This process's load now; ``reason`` is the rule that makes it not ready (None: ready)."""

    calls: int
    max_calls: int
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    max_loop_lag_ms: float
    reason: str | None

    @property
    def ready(self) -> bool:
        return self.reason is None

    def report(self) -> dict[str, object]:
        """``/healthz``'s body."""
        return {
            "status": "ok" if self.ready else "overloaded",
            "ready": self.ready,
            **({} if self.ready else {"reason": self.reason}),
            "calls": self.calls,
            "max_calls": self.max_calls,
            "loop_lag_p99_ms": round(self.loop_lag_p99_ms, 1),
            "loop_lag_max_ms": round(self.loop_lag_max_ms, 1),
            "max_loop_lag_ms": self.max_loop_lag_ms,
        }


class Overload:
    """One app's admission by load. ``live`` is the app's media sessions by CallSid (read,
    never changed here); calls admitted by ``admit`` count until their stream is among them,
    or for ``admission_hold_s`` at most."""

    def __init__(
        self,
        settings: OverloadSettings,
        live: Mapping[str, object],
        *,
        lag: LoopLagMonitor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.lag = lag or LoopLagMonitor(window_s=settings.loop_lag_window_s)
        self._live = live
        self._admitted: dict[str, float] = {}  # CallSid -> until when it counts (clock), stream not open yet
        self._clock = clock

    def start(self) -> None:
        """Start the lag probe (in the running loop)."""
        self.lag.start()

    async def aclose(self) -> None:
        await self.lag.aclose()

    def calls(self) -> int:
        """Calls in progress here: live sessions, plus admitted calls whose stream is due."""
        if self._admitted:
            now = self._clock()
            for sid, until in list(self._admitted.items()):
                if until < now or sid in self._live:
                    del self._admitted[sid]
        return len(self._live) + len(self._admitted)

    def state(self) -> OverloadState:
        s = self.settings
        calls, p99 = self.calls(), self.lag.p99_ms()
        reason = None
        if s.max_calls and calls >= s.max_calls:
            reason = MAX_CALLS_RULE
        elif s.max_loop_lag_ms and p99 > s.max_loop_lag_ms:
            reason = LOOP_LAG_RULE
        return OverloadState(calls, s.max_calls, p99, self.lag.max_ms(), s.max_loop_lag_ms, reason)

    def admit(self, call_sid: str) -> str | None:
        """Whether a new call may start here: None (it now counts), or the rule that refuses
        it. A call already counted (Twilio retrying the webhook) is admitted again."""
        if call_sid in self._live or call_sid in self._admitted:
            return None
        reason = self.state().reason
        if reason is None:
            self._admitted[call_sid] = self._clock() + self.settings.admission_hold_s
        return reason

    def hold(self, call_sid: str, seconds: float) -> None:
        """Count a call we placed (outbound) until its stream opens, ``seconds`` at most (it
        rings first): a burst of placed calls counts before the callees answer."""
        self._admitted[call_sid] = max(self._admitted.get(call_sid, 0.0), self._clock() + seconds)
