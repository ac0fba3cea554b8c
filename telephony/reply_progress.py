"""Heard progress of the reply in progress, kept in SQL so it outlives this process.

The checkpoint knows what the agent *said*; only the session knows, from Twilio's mark
echoes, what the caller *heard*. After a barge-in the session repairs the checkpoint
itself, but when the process dies mid-reply that knowledge would die with it. So the
session keeps ``calls.reply_heard`` in step: "" when a reply's first audio goes out, the
heard text as phrases finish playing, NULL once the reply played to the end or was
repaired. The session that picks the call up after a drop (any instance) takes the value
(``take_heard``) and repairs the checkpoint with it before its reconnection line.

Cost: one coalescing writer per call; a value is written at most every ``interval_s`` and
only when it changed, so a short reply that plays out within the interval costs two small
UPDATEs, and a long one about one per phrase.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from server.db import Database
from server.models import Call

log = structlog.get_logger(__name__)

_UNSET = object()


class ReplyProgress:
    """The one writer of ``calls.reply_heard`` for a live session (``run`` is its task)."""

    def __init__(self, db: Database, call_sid: str, *, interval_s: float = 0.5) -> None:
        self._db = db
        self._sid = call_sid
        self._interval_s = interval_s
        self._wanted: str | None = None
        self._written: str | None | object = None  # a fresh or taken row holds NULL
        self._changed = asyncio.Event()
        self.writes = 0

    def heard(self, text: str) -> None:
        """The caller has heard ``text`` of the reply in progress ("" = its audio began)."""
        self._wanted = text
        self._changed.set()

    def settled(self) -> None:
        """No reply in progress needs repairing (played to the end, or already repaired)."""
        self._wanted = None
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self.flush()
            await asyncio.sleep(self._interval_s)

    async def flush(self) -> None:
        """Write the latest value now if it differs from the stored one."""
        value = self._wanted
        if value == self._written:
            return
        try:
            async with self._db.sessionmaker() as s, s.begin():
                await s.execute(update(Call).where(Call.sid == self._sid).values(reply_heard=value))
        except SQLAlchemyError as exc:
            log.warning("could not store reply progress", call_sid=self._sid, error=str(exc))
            self._written = _UNSET  # unknown: write again next time
            return
        self._written = value
        self.writes += 1


async def take_heard(db: Database, call_sid: str) -> str | None:
    """The heard text a previous session of the call left behind (None: nothing to
    repair), cleared in the same transaction so a repair happens once."""
    async with db.sessionmaker() as s, s.begin():
        heard = await s.scalar(select(Call.reply_heard).where(Call.sid == call_sid).with_for_update())
        if heard is not None:
            await s.execute(update(Call).where(Call.sid == call_sid).values(reply_heard=None))
        return heard
