"""Placing one outbound call: compliance, the account's call rate, Twilio REST, the record.

``OutboundPlacer.place`` is what ``POST /api/calls``, ``dialgraph call`` and the campaign
dispatcher call. In order:

1. the flow must exist (``ValueError``; the API checks first and answers 422); a process
   past ``[overload]``'s limit refuses with ``overloaded`` (rule ``overload.*``,
   ``retry_after_s``), audited like a compliance refusal;
2. ``compliance.check``: a refusal is audited (``refused``, or ``skipped`` for a campaign
   contact) with its rule and raised as ``Refused``; no REST request is made;
3. a slot of the account's calls-per-second schedule (``rates.take_slot("account")``,
   shared by all instances); waiting longer than ``ACCOUNT_MAX_WAIT_S`` refuses with
   ``rate_limited`` (rule ``twilio.account_cps``);
4. ``CallControl.place_call``: the answer URL starts our media stream, status callbacks for
   all four events, async AMD with its own callback, the ring timeout. A REST failure is
   audited ``failed`` and re-raised (``CallControlError``);
5. the call row (an upsert: ``/twilio/voice`` may already have created it) and the
   ``placed`` audit row, in one transaction. The call counts towards this process's load
   (``Overload.hold``) while it rings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy.dialects import postgresql, sqlite

from dialgraph.server.core.db import Database
from dialgraph.server.core.enums import CallStatus
from dialgraph.server.core.models import Call, utcnow
from dialgraph.server.core.overload import OVERLOAD_RETRY_S, Overload
from dialgraph.server.core.settings import Settings
from dialgraph.server.outbound import audit, compliance, rates
from dialgraph.server.outbound.types import OutboundRequest, Refusal, Refused
from dialgraph.telephony.twilio.call_control import CallControl, CallControlError

log = structlog.get_logger(__name__)

ACCOUNT_KEY = "account"
ACCOUNT_MAX_WAIT_S = 5.0
# What the webhook knows better once it has run (status, answer time) is left alone.
_MERGED_COLUMNS = ("direction", "from_number", "to_number", "flow", "context", "purpose", "campaign_id", "contact_id")


class OutboundPlacer:
    """Places outbound calls for one app (or CLI run). Stateless between calls: every limit
    it keeps lives in SQL, so any number of placers on any number of instances agree."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        call_control: CallControl,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        overload: Overload | None = None,
    ) -> None:
        self._overload = overload
        self._db = db
        self._settings = settings
        self._call_control = call_control
        self._clock = clock
        self._sleep = sleep

    async def place(self, req: OutboundRequest) -> str:
        """Place ``req``; return its CallSid. Raises ``Refused`` (audited, no REST request),
        ``CallControlError`` (Twilio failed; audited) or ``ValueError`` (unknown flow, or a
        number that is not E.164)."""
        settings = self._settings
        if req.flow not in settings.flows:
            raise ValueError(f"unknown flow {req.flow!r}")
        if not compliance.valid_e164(req.to) or not compliance.valid_e164(req.from_):
            raise ValueError("to and from must be E.164 numbers")
        if self._overload is not None and (rule := self._overload.state().reason) is not None:
            # Past [overload]'s limit this process places no call: its callee would get a
            # degraded agent. Another instance (or this one, later) places it.
            await self._refuse(req, Refusal("overloaded", rule, {"retry_after_s": OVERLOAD_RETRY_S}))
        refusal = await compliance.check(self._db, settings, req, self._clock())
        if refusal is not None:
            await self._refuse(req, refusal)
        interval = 1.0 / settings.outbound.account_calls_per_second
        wait = await rates.take_slot(self._db, ACCOUNT_KEY, interval, self._clock(), max_wait_s=ACCOUNT_MAX_WAIT_S)
        if wait is None:
            retry = max(1, math.ceil(ACCOUNT_MAX_WAIT_S))
            await self._refuse(req, Refusal("rate_limited", "twilio.account_cps", {"retry_after_s": retry}))
        elif wait > 0:
            await self._sleep(wait)
        sid = await self._dial(req)
        if self._overload is not None:  # it counts while it rings, before its stream opens
            self._overload.hold(sid, settings.outbound.ring_timeout_s + self._overload.settings.admission_hold_s)
        try:
            await self._record(req, sid)
        except Exception:  # the call is ringing: report it placed rather than have it dialled again
            log.exception("placed call not recorded", call_sid=sid, flow=req.flow, purpose=req.purpose)
        log.info("outbound call placed", call_sid=sid, flow=req.flow, purpose=req.purpose, campaign_id=req.campaign_id)
        return sid

    async def _refuse(self, req: OutboundRequest, refusal: Refusal) -> None:
        await audit.record(
            self._db,
            decision="skipped" if req.campaign_id else "refused",
            reason=refusal.reason,
            rule=refusal.rule,
            to_number=req.to,
            campaign_id=req.campaign_id,
            contact_id=req.contact_id,
            detail={"purpose": req.purpose, "flow": req.flow, **refusal.detail},
        )
        log.info(
            "outbound call refused",
            flow=req.flow,
            purpose=req.purpose,
            reason=refusal.reason,
            rule=refusal.rule,
            campaign_id=req.campaign_id,
        )
        raise Refused(refusal)

    async def _dial(self, req: OutboundRequest) -> str:
        settings = self._settings
        base = settings.public_url
        detection = settings.outbound.machine_detection
        try:
            return await self._call_control.place_call(
                to=req.to,
                from_=req.from_,
                url=f"{base}/twilio/voice",
                status_callback=f"{base}/twilio/status",
                machine_detection=None if detection == "off" else detection,
                async_amd=True,
                async_amd_status_callback=f"{base}/twilio/amd",
                timeout_s=settings.outbound.ring_timeout_s,
            )
        except CallControlError as exc:
            await audit.record(
                self._db,
                decision="failed",
                reason="twilio",
                rule="twilio.rest",
                to_number=req.to,
                campaign_id=req.campaign_id,
                contact_id=req.contact_id,
                detail={"status": exc.status, "code": exc.code, "retryable": exc.retryable},
            )
            log.warning(
                "outbound call failed", flow=req.flow, status=exc.status, code=exc.code, retryable=exc.retryable
            )
            raise

    async def _record(self, req: OutboundRequest, sid: str) -> None:
        """The call row (merged into the row a fast ``/twilio/voice`` may have written) and
        the ``placed`` audit row, in one transaction."""
        now = self._clock()
        values: dict[str, Any] = {
            "sid": sid,
            "direction": "outbound",
            "from_number": req.from_,
            "to_number": req.to,
            "flow": req.flow,
            "thread_id": sid,
            "context": dict(req.context),
            "purpose": req.purpose,
            "campaign_id": req.campaign_id,
            "contact_id": req.contact_id,
            "status": CallStatus.QUEUED.value,
            "started_at": now,
            "updated_at": now,
        }
        insert = sqlite.insert(Call) if self._db.is_sqlite else postgresql.insert(Call)
        upsert = insert.values(**values).on_conflict_do_update(
            index_elements=["sid"],
            set_={**{c: values[c] for c in _MERGED_COLUMNS}, "updated_at": now},
        )
        placed = audit.AuditEntry(
            decision="placed",
            rule="placed",
            to_number=req.to,
            call_sid=sid,
            campaign_id=req.campaign_id,
            contact_id=req.contact_id,
            detail={"purpose": req.purpose, "flow": req.flow},
            at=now,
        )
        async with self._db.engine.begin() as conn:
            await conn.execute(upsert)
            await audit.insert_entries(conn, [placed])
