"""Which provider of a fallback chain to try first: a failed one is remembered, and probed.

A chain (``FallbackRecognizer``, ``FallbackSynthesizer``) asks ``order()`` for every new
stream or reply and reports a provider that let it down with ``failed()``. A failed
provider goes to the back of the order for ``cooldown_s`` (by the injected ``clock``), so
the next caller does not wait out its timeout again. It is never dropped: when every
provider is down each is still tried, in chain order, because a late voice beats dead air.

While any provider is marked, one background task owned by the chain probes them in turn
every ``probe_interval_s``, each probe bounded by ``probe_timeout_s``. A probe that passes
puts the provider back in its place (unless it failed again meanwhile); one that fails
renews its cool-down. ``aclose`` cancels the probe and waits for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

from dialgraph.telephony.speech.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

P = TypeVar("P")


class ProviderHealth(Generic[P]):
    """The failure memory and the probe of one chain of ``providers`` (best first).
    ``probe(provider)`` must raise when the provider does not work."""

    def __init__(
        self,
        providers: Sequence[P],
        *,
        probe: Callable[[P], Awaitable[None]],
        cooldown_s: float = 60.0,
        probe_interval_s: float = 10.0,
        probe_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not providers:
            raise ValueError("a fallback chain needs at least one provider")
        self.providers = tuple(providers)
        self.cooldown_s = cooldown_s
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self._probe = probe
        self._clock = clock
        self._failed_at: dict[int, float] = {}  # provider index -> last failure (clock time)
        self._probe_task: asyncio.Task[None] | None = None
        self._closed = False

    def order(self) -> list[P]:
        """The providers to try, in turn: those not cooling down first, each part in chain order."""
        now = self._clock()
        cooling = {i for i, at in self._failed_at.items() if now < at + self.cooldown_s}
        if not cooling:
            return list(self.providers)
        ok = [p for i, p in enumerate(self.providers) if i not in cooling]
        return ok + [p for i, p in enumerate(self.providers) if i in cooling]

    def failed(self, provider: P) -> None:
        """``provider`` let a caller down: remember it, and probe it until it answers."""
        index = next(i for i, p in enumerate(self.providers) if p is provider)
        self._failed_at[index] = self._clock()
        if not self._closed and (self._probe_task is None or self._probe_task.done()):
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        while self._failed_at:
            await asyncio.sleep(self.probe_interval_s)
            for index in sorted(self._failed_at):
                provider = self.providers[index]
                started = self._clock()
                try:
                    async with asyncio.timeout(self.probe_timeout_s):
                        await self._probe(provider)
                except Exception as exc:
                    self._failed_at[index] = self._clock()
                    log.info("speech provider still failing", provider=type(provider).__name__, error=repr(exc))
                    continue
                if self._failed_at.get(index, started) <= started:  # not failed again meanwhile
                    self._failed_at.pop(index, None)
                    log.info("speech provider recovered", provider=type(provider).__name__)

    async def aclose(self) -> None:
        """Stop probing (idempotent)."""
        self._closed = True
        if self._probe_task is not None:
            await cancel_and_wait(self._probe_task)
