"""Transcript turns and call events, written off the hot path by ONE writer per process.

``CallEventWriter`` is built in the app lifespan, like ``ReplyProgressWriter``. ``record``
appends a row to one queue for every call of the process and never waits; one flusher
task writes up to ``max_batch`` rows in one transaction (an executemany INSERT) per round,
at most every ``interval_s``, and at once while a backlog remains or a session waits for
its call (``flush_call``). At 250 calls that is about one transaction a second on one
pooled connection, where a flushing task per call fired dozens a second in bursts and
emptied the pool. ``telephony.call.call_log.CallLog`` is one session's view of it.

* Order: rows are written in the order they were recorded (ids follow it, and
  ``call_store.transcript`` orders by id); a failed round puts its rows back in front.
* Failures: a round that fails is kept for the next; the calls go on. A row the database
  refuses for what it is (an unknown call, a value too long) would fail every round, so a
  refused batch is halved until that row is alone, and only it is dropped (``dropped``).
* Privacy: an event's text and data are redacted (``call_store.redact_row``,
  ``server/core/redaction.py``) when it is recorded, so no card, Aadhaar or OTP waits in
  memory or reaches SQL. DTMF keys come one event per key: the first key of a burst (a
  menu choice) is kept, the rest of the burst is stored as ``x`` (a number typed on the
  keypad is never stored raw); an event holding several keys goes through
  ``Redactor.redact_digits`` first (``[card ending 1111]``, ``[16 digits]``).
* Bound: at most ``max_pending`` rows wait, so a dead database cannot eat the process's
  memory. Past it NEW rows are refused (``refused``; logged once per episode): what is
  stored of a call is then its beginning, in order, not a transcript with its start cut.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, NamedTuple

import structlog
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from dialgraph.server.core import call_store
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.redaction import Redactor, default_redactor
from dialgraph.server.core.writer import BatchedWriter, log_write_failure

log = structlog.get_logger(__name__)

DTMF_BURST_GAP_S = 5.0  # keys closer than this belong to one burst (a number being typed)


class _Row(NamedTuple):
    call_sid: str
    event: dict[str, Any] | None  # a ``call_events`` row (``call_store.event_row``), or
    stream_sid: str | None  # the call's stream, for ``calls.stream_sid``


class CallEventWriter(BatchedWriter[list[_Row]]):
    """The one writer of ``call_events`` (and ``calls.stream_sid``) for every live session
    of this process. ``start()`` (or ``async with``) starts its flusher task; ``aclose()``
    stops it and writes what is pending."""

    lost_at_close = "call events lost at shutdown: the database did not take them"

    def __init__(
        self,
        db: Database,
        *,
        interval_s: float = 1.0,
        max_batch: int = 500,
        max_pending: int = 20_000,
        redactor: Redactor | None = None,
    ) -> None:
        super().__init__(interval_s=interval_s, task_name="call-events-flush")
        self._db = db
        self._redactor = redactor or default_redactor()
        self._dtmf: dict[str, tuple[int, float]] = {}  # call -> (keys in its burst, last key's time)
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: deque[_Row] = deque()
        self._refusing = False
        self.refused = 0  # rows refused: too many pending
        self.dropped = 0  # rows the database refused

    # --- the sessions' side (all cheap, none blocks) -----------------------------------------
    def record(self, event: CallEvent) -> None:
        """Queue ``event`` (its ``at`` is now, however late it is written), its text redacted."""
        row = call_store.redact_row(call_store.event_row(event), self._redactor)
        if row["kind"] == "dtmf":
            row["text"] = self._dtmf_key(event.call_sid, row["text"])
        self._add(_Row(event.call_sid, row, None))

    def _dtmf_key(self, call_sid: str, key: str | None) -> str | None:
        """The first key of a burst as pressed, the others masked."""
        now = time.monotonic()
        keys, last = self._dtmf.get(call_sid, (0, 0.0))
        keys = keys + 1 if now - last < DTMF_BURST_GAP_S else 1
        if len(self._dtmf) >= 1024 and call_sid not in self._dtmf:  # bounded: forget ended bursts
            self._dtmf = {sid: v for sid, v in self._dtmf.items() if now - v[1] < DTMF_BURST_GAP_S}
        self._dtmf[call_sid] = (keys, now)
        if keys == 1 or not key:
            return key
        return "x" * len(key)

    def set_stream(self, call_sid: str, stream_sid: str) -> None:
        """Queue ``calls.stream_sid`` of ``call_sid`` (written with the events)."""
        self._add(_Row(call_sid, None, stream_sid))

    def _add(self, row: _Row) -> None:
        if len(self._pending) + self._in_flight_rows >= self._max_pending:
            self.refused += 1
            if not self._refusing:
                self._refusing = True
                log.warning("call events refused: too many wait for the database", max_pending=self._max_pending)
            return
        self._pending.append(row)
        self._pending_added()

    # --- the rounds ---------------------------------------------------------------------------
    def _pending_rows(self) -> int:
        return len(self._pending)

    def _holds(self, call_sid: str) -> bool:
        return any(row.call_sid == call_sid for row in self._pending)

    def _take(self) -> list[_Row]:
        return [self._pending.popleft() for _ in range(min(len(self._pending), self._max_batch))]

    def _calls_in(self, batch: list[_Row]) -> frozenset[str]:
        return frozenset(row.call_sid for row in batch)

    def _backlog(self) -> bool:
        return len(self._pending) >= self._max_batch

    async def _flush(self) -> bool:
        stored = await super()._flush()
        if self._refusing and len(self._pending) < self._max_pending // 2:
            self._refusing = False
            log.info("call events accepted again", refused=self.refused)
        return stored

    async def _write(self, batch: list[_Row]) -> bool:
        parts = [batch]  # a stack: the front of the batch on top
        while parts:
            part = parts.pop()
            try:
                await call_store.add_event_rows(
                    self._db,
                    [row.event for row in part if row.event is not None],
                    streams={row.call_sid: row.stream_sid for row in part if row.stream_sid is not None},
                )
            except Exception as exc:
                if _refused(exc):
                    if len(part) > 1:  # the refused row is in one half: find it
                        parts += (part[len(part) // 2 :], part[: len(part) // 2])
                        continue
                    self.dropped += 1
                    log.error("call event refused by the database: dropped", call_sid=part[0].call_sid, error=str(exc))
                    continue
                self._requeue([row for p in (part, *reversed(parts)) for row in p])
                log_write_failure(log, "could not store call events", exc, rows=len(batch))
                return False
            except BaseException:  # cancelled (a write from ``flush_call`` without the flusher)
                self._requeue([row for p in (part, *reversed(parts)) for row in p])
                raise
            self.batches += 1
            self.rows += len(part)
        return True

    def _requeue(self, rows: list[_Row]) -> None:
        # Older than anything pending: back in front, in order. In flight, they were counted
        # against ``max_pending``, so the bound holds.
        self._pending.extendleft(reversed(rows))


def _refused(exc: Exception) -> bool:
    """The database (or the driver, before it) refused a row for what it is: it would fail
    every round."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)  # e.g. a value it cannot bind
