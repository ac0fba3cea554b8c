"""One session's transcript turns and call events, on the process's one ``CallEventWriter``
(``server.core.call_events``: its order, failure and bound rules)."""

from __future__ import annotations

from dialgraph.server.core.call_events import CallEventWriter
from dialgraph.server.core.models import CallEvent


class CallLog:
    """One session's events, on the process's ``CallEventWriter``: ``record`` never waits;
    ``flush`` returns once they are stored (or their write failed and they wait)."""

    def __init__(self, writer: CallEventWriter, *, call_sid: str, stream_sid: str) -> None:
        self._writer = writer
        self._call_sid = call_sid
        self._stream_sid = stream_sid

    def open(self) -> None:
        """The stream begins: the call row learns its stream sid (with the next round)."""
        self._writer.set_stream(self._call_sid, self._stream_sid)

    def record(self, event: CallEvent) -> None:
        self._writer.record(event)

    async def flush(self) -> None:
        await self._writer.flush_call(self._call_sid)
