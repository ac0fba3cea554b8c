"""What happens in this process's calls, as it happens: a small publish/subscribe hub.

The call sessions of this process publish to ``hub`` (one per process, like the batched
writers): the caller's words as the recogniser hears them (``CallerSpeech``, interim and
final hypotheses, which are never stored), every call event the session records (``Recorded``,
the same ``CallEvent`` the ``CallEventWriter`` stores about a second later), and the session's
start and end (``SessionStarted`` / ``SessionEnded``).

Two kinds of readers:

* **Subscriptions** (``hub.subscribe(call_sid)``): the live event stream of the call API
  (``GET /api/calls/{sid}/events``) reads one call's interim text from it. Each has a
  bounded queue; when a reader is slow the OLDEST item is dropped (``dropped`` counts them),
  so a stuck HTTP client never holds memory or the publisher.
* **Listeners** (``hub.add_listener(fn)``): called synchronously in ``publish``, for
  counters (``/metrics``). **Signal listeners** (``hub.add_signal_listener(fn)``) get the
  process facts passed to ``hub.notify`` (a provider failed, a call refused by a limit, a
  checkpoint write's time, cost recorded, a session's timeline for tracing): never stored,
  never sent to subscribers. A listener must be cheap and must not raise; one that raises is
  logged once and removed.

``publish`` never waits, never does I/O, and costs one dict lookup when nobody listens,
so the session may call it from the recognition loop. Only this process's calls pass here:
another instance's calls reach the API through SQL (``call_events``), not through the hub.

Personal data: what passes here is raw (not redacted). Whoever sends it out of the
process passes it through the ``Redactor`` first (the call API does).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from dialgraph.server.core.models import CallEvent

log = structlog.get_logger(__name__)

DEFAULT_QUEUE = 256  # items a subscriber may be behind before the oldest are dropped


@dataclass(frozen=True, slots=True)
class CallerSpeech:
    """A recogniser hypothesis of the caller's words (``final``: stable; else interim)."""

    call_sid: str
    text: str
    final: bool
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Recorded:
    """A call event the session recorded (stored by the ``CallEventWriter`` shortly after)."""

    call_sid: str
    event: CallEvent
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """A media session of the call began on this process (``resumed``: a reconnected or
    returning stream, not a new call)."""

    call_sid: str
    flow: str
    direction: str
    resumed: bool
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """A media session of the call ended on this process (``reason``: the session's end reason)."""

    call_sid: str
    flow: str
    direction: str
    reason: str
    barge_ins: int
    preempted: int = 0  # replies started at a pause whose turn was confirmed (they went out)
    preempts_discarded: int = 0  # ... whose turn had other words (dropped unheard; tokens spent)
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class TurnSpan:
    """One agent reply of a session, in wall-clock seconds (``time.time()``), for tracing:
    the caller's end of speech (``origin``; the trigger when none), the turn taken (ASR
    final), the graph's first text, the synthesiser's first audio, the first frame sent and
    the reply's end. A stage that did not happen is None."""

    generation: int
    trigger: str
    origin: float
    asr_final: float
    first_token: float | None
    first_tts_audio: float | None
    first_frame: float | None
    done: float | None
    interrupted: bool


LiveEvent = CallerSpeech | Recorded | SessionStarted | SessionEnded


# --- signals: process facts for counters, handed to listeners only (never to subscribers) ---
@dataclass(frozen=True, slots=True)
class ProviderFailed:
    """A speech provider of a fallback chain failed (``kind``: asr | tts); ``fell_back``: the
    chain moved on to the next provider (False: it was the last one)."""

    kind: str
    provider: str
    fell_back: bool
    call_sid: str = ""


@dataclass(frozen=True, slots=True)
class RateLimited:
    """A call refused by a limit (``rule``: the limit's key) on this process."""

    flow: str
    rule: str
    call_sid: str = ""


@dataclass(frozen=True, slots=True)
class CheckpointWrite:
    """A checkpoint saver's write (``op``: put | put_writes) took ``seconds``."""

    op: str
    seconds: float
    call_sid: str = ""


@dataclass(frozen=True, slots=True)
class CostRecorded:
    """Cost added to a call by a usage record, by component (telephony, asr, llm, tts; the
    increase since the call's previous record, never negative), in the price table's currency."""

    flow: str
    added: tuple[tuple[str, float], ...]
    currency: str
    call_sid: str = ""


@dataclass(frozen=True, slots=True)
class SessionTraced:
    """A session's whole timeline when it ended (wall clock), for tracing."""

    call_sid: str
    flow: str
    direction: str
    reason: str
    started: float
    ended: float
    barge_ins: int
    turns: tuple[TurnSpan, ...]


Signal = ProviderFailed | RateLimited | CheckpointWrite | CostRecorded | SessionTraced
Listener = Callable[[LiveEvent], None]
SignalListener = Callable[[Signal], None]


class Subscription:
    """One reader of one call's (or every call's) live events; bounded, drop-oldest."""

    def __init__(self, maxlen: int) -> None:
        self._items: deque[LiveEvent] = deque(maxlen=maxlen)
        self._ready = asyncio.Event()
        self.dropped = 0

    def _put(self, item: LiveEvent) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1  # the deque drops the oldest itself
        self._items.append(item)
        self._ready.set()

    def drain(self) -> list[LiveEvent]:
        """Everything waiting now (possibly nothing), oldest first."""
        items = list(self._items)
        self._items.clear()
        self._ready.clear()
        return items

    async def wait(self, within_s: float) -> list[LiveEvent]:
        """What arrives within ``within_s`` seconds (at once if something waits already)."""
        if not self._items:
            try:
                async with asyncio.timeout(within_s):
                    await self._ready.wait()
            except TimeoutError:
                return []
        return self.drain()


class LiveHub:
    """Per-process fan-out of live call events; see the module docstring."""

    def __init__(self) -> None:
        self._subs: dict[str | None, set[Subscription]] = {}
        self._listeners: list[Listener] = []
        self._signal_listeners: list[SignalListener] = []
        self.tracers = 0  # CallTracers listening (sessions skip building timelines without one)

    def publish(self, item: LiveEvent) -> None:
        """Hand ``item`` to its call's subscribers, every-call subscribers and listeners.
        Never waits, never raises."""
        subs = self._subs
        if subs:
            for key in (item.call_sid, None):
                for sub in subs.get(key, ()):
                    sub._put(item)
        for listener in self._listeners:
            try:
                listener(item)
            except Exception:
                log.exception("live listener failed: removed")
                self.remove_listener(listener)

    def notify(self, item: Signal) -> None:
        """Hand a process signal to the signal listeners (subscribers never see it); costs
        one loop over an empty list when nobody listens. Never waits, never raises."""
        for listener in self._signal_listeners:
            try:
                listener(item)
            except Exception:
                log.exception("signal listener failed: removed")
                self.remove_signal_listener(listener)

    def caller_speech(self, call_sid: str, text: str, *, final: bool) -> None:
        """The session's hook for a recogniser hypothesis (cheap when nobody listens)."""
        if text and (self._subs or self._listeners):
            self.publish(CallerSpeech(call_sid, text, final))

    def tee(self, call_sid: str, record: Callable[[CallEvent], None]) -> Callable[[CallEvent], None]:
        """``record``, also publishing each recorded event as ``Recorded``."""
        publish = self.publish

        def recorded(event: CallEvent) -> None:
            record(event)
            publish(Recorded(call_sid, event))

        return recorded

    @contextmanager
    def subscribe(self, call_sid: str | None, *, maxlen: int = DEFAULT_QUEUE) -> Iterator[Subscription]:
        """Subscribe to ``call_sid``'s events (None: every call's) for the ``with`` block."""
        sub = Subscription(maxlen)
        self._subs.setdefault(call_sid, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(call_sid)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[call_sid]

    def add_listener(self, listener: Listener) -> None:
        if listener not in self._listeners:
            self._listeners = [*self._listeners, listener]  # copy: publish may be iterating

    def remove_listener(self, listener: Listener) -> None:
        self._listeners = [fn for fn in self._listeners if fn != listener]  # bound methods: equal, not identical

    def add_signal_listener(self, listener: SignalListener) -> None:
        if listener not in self._signal_listeners:
            self._signal_listeners = [*self._signal_listeners, listener]

    def remove_signal_listener(self, listener: SignalListener) -> None:
        self._signal_listeners = [fn for fn in self._signal_listeners if fn != listener]

    @property
    def traced(self) -> bool:
        """A tracer listens (``server/core/tracing.py``): sessions build their timeline."""
        return self.tracers > 0

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())

    @property
    def listeners(self) -> int:
        return len(self._listeners)


hub = LiveHub()  # the process's one hub (sessions publish, the call API and metrics read)
