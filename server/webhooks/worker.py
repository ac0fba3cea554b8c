"""The delivery worker: every instance runs one in its lifespan.

Each round it claims up to ``[webhooks] concurrency`` due deliveries (``queue.claim``: one
UPDATE; instances never claim one row twice) and POSTs them at the same time with one
``httpx.AsyncClient`` (the endpoint's ``timeout_s``; no redirects followed), signed
(``signing``). A 2xx is delivered; a 410 gives up at once; anything else (another status, a
timeout, a refused connection) is retried after ``retry_base_s * 2^(attempts-1)`` (at most
``retry_max_s``), jittered to 50-100 % so receivers coming back are not hit by every
instance at once, until ``retry_for_s`` (a day) after the event: then ``failed``. Nothing
here runs on a call's path: a slow receiver only keeps this worker's slots busy.

Every few seconds it also looks for campaigns that finished (completed or cancelled, by any
path: the last contact, the reaper, the API) and queues their ``campaign.finished``
(deduplicated in SQL, so all instances may look).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
from typing import Any

import httpx
import structlog
from sqlalchemy import select

from dialgraph.server.core.call_store import get_call, transcript
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Campaign, WebhookDelivery, utcnow
from dialgraph.server.core.redaction import redactor_for
from dialgraph.server.core.settings import Settings
from dialgraph.server.webhooks import queue, report
from dialgraph.server.webhooks.analysis_hook import analysis_pending, call_analysis
from dialgraph.server.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign

log = structlog.get_logger(__name__)

CAMPAIGN_SWEEP_S = 5.0
ANALYSIS_POLL_S = 1.0
SHUTDOWN_GRACE_S = 3.0
USER_AGENT = "dialgraph-webhooks/1"


def encode_body(body: Any) -> bytes:
    """The exact bytes POSTed (and signed)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def backoff_s(attempts: int, base_s: float, max_s: float, *, rng: random.Random | None = None) -> float:
    """Delay before the next attempt after ``attempts`` failed ones: exponential, capped,
    jittered to 50-100 %."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempts - 1))
    return ceiling * (0.5 + 0.5 * (rng or random).random())


class WebhookWorker:
    """Claims and POSTs due deliveries until closed."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        instance_id: str,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.instance_id = instance_id[:64]
        self._client = client
        self._own_client = client is None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._last_sweep = 0.0
        self._redactor = redactor_for(settings.redaction)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
                limits=httpx.Limits(max_connections=self.settings.webhooks.concurrency * 2),
            )
        return self._client

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="webhook-worker")

    async def aclose(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=SHUTDOWN_GRACE_S + 2)
            except (TimeoutError, asyncio.CancelledError):
                pass
            self._task = None
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _loop(self) -> None:
        """Keep up to ``concurrency`` POSTs in flight; claim more as slots free up."""
        cfg = self.settings.webhooks
        inflight: set[asyncio.Task[None]] = set()
        try:
            while not self._stop.is_set():
                claimed = 0
                try:
                    if time.monotonic() - self._last_sweep >= CAMPAIGN_SWEEP_S:
                        self._last_sweep = time.monotonic()
                        await self.sweep_campaigns()
                    free = cfg.concurrency - len(inflight)
                    if free > 0:
                        rows = await queue.claim(self.db, self.instance_id, limit=free, ttl_s=cfg.claim_ttl_s)
                        claimed = len(rows)
                        for row in rows:
                            task = asyncio.create_task(self._deliver(row), name=f"webhook-{row.id}")
                            inflight.add(task)
                            task.add_done_callback(inflight.discard)
                except Exception as exc:  # the database away for a moment: try again next round
                    log.error("webhook worker round failed", error=type(exc).__name__)
                if claimed and len(inflight) < cfg.concurrency:
                    continue  # more may be due right now
                stop = asyncio.ensure_future(self._stop.wait())
                try:
                    await asyncio.wait(
                        {stop, *inflight}, timeout=cfg.poll_interval_s, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    stop.cancel()
                    await asyncio.gather(stop, return_exceptions=True)
        finally:
            if inflight:  # a short grace for POSTs in flight; the rest expire and are retried
                _, pending = await asyncio.wait(inflight, timeout=SHUTDOWN_GRACE_S)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def run_once(self) -> int:
        """Claim one batch of due deliveries and deliver them all (tests, ``dialgraph``
        maintenance); the number claimed."""
        cfg = self.settings.webhooks
        rows = await queue.claim(self.db, self.instance_id, limit=cfg.concurrency, ttl_s=cfg.claim_ttl_s)
        if rows:
            await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    # --- one delivery --------------------------------------------------------------------
    async def _deliver(self, row: WebhookDelivery) -> None:
        try:
            await self._attempt(row)
        except Exception as exc:  # a bug or the database: the claim expires and it is retried
            log.error("webhook delivery crashed", delivery=row.id, error=type(exc).__name__)

    async def _attempt(self, row: WebhookDelivery) -> None:
        me, now = self.instance_id, utcnow()
        endpoint = self.settings.webhook_endpoints().get(row.endpoint)
        secret = self.settings.webhook_secret(row.endpoint)
        if endpoint is None or not secret:
            await queue.finish(self.db, row.id, me, status="failed", last_error="endpoint not configured")
            log.warning("webhook endpoint gone", delivery=row.id, endpoint=row.endpoint)
            return
        body = row.body
        if body is None:
            built = await self._build(row, mask=endpoint.mask_numbers, now=now)
            if built is None:
                return  # deferred (the analysis is not in yet) or failed: already written
            if not await queue.set_body(self.db, row.id, me, built):
                return  # the claim was lost
            body = built
        payload = encode_body(body)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, payload),
            EVENT_HEADER: row.event,
            DELIVERY_HEADER: row.id,
        }
        code: int | None = None
        try:
            response = await self.client.post(row.url, content=payload, headers=headers, timeout=endpoint.timeout_s)
            code = response.status_code
            error = None if 200 <= code < 300 else f"HTTP {code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        await self._record(row, code, error)

    async def _record(self, row: WebhookDelivery, code: int | None, error: str | None) -> None:
        cfg, me, now = self.settings.webhooks, self.instance_id, utcnow()
        if error is None:
            await queue.finish(
                self.db, row.id, me, status="delivered", delivered_at=now, last_status_code=code, last_error=None
            )
            log.info(
                "webhook delivered",
                delivery=row.id,
                endpoint=row.endpoint,
                webhook_event=row.event,
                attempts=row.attempts,
            )
            return
        delay = backoff_s(row.attempts, cfg.retry_base_s, cfg.retry_max_s)
        next_at = now + dt.timedelta(seconds=delay)
        give_up = code == 410 or next_at > row.created_at + dt.timedelta(seconds=cfg.retry_for_s)
        if give_up:
            await queue.finish(self.db, row.id, me, status="failed", last_status_code=code, last_error=error)
        else:
            await queue.finish(
                self.db, row.id, me, status="pending", next_attempt_at=next_at, last_status_code=code, last_error=error
            )
        log.warning(
            "webhook delivery failed",
            delivery=row.id,
            endpoint=row.endpoint,
            webhook_event=row.event,
            attempts=row.attempts,
            error=error,
            gave_up=give_up,
            retry_in_s=None if give_up else round(delay, 1),
        )

    async def _build(self, row: WebhookDelivery, *, mask: bool, now: dt.datetime) -> dict[str, Any] | None:
        """The body of a call.ended delivery, or None after writing why there is none yet."""
        me = self.instance_id
        call = await get_call(self.db, row.subject) if row.event == "call.ended" else None
        if call is None:
            await queue.finish(self.db, row.id, me, status="failed", last_error="subject not found")
            return None
        analysis = call_analysis(call)
        waited = (now - row.created_at).total_seconds()
        # A stream's cost is added to the row as the stream closes, which can come a moment
        # after Twilio's final status: wait for it (and the analysis) as long as the analysis.
        cost_pending = call.cost is None and call.stream_sid is not None
        pending = (analysis is None and analysis_pending(self.settings, call)) or cost_pending
        if pending and waited < self.settings.webhooks.analysis_wait_s:
            # Not an attempt: back in the queue until they are in (or the wait is over).
            await queue.finish(
                self.db,
                row.id,
                me,
                status="pending",
                attempts=row.attempts - 1,
                next_attempt_at=now + dt.timedelta(seconds=ANALYSIS_POLL_S),
            )
            return None
        events = await transcript(self.db, call.sid)
        data = report.call_ended(call, events, mask=mask, redactor=self._redactor, analysis=analysis)
        return report.envelope(row.id, row.event, row.created_at, data)

    # --- campaign.finished ------------------------------------------------------------------
    async def sweep_campaigns(self, now: dt.datetime | None = None) -> int:
        """Queue campaign.finished for campaigns finished within ``campaign_lookback_s`` that
        have no delivery yet; the number queued."""
        from dialgraph.server.outbound.campaigns import counts

        now = now or utcnow()
        if not any("campaign.finished" in e.events for e in self.settings.webhook_endpoints().values()):
            return 0
        since = now - dt.timedelta(seconds=self.settings.webhooks.campaign_lookback_s)
        async with self.db.sessionmaker() as s:
            finished = list(
                (
                    await s.scalars(
                        select(Campaign).where(
                            Campaign.status.in_(("completed", "cancelled")), Campaign.finished_at >= since
                        )
                    )
                ).all()
            )
            if not finished:
                return 0
            keys = {f"campaign.finished:{c.id}" for c in finished}
            found = await s.execute(
                select(WebhookDelivery.endpoint, WebhookDelivery.dedupe_key).where(WebhookDelivery.dedupe_key.in_(keys))
            )
            seen = {(endpoint, key) for endpoint, key in found.all()}
        queued = 0
        for campaign in finished:
            wanted = {
                name
                for name, e in self.settings.webhook_endpoints(campaign.flow).items()
                if "campaign.finished" in e.events
            }
            if wanted <= {name for name, key in seen if key == f"campaign.finished:{campaign.id}"}:
                continue
            queued += await queue.enqueue(
                self.db,
                self.settings,
                "campaign.finished",
                campaign=campaign,
                counts=await counts(self.db, campaign.id),
                now=now,
            )
        return queued


__all__ = ["WebhookWorker", "backoff_s", "encode_body"]
