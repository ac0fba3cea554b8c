"""Each instance's campaign loop: reap what dead instances left, claim, place at the slot.

Every ``dispatch_interval_s`` one round: ``reaper.reap`` (now and then), ``contact_queue.claim``
(as many as this instance has room for; the campaign's ``max_concurrent`` and rate hold in
SQL across instances), and one task per claimed contact that sleeps until its slot instant,
checks the claim is still its own, and places the call. A failing round is logged and the
loop goes on; nothing in it blocks the event loop. A process past ``[overload]``'s limit
claims nothing (another instance with room takes the contacts); a contact it already holds
is refused by the placer (``overloaded``) and goes back to the queue for a later attempt.

``aclose()`` stops the loop after its round, cancels the contacts still waiting for their
slot (their claims expire and any instance takes them again) and waits for calls being
placed (a REST request cut short could ring someone whose contact then goes back to the
queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time

import structlog

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import utcnow
from dialgraph.server.core.overload import Overload
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.writer import log_write_failure
from dialgraph.server.outbound import contact_queue, reaper
from dialgraph.server.outbound.contact_queue import Claimed
from dialgraph.server.outbound.placer import OutboundPlacer
from dialgraph.server.outbound.types import Refused
from dialgraph.telephony.twilio.call_control import CallControl, CallControlError

log = structlog.get_logger(__name__)


class CampaignDispatcher:
    """Claims campaign contacts and places their calls, for one instance.

    ``max_in_flight`` bounds the contacts this instance holds at once (waiting for a slot or
    being placed); ``call_control.fetch_status`` reconciles calls nobody heard of."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        placer: OutboundPlacer,
        call_control: CallControl,
        *,
        instance_id: str,
        max_in_flight: int = 100,
        overload: Overload | None = None,
    ) -> None:
        self._overload = overload
        self.rounds_overloaded = 0  # rounds that claimed nothing: this process was past [overload]
        self._db = db
        self._outbound = settings.outbound
        self._placer = placer
        self._call_control = call_control
        self.instance_id = instance_id
        self._max_in_flight = max_in_flight
        interval = self._outbound.dispatch_interval_s
        # Claim one round ahead (and a little more) so a round's wait never throttles the rate.
        self._horizon_s = max(2 * interval, 0.5)
        self._reap_every_s = max(interval, min(self._outbound.claim_ttl_s, self._outbound.stale_call_s) / 4)
        self._last_reap = -float("inf")
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._call_tasks: set[asyncio.Task[None]] = set()
        self._waiting: set[asyncio.Task[None]] = set()  # still before their slot: safe to cancel
        self.placed = 0  # calls Twilio took
        self.rounds_failed = 0

    @property
    def in_flight(self) -> int:
        return len(self._call_tasks)

    def start(self) -> None:
        """Start the loop (once)."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(
                self._run(), name=f"campaign-dispatcher-{self.instance_id}"
            )

    async def aclose(self) -> None:
        """Stop claiming; drop contacts waiting for their slot; wait for calls being placed."""
        self._stopping.set()
        if self._loop_task is not None:
            await self._loop_task  # never cancelled mid-transaction: it stops after its round
            self._loop_task = None
        for task in self._waiting:
            task.cancel()
        if self._call_tasks:
            await asyncio.gather(*self._call_tasks, return_exceptions=True)

    async def _run(self) -> None:
        interval = self._outbound.dispatch_interval_s
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # one bad round (database away...) must not end the loop
                self.rounds_failed += 1
                log_write_failure(log, "campaign dispatch round failed", exc, instance_id=self.instance_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stopping.wait()

    async def run_once(self) -> int:
        """One round: reap when due, claim, start a task per claimed contact. Returns how many
        contacts it claimed."""
        if time.monotonic() - self._last_reap >= self._reap_every_s:
            self._last_reap = time.monotonic()
            await reaper.reap(
                self._db,
                utcnow(),
                claim_ttl_s=self._outbound.claim_ttl_s,
                stale_call_s=self._outbound.stale_call_s,
                fetch_status=self._call_control.fetch_status,
                find_calls=self._call_control.find_calls,
            )
        room = self._max_in_flight - len(self._call_tasks)
        if room <= 0 or self._stopping.is_set():
            return 0
        if self._overload is not None and not self._overload.state().ready:
            self.rounds_overloaded += 1  # claim nothing: an instance with room takes the contacts
            return 0
        claimed = await contact_queue.claim(self._db, self.instance_id, utcnow(), limit=room, horizon_s=self._horizon_s)
        for contact in claimed:
            task = asyncio.get_running_loop().create_task(
                self._call(contact), name=f"campaign-call-{contact.contact_id}"
            )
            self._call_tasks.add(task)
            self._waiting.add(task)
            task.add_done_callback(self._call_done)
        return len(claimed)

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self._call_tasks.discard(task)
        self._waiting.discard(task)

    async def _call(self, contact: Claimed) -> None:
        """Wait for the slot, then place the call and record what came of it."""
        try:
            delay = (contact.slot_at - utcnow()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.current_task()
            if task is not None:
                self._waiting.discard(task)  # from here on aclose waits for it
            await self._place(contact)
        except asyncio.CancelledError:
            log.info("claimed contact left to expire", contact_id=contact.contact_id, instance_id=self.instance_id)
            raise
        except Exception as exc:  # the database failed us: the claim expires, or the call is reconciled
            log_write_failure(log, "campaign call bookkeeping failed", exc, contact_id=contact.contact_id)

    async def _place(self, contact: Claimed) -> None:
        late = utcnow() - contact.claimed_at > dt.timedelta(seconds=self._outbound.claim_ttl_s / 2)
        if late or not await contact_queue.start_dialing(self._db, contact.contact_id, self.instance_id):
            # Near or past the claim's expiry (or reaped, or the campaign cancelled): another
            # instance may take it, so this one must not dial it.
            log.info("claim given up before dialling", contact_id=contact.contact_id, late=late)
            return
        try:
            sid = await self._placer.place(contact.request())
        except Refused as exc:
            await contact_queue.mark_skipped(self._db, contact.contact_id, exc.refusal)
        except CallControlError as exc:
            await contact_queue.mark_failed_to_place(self._db, contact.contact_id, str(exc))
        except ValueError as exc:  # the flow went away, or a bad caller ID: not worth a retry
            await contact_queue.mark_failed_to_place(self._db, contact.contact_id, str(exc))
        else:
            self.placed += 1
            await contact_queue.mark_dialing(self._db, contact.contact_id, sid)
