"""The outbound audit trail: every decision about a call to a number, and the rule that
made it (``outbound_audit``). Rows are only ever inserted.

Decisions: ``placed | skipped | refused | opted_out | voicemail | hung_up_fax | failed``.
``placed`` rows also count the calls made to a number per day (``compliance.check``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import OutboundAudit, utcnow

DECISIONS = frozenset({"placed", "skipped", "refused", "opted_out", "voicemail", "hung_up_fax", "failed"})


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One decision to record (``record_many``)."""

    decision: str
    rule: str
    to_number: str
    reason: str | None = None
    call_sid: str | None = None
    campaign_id: str | None = None
    contact_id: int | None = None
    detail: Mapping[str, Any] | None = None
    at: dt.datetime | None = field(default=None)

    def row(self) -> dict[str, Any]:
        if self.decision not in DECISIONS:
            raise ValueError(f"unknown audit decision {self.decision!r}")
        return {
            "at": self.at or utcnow(),
            "decision": self.decision,
            "reason": self.reason,
            "rule": self.rule,
            "to_number": self.to_number,
            "call_sid": self.call_sid,
            "campaign_id": self.campaign_id,
            "contact_id": self.contact_id,
            "detail": dict(self.detail) if self.detail is not None else None,
        }


async def record(
    db: Database,
    *,
    decision: str,
    rule: str,
    to_number: str,
    reason: str | None = None,
    call_sid: str | None = None,
    campaign_id: str | None = None,
    contact_id: int | None = None,
    detail: Mapping[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> None:
    """Record one decision (its own transaction)."""
    entry = AuditEntry(decision, rule, to_number, reason, call_sid, campaign_id, contact_id, detail, at)
    await record_many(db, [entry])


async def record_many(db: Database, entries: Sequence[AuditEntry]) -> None:
    """Record several decisions in one multi-row INSERT (one transaction)."""
    if not entries:
        return
    async with db.engine.begin() as conn:
        await insert_entries(conn, entries)


async def insert_entries(conn: AsyncConnection, entries: Sequence[AuditEntry]) -> None:
    """Insert ``entries`` inside the caller's transaction (to commit with other writes)."""
    if entries:
        await conn.execute(insert(OutboundAudit), [e.row() for e in entries])
