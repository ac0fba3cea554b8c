"""What the caller heard: the rules that keep the checkpoint and ``calls.reply_heard`` true
to it, for one call, in one object (``HeardText``).

The checkpoint knows what the agent *said*; only the session knows, from Twilio's mark
echoes, what the caller *heard*. So:

* **Repair.** A reply cut short (barge-in, or a failed run or synthesis) has the thread's
  latest turn cut to what was heard of it (``TurnRunner.record_heard``), once the reply's
  tasks have stopped. Repairs and graph runs take turns in order (``graph_run``): a run
  never reads a history whose repair is still to come.
* **Progress for another instance.** While a reply plays, ``calls.reply_heard`` follows it
  (through the process's ``ReplyProgressWriter``): "" when its audio begins, the heard text
  as phrases finish playing, NULL once it played to the end or was repaired. If this
  process dies mid-reply, the session that picks the call up (any instance) repairs the
  checkpoint with that value before its reconnection line (``resume``), and only then
  clears it if it still holds what was read: a process that dies anywhere in between
  leaves it for the next stream (the repair is idempotent), and a newer value is never
  cleared.
* **A repair on resume that fails** keeps its text (``_kept``) until a repair with it
  succeeds. ``record_heard`` makes the thread's latest turn end with the text it is given,
  and the reconnection line (a signal run: no caller words) joins that turn; so the kept
  text goes in front of every later heard value, stored or repaired with: the turn then
  ends with all the caller heard of it, and a second drop cannot lose it. The caller's
  next turn would start a new turn, so it gets one last try just before that run
  (``graph_run``); if that fails too the text is given up rather than cut into the new reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from structlog.typing import FilteringBoundLogger

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.reply_heard import ReplyProgressWriter
from dialgraph.server.core.turns import CallSignal, RunnerEvent, TurnRunner

if TYPE_CHECKING:
    from dialgraph.telephony.call.reply import Reply


def _joined(before: str, heard: str) -> str:
    return f"{before} {heard}" if before and heard else before or heard


class HeardText:
    """The heard-text state of one call: its repairs, the value stored for other
    instances, and the text a failed repair keeps."""

    def __init__(
        self,
        *,
        ctx: CallContext,
        runner: TurnRunner,
        progress: ReplyProgressWriter,
        record: Callable[[CallEvent], None],
        log: FilteringBoundLogger,
    ) -> None:
        self._ctx = ctx
        self._sid = ctx.call_sid
        self._runner = runner
        self._progress = progress
        self._record = record
        self._log = log
        self._lock = asyncio.Lock()  # one graph run (or repair) at a time, in order
        # The latest repair: the next graph run waits for it (so the history it reads is
        # repaired), and so does the next repair (repairs in order).
        self._repair: asyncio.Task[None] | None = None
        # What the caller heard of this turn that the checkpoint still lacks (None: nothing),
        # and the part of it no transcript event holds.
        self._kept: str | None = None
        self._kept_unrecorded = ""
        self._audible = -1  # generation of the latest reply whose audio began

    # --- graph runs -----------------------------------------------------------------------------
    @asynccontextmanager
    async def graph_run(self) -> AsyncIterator[None]:
        """Hold the thread for one graph run: after every repair so far, and after a last
        try at the text a failed repair kept."""
        repair = self._repair
        if repair is not None:  # a cut reply's history is repaired before this run reads it
            await asyncio.wait((repair,))
        async with self._lock:
            if self._kept is not None:  # the turn it ends is repaired now or never
                await self._last_try()
            yield

    async def resume(self, signal: CallSignal) -> AsyncIterator[RunnerEvent]:
        """After a drop (run inside ``graph_run``): first repair the reply the previous
        stream (maybe another, dead instance) was playing with what the caller heard of it,
        then the reconnection line. The stored text is cleared only once the repair is
        done, and only if it still holds what was read; a failure or a crash anywhere
        leaves it for the next stream, and this call keeps it (``_kept``)."""
        try:
            heard = await self._progress.peek_heard(self._sid)
            if heard is not None:
                self._kept = self._kept_unrecorded = heard  # kept, even if the repair is cut short
                await self._runner.record_heard(self._ctx, heard)
                self._settle()
                self._log.info("interrupted reply repaired after a drop", heard_chars=len(heard))
        except Exception:  # the reconnection line must go out whatever the repair did
            self._log.exception("could not repair the interrupted reply")
        events = self._runner.respond(self._ctx, signal)
        try:
            async for event in events:
                yield event
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    # --- what a reply reports -------------------------------------------------------------------
    def audio_began(self, generation: int) -> None:
        """Reply ``generation`` sent its first audio: nothing of it heard yet."""
        self._audible = generation
        self._store("")

    def progressed(self, heard: str) -> None:
        """More of the reply in progress has been heard."""
        self._store(heard)

    def played(self, full_text: str) -> None:
        """The reply in progress played to the end: nothing of it to repair (a kept text
        takes it whole)."""
        if self._kept is not None:
            self._kept = _joined(self._kept, full_text)
        self._progress.set(self._sid, self._kept)

    def cut(self, tg: asyncio.TaskGroup | None, reply: Reply, heard: str) -> None:
        """Make the history say what the caller heard of ``reply``, once its tasks are done
        and in order with every other graph run and repair. ``tg`` is the call's task group,
        None once the call is over (the stored text is then the repair)."""
        if self._audible == reply.generation:  # until repaired, a resume repairs it
            self._store(heard)
        if tg is None:
            return
        repair = self._repair_reply(reply, heard, self._repair)
        self._repair = tg.create_task(repair, name=f"call-heard-{self._sid}")

    # --- internals ------------------------------------------------------------------------------
    def _store(self, heard: str) -> None:
        kept = self._kept
        self._progress.set(self._sid, heard if kept is None else _joined(kept, heard))

    async def _repair_reply(self, reply: Reply, heard: str, previous: asyncio.Task[None] | None) -> None:
        # The cut graph run has stopped, and earlier repairs are done, before this one.
        await asyncio.wait(reply.tasks if previous is None else (*reply.tasks, previous))
        kept = self._kept
        text = heard if kept is None else _joined(kept, heard)
        try:
            async with self._lock:
                await self._runner.record_heard(self._ctx, text)
        except Exception:  # the stored heard text stays: a resume may still repair it
            self._log.exception("could not record what the caller heard")
            if kept is not None:
                self._kept = text
        else:
            if kept is not None:
                self._kept = text
                self._settle()
            if self._audible <= reply.generation:  # never wipe a later reply's progress
                self._progress.set(self._sid, None)
        data: dict[str, object] = {"trigger": reply.timing.trigger, "timings": reply.timing.marks_ms()}
        if reply.failed:
            data["failed"] = reply.failed
        generated = reply.tracker.full_text()  # what was generated for speech: the console shows the unheard rest
        if generated.startswith(heard) and generated[len(heard) :].strip():
            data["unheard"] = generated[len(heard) :].strip()
        self._record(
            CallEvent(
                call_sid=self._sid,
                kind="turn",
                role="agent",
                text=heard,
                interrupted=True,
                latency_ms=reply.timing.latency_ms,
                data=data,
            )
        )

    async def _last_try(self) -> None:
        """Before the caller's next turn runs: repair the turn it ends with the kept text.
        After that run ``record_heard`` would cut the new reply instead, so a failure here
        gives the text up (cleared from the row; the transcript still has it)."""
        assert self._kept is not None
        try:
            await self._runner.record_heard(self._ctx, self._kept)
        except Exception:
            self._log.exception("could not repair the interrupted reply: what the caller heard of it is lost")
        else:
            self._log.info("interrupted reply repaired before the next turn", heard_chars=len(self._kept))
        self._settle()

    def _settle(self) -> None:
        """The kept text is repaired (or given up): clear it from the row if the row still
        holds it, and put the part no transcript event holds into the transcript."""
        text, unrecorded = self._kept, self._kept_unrecorded
        assert text is not None
        self._kept, self._kept_unrecorded = None, ""
        self._progress.clear_heard(self._sid, text)  # queued: nothing here to cancel it
        self._record(
            CallEvent(
                call_sid=self._sid,
                kind="turn",
                role="agent",
                text=unrecorded,
                interrupted=True,
                data={"trigger": "drop"},
            )
        )
