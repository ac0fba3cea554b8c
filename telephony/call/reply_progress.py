"""Heard progress of the replies in progress, kept in SQL so it outlives this process.

The checkpoint knows what the agent *said*; only the session knows, from Twilio's mark
echoes, what the caller *heard*. After a barge-in the session repairs the checkpoint
itself, but when the process dies mid-reply that knowledge would die with it. So each
session keeps ``calls.reply_heard`` in step: "" when a reply's first audio goes out, the
heard text as phrases finish playing, NULL once the reply played to the end or was
repaired. The session that picks the call up after a drop (any instance) reads the value
(``peek_heard``), repairs the checkpoint with it before its reconnection line, and only
then clears it if it still holds what was read (``clear_heard``): a process that dies
anywhere in between leaves it for the next stream (the repair is idempotent), and a newer
value is never cleared. A session whose repair failed keeps the text in front of every value
it stores after it (``ReplyPipeline.set_heard``): "" for its next reply then stores the kept
text, not "", so a second drop cannot lose it.

Cost: ONE ``ReplyProgressWriter`` per process, built in the app lifespan. ``set`` is a dict
assignment (the latest value of a call wins); one background task writes every changed
call in one transaction (an executemany UPDATE) at most every ``interval_s``. At 250
calls that is two small transactions a second instead of ~190, and one pooled connection
instead of one per call. The flusher is the only task that writes: a session that ends
waits for its value (``flush_call``) without ever running, or being cancelled inside, a
transaction itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from types import TracebackType

import structlog
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import SQLAlchemyError

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Call

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


class ReplyProgressWriter:
    """The one writer of ``calls.reply_heard`` for every live session of this process.

    ``start()`` (or ``async with``) starts its flusher task; ``aclose()`` writes what is
    pending and awaits the task. Write failures are logged and the values kept for the
    next round (a newer value of the same call supersedes them)."""

    def __init__(self, db: Database, *, interval_s: float = 0.5) -> None:
        self._db = db
        self._interval_s = interval_s
        self._pending: dict[str, _Value] = {}
        self._in_flight: dict[str, _Value] = {}
        self._in_flight_done: asyncio.Future[None] | None = None
        self._next_done: asyncio.Future[None] | None = None  # resolved by the round taking _pending
        self._wake = asyncio.Event()  # something is pending
        self._hurry = asyncio.Event()  # cut the pause between rounds short (flush_call, aclose)
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()  # rounds in order, even without the task (closed)
        self._closing = False
        self.batches = 0  # transactions committed
        self.rows = 0  # call values written

    # --- the sessions' side (all cheap, none blocks) -----------------------------------------
    def set(self, call_sid: str, heard: str | None) -> None:
        """The caller of ``call_sid`` has heard ``heard`` of the reply in progress ("" = its
        audio began; None = nothing to repair: played to the end, or already repaired)."""
        self._pending[call_sid] = heard
        if not self._wake.is_set():
            self._wake.set()

    async def flush_call(self, call_sid: str) -> None:
        """Return once the latest value set for ``call_sid`` is stored (or its write failed
        and is queued again): the end of a session, so a resume finds what was heard."""
        if call_sid in self._pending:
            if not self._flusher_running():  # not started, or closed: write it from here
                await self._flush()
                return
            done = self._round_after_pending()
        elif call_sid in self._in_flight and self._in_flight_done is not None:
            done = self._in_flight_done
        else:
            return
        # Shielded: a session cancelled while waiting must not cancel the round.
        await asyncio.shield(done)

    async def flush_now(self) -> None:
        """Return once everything set so far is stored (or queued again after a failure)."""
        if not self._flusher_running():
            await self._flush()
        elif self._pending:
            await asyncio.shield(self._round_after_pending())
        elif self._in_flight_done is not None:
            await asyncio.shield(self._in_flight_done)

    async def peek_heard(self, call_sid: str) -> str | None:
        """``peek_heard`` for a call that may have had a session in this process: a value
        still pending here is newer than the row, so it is the answer; a round writing this
        call, or a pending clear, is waited for first."""
        if isinstance(self._pending.get(call_sid), _ClearIf):
            await self.flush_call(call_sid)
        if call_sid in self._in_flight and self._in_flight_done is not None:
            await asyncio.shield(self._in_flight_done)
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
        if not self._wake.is_set():
            self._wake.set()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._flush_task is None:
            self._flush_task = asyncio.get_running_loop().create_task(self._run(), name="reply-progress-flush")

    async def aclose(self) -> None:
        """Stop the flusher after its round, then write what is still pending (once)."""
        self._closing = True
        self._wake.set()
        self._hurry.set()
        if self._flush_task is not None:
            await self._flush_task
            self._flush_task = None
        await self._flush()
        self._resolve(self._next_done)
        self._next_done = None

    async def __aenter__(self) -> ReplyProgressWriter:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- the flusher --------------------------------------------------------------------------
    def _flusher_running(self) -> bool:
        return self._flush_task is not None and not self._flush_task.done()

    def _round_after_pending(self) -> asyncio.Future[None]:
        if self._next_done is None:
            self._next_done = asyncio.get_running_loop().create_future()
        self._hurry.set()
        return self._next_done

    async def _run(self) -> None:
        # Never cancelled (``aclose`` asks it to stop): a transaction cut by a cancellation
        # leaves SQLAlchemy logging tracebacks from the pool.
        try:
            while not self._closing:
                await self._wake.wait()
                self._hurry.clear()
                await self._flush()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval_s):
                        await self._hurry.wait()
        finally:  # whatever stopped it, nobody waits on a round that will not come
            self._resolve(self._next_done)
            self._next_done = None

    async def _flush(self) -> None:
        async with self._flush_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        self._wake.clear()
        if not self._pending:
            self._resolve(self._next_done)
            self._next_done = None
            return
        batch, self._pending = self._pending, {}
        # Always a future: a ``flush_call`` or ``peek_heard`` for a call in this round waits for it.
        self._in_flight = batch
        self._in_flight_done = self._next_done or asyncio.get_running_loop().create_future()
        self._next_done = None
        sets = [{"b_sid": sid, "b_heard": v} for sid, v in batch.items() if not isinstance(v, _ClearIf)]
        clears = [{"b_sid": sid, "b_peeked": v.peeked} for sid, v in batch.items() if isinstance(v, _ClearIf)]
        try:
            async with self._db.engine.begin() as conn:
                if sets:
                    await conn.execute(_SET_HEARD, sets)
                if clears:
                    await conn.execute(_CLEAR_HEARD_IF, clears)
        except (SQLAlchemyError, OSError) as exc:
            self._requeue(batch)
            log.warning("could not store reply progress", calls=len(batch), error=str(exc))
        except Exception:  # last resort: this writer serves every call of the process
            self._requeue(batch)
            log.exception("could not store reply progress", calls=len(batch))
        else:
            self.batches += 1
            self.rows += len(batch)
        finally:
            self._in_flight = {}
            self._resolve(self._in_flight_done)
            self._in_flight_done = None

    def _requeue(self, batch: dict[str, _Value]) -> None:
        for sid, heard in batch.items():
            self._pending.setdefault(sid, heard)  # a newer value supersedes the failed one
        if not self._closing:
            self._wake.set()

    @staticmethod
    def _resolve(done: asyncio.Future[None] | None) -> None:
        if done is not None and not done.done():
            done.set_result(None)


async def peek_heard(db: Database, call_sid: str) -> str | None:
    """The heard text a previous session of the call left behind (None: nothing to repair).
    Left in place: ``clear_heard`` once the repair is done."""
    async with db.engine.connect() as conn:
        heard: str | None = await conn.scalar(select(Call.reply_heard).where(Call.sid == call_sid))
        return heard


async def clear_heard(db: Database, call_sid: str, peeked: str) -> bool:
    """Clear the heard text of ``call_sid`` if it is still ``peeked`` (a repair happens once;
    a value written since the peek, by a later reply, stays). True: cleared."""
    async with db.engine.begin() as conn:
        result = await conn.execute(_CLEAR_HEARD_IF, {"b_sid": call_sid, "b_peeked": peeked})
        return bool(result.rowcount)
