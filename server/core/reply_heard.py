"""``calls.reply_heard``: what the caller heard of the reply in progress, kept in SQL so it
outlives the process that played it (the rules of when it is set, repaired and cleared live
with the call pipeline: ``telephony.call``).

A resumed stream reads the value (``peek_heard``), repairs the checkpoint with it, and only
then clears it if it still holds what was read (``clear_heard``): a newer value is never
cleared, and a repair happens once.

Cost: ONE ``ReplyProgressWriter`` per process, built in the app lifespan. ``set`` is a dict
assignment (the latest value of a call wins); one background task writes every changed
call in one transaction (an executemany UPDATE) at most every ``interval_s``. At 250
calls that is two small transactions a second instead of ~190, and one pooled connection
instead of one per call. The flusher is the only task that writes while it runs: a session
that ends waits for its value (``flush_call``) without ever running, or being cancelled
inside, a transaction itself.

Privacy: the heard text is what the agent said, and may repeat what the caller said: it is
redacted (``server/core/redaction.py``) when written, in the flusher's round (the latest
value of a call, at most every ``interval_s``, not every mark). A clear compares the
redacted value it was given with the row's, so it still matches (redaction is idempotent);
a resumed stream repairs the checkpoint with the redacted text, which is what the
checkpoint holds anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import bindparam, select, update

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Call
from dialgraph.server.core.redaction import Redactor, default_redactor
from dialgraph.server.core.writer import BatchedWriter, log_write_failure

log = structlog.get_logger(__name__)

_SET_HEARD = update(Call).where(Call.sid == bindparam("b_sid")).values(reply_heard=bindparam("b_heard"))
_CLEAR_HEARD_IF = (
    update(Call)
    .where(Call.sid == bindparam("b_sid"), Call.reply_heard == bindparam("b_peeked"))
    .values(reply_heard=None)
)


@dataclass(frozen=True, slots=True)
class _ClearIf:
    """A pending clear of a call's repaired heard text: only if the row still holds it."""

    peeked: str


_Value = str | None | _ClearIf


class ReplyProgressWriter(BatchedWriter[dict[str, _Value]]):
    """The one writer of ``calls.reply_heard`` for every live session of this process.

    ``start()`` (or ``async with``) starts its flusher task; ``aclose()`` writes what is
    pending and awaits the task. Write failures are logged and the values kept for the
    next round (a newer value of the same call supersedes them)."""

    lost_at_close = "reply progress lost at shutdown: the database did not take it"

    def __init__(self, db: Database, *, interval_s: float = 0.5, redactor: Redactor | None = None) -> None:
        super().__init__(interval_s=interval_s, task_name="reply-progress-flush")
        self._db = db
        self._redactor = redactor or default_redactor()
        self._pending: dict[str, _Value] = {}

    # --- the sessions' side (all cheap, none blocks) -----------------------------------------
    def set(self, call_sid: str, heard: str | None) -> None:
        """The caller of ``call_sid`` has heard ``heard`` of the reply in progress ("" = its
        audio began; None = nothing to repair: played to the end, or already repaired)."""
        self._pending[call_sid] = heard
        self._pending_added()

    async def peek_heard(self, call_sid: str) -> str | None:
        """``peek_heard`` for a call that may have had a session in this process: a value
        still pending here is newer than the row, so it is the answer; a round writing this
        call, or a pending clear, is waited for first."""
        if isinstance(self._pending.get(call_sid), _ClearIf):
            await self.flush_call(call_sid)
        await self._round_writing(call_sid)
        if call_sid in self._pending:
            value = self._pending[call_sid]
            if not isinstance(value, _ClearIf):
                return value
        return await peek_heard(self._db, call_sid)

    def clear_heard(self, call_sid: str, peeked: str) -> None:
        """The checkpoint is repaired with ``peeked``: clear the stored heard text if it still
        holds it (a newer value stays). Written by the flusher like any value, so a session
        ending (cancelled) right after its repair cannot cut it; ``flush_call`` waits for it."""
        if call_sid in self._pending:
            value = self._pending[call_sid]
            if value != peeked:  # a newer value (or a clear of another) is pending: it wins
                return
            value = None  # our own value, still pending: the row holds an older one
        else:
            value = _ClearIf(peeked)
        self._pending[call_sid] = value
        self._pending_added()

    # --- the rounds ---------------------------------------------------------------------------
    def _pending_rows(self) -> int:
        return len(self._pending)

    def _holds(self, call_sid: str) -> bool:
        return call_sid in self._pending

    def _take(self) -> dict[str, _Value]:
        batch, self._pending = self._pending, {}
        return batch

    def _calls_in(self, batch: dict[str, _Value]) -> frozenset[str]:
        return frozenset(batch)

    async def _write(self, batch: dict[str, _Value]) -> bool:
        redact = self._redactor.redact
        sets = [
            {"b_sid": sid, "b_heard": redact(v) if v else v} for sid, v in batch.items() if not isinstance(v, _ClearIf)
        ]
        clears = [{"b_sid": sid, "b_peeked": redact(v.peeked)} for sid, v in batch.items() if isinstance(v, _ClearIf)]
        try:
            async with self._db.engine.begin() as conn:
                if sets:
                    await conn.execute(_SET_HEARD, sets)
                if clears:
                    await conn.execute(_CLEAR_HEARD_IF, clears)
        except Exception as exc:
            self._requeue(batch)
            log_write_failure(log, "could not store reply progress", exc, calls=len(batch))
            return False
        except BaseException:  # cancelled (a write from ``flush_call`` without the flusher)
            self._requeue(batch)
            raise
        self.batches += 1
        self.rows += len(batch)
        return True

    def _requeue(self, batch: dict[str, _Value]) -> None:
        for sid, heard in batch.items():
            self._pending.setdefault(sid, heard)  # a newer value supersedes the failed one


async def peek_heard(db: Database, call_sid: str) -> str | None:
    """The heard text a previous session of the call left behind (None: nothing to repair).
    Left in place: ``clear_heard`` once the repair is done."""
    async with db.engine.connect() as conn:
        heard: str | None = await conn.scalar(select(Call.reply_heard).where(Call.sid == call_sid))
        return heard


async def clear_heard(db: Database, call_sid: str, peeked: str, *, redactor: Redactor | None = None) -> bool:
    """Clear the heard text of ``call_sid`` if it is still ``peeked`` (a repair happens once;
    a value written since the peek, by a later reply, stays). True: cleared."""
    stored = (redactor or default_redactor()).redact(peeked)
    async with db.engine.begin() as conn:
        result = await conn.execute(_CLEAR_HEARD_IF, {"b_sid": call_sid, "b_peeked": stored})
        return bool(result.rowcount)
