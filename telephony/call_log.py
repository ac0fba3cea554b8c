"""CallLog: one call's transcript turns and call events, written to the database in
batches off the hot path (``run`` is the session's persist task)."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import SQLAlchemyError
from structlog.typing import FilteringBoundLogger

from server import call_store
from server.db import Database
from server.models import CallEvent

MAX_PENDING_EVENTS = 2000


class CallLog:
    """Pending events of one call; ``record`` never waits, ``flush`` writes a batch."""

    def __init__(
        self, *, db: Database, call_sid: str, stream_sid: str, interval_s: float, log: FilteringBoundLogger
    ) -> None:
        self._db = db
        self._call_sid = call_sid
        self._stream_sid = stream_sid
        self._interval_s = interval_s
        self._log = log
        self._events: list[CallEvent] = []
        self._lock = asyncio.Lock()

    def record(self, event: CallEvent) -> None:
        if len(self._events) < MAX_PENDING_EVENTS:
            self._events.append(event)

    async def run(self) -> None:
        # Shielded: the call's end cancels this task, and a cancellation inside a transaction
        # makes SQLAlchemy's pool log a CancelledError traceback. Each write holds
        # ``_lock``, so the session's final ``flush`` waits for it.
        await asyncio.shield(self._store_stream())
        while True:
            await asyncio.sleep(self._interval_s)
            if self._events:
                await asyncio.shield(self.flush())

    async def _store_stream(self) -> None:
        async with self._lock:
            try:
                await call_store.update_call(self._db, self._call_sid, stream_sid=self._stream_sid)
            except SQLAlchemyError as exc:
                self._log.warning("could not record the stream", error=str(exc))

    async def flush(self) -> None:
        async with self._lock:
            if not self._events:
                return
            batch, self._events = self._events, []
            try:
                await call_store.add_events(self._db, batch)
            except Exception as exc:  # the transcript waits for the next round; the call goes on
                if isinstance(exc, SQLAlchemyError | OSError):
                    self._log.warning("could not store call events", count=len(batch), error=str(exc))
                else:
                    self._log.error("could not store call events", count=len(batch), exc_info=exc)
                self._events[:0] = batch[: MAX_PENDING_EVENTS - len(self._events)]
