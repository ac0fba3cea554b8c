"""ReplyPipeline: the agent's replies of one call, from graph events to outbound frames.

Per reply, two tasks in the session's ``TaskGroup``: a runner task (graph events -> phrase
chunker) and a synth task (phrases -> TTS -> 20 ms frames for the ``OutboundPacer``). A
reply whose run or synthesis raised ends like an interrupted one (the run's failure adds an
apology). A cut reply's history is repaired to what the caller heard (``repair_after``);
repairs and graph runs go through ``_runner_lock`` in order (``_repair``).

A repair on resume that fails keeps its heard text (``_unrepaired``) until a repair with it
succeeds. ``record_heard`` makes the thread's *latest turn* end with the text it is given,
and the reconnection line (a signal run: no caller words) joins that turn; so the kept text
goes in front of every later heard value, stored (``set_heard``) or repaired with
(``_repair_reply``): the turn then ends with all the caller heard of it. The caller's next
turn would start a new one, so it gets one last try just before that run (``_last_try``);
if that fails too the text is given up rather than cut into the new reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from structlog.typing import FilteringBoundLogger

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.turns import CallSignal, EndCallRequest, RunnerEvent, TextChunk, TransferRequest, TurnRunner
from dialgraph.telephony.call.pacer import OutboundPacer
from dialgraph.telephony.call.phrases import PhraseChunker
from dialgraph.telephony.call.playback import PlaybackTracker
from dialgraph.telephony.call.reply_progress import ReplyProgressWriter
from dialgraph.telephony.call.state import CallState, Reply
from dialgraph.telephony.speech.base import FRAME_BYTES, AudioChunk, ProviderError, SpeechSynthesizer

APOLOGY = "Sorry, I'm having trouble right now. Could you say that again?"


class _Unattributed(str):
    """A phrase the session says on its own (the apology after a failed turn): spoken like
    any other, but never part of what the caller heard *of the graph's reply*."""


_APOLOGY = _Unattributed(APOLOGY)


def _joined(before: str, heard: str) -> str:
    return f"{before} {heard}" if before and heard else before or heard


class ReplyPipeline:
    """Runs each reply the session begins and repairs the history of those cut short."""

    def __init__(
        self,
        *,
        ctx: CallContext,
        state: CallState,
        tracker: PlaybackTracker,
        out: OutboundPacer,
        synthesizer: SpeechSynthesizer,
        runner: TurnRunner,
        progress: ReplyProgressWriter,
        record: Callable[[CallEvent], None],
        log: FilteringBoundLogger,
    ) -> None:
        self._ctx = ctx
        self._state = state
        self._tracker = tracker
        self._out = out
        self._synth = synthesizer
        self._runner = runner
        self._progress = progress
        self._record = record
        self._log = log
        self._runner_lock = asyncio.Lock()  # one graph run (or heard-text repair) at a time, in order
        # The latest heard-text repair: the next graph run waits for it (so the history it reads
        # is repaired), and so does the next repair (repairs in order).
        self._repair: asyncio.Task[None] | None = None
        # What the caller heard of this turn that the checkpoint still lacks: a repair on resume
        # that has not succeeded (None: nothing). ``_unrecorded``: the part no transcript holds.
        self._unrepaired: str | None = None
        self._unrecorded = ""

    def start(self, tg: asyncio.TaskGroup, reply: Reply, events: Callable[[], AsyncIterator[RunnerEvent]]) -> None:
        sid = self._state.call_sid
        reply.tasks = (
            tg.create_task(self._pump_runner(reply, events), name=f"call-runner-{sid}"),
            tg.create_task(self._pump_synth(reply), name=f"call-tts-{sid}"),
        )

    async def resume(self, signal: CallSignal) -> AsyncIterator[RunnerEvent]:
        """After a drop: first repair the reply the previous stream (maybe another, dead
        instance) was playing with what the caller heard of it, then the reconnection line.
        The stored heard text is cleared only once the repair is done, and only if it still
        holds what was read: a failure or a crash anywhere leaves it for the next stream,
        and this session keeps it (``_unrepaired``) so no later value replaces it."""
        try:
            heard = await self._progress.peek_heard(self._state.call_sid)
            if heard is not None:
                self._unrepaired = self._unrecorded = heard  # kept, even if the repair is cut short
                await self._runner.record_heard(self._ctx, heard)
                self._settle_unrepaired()
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

    async def _pump_runner(self, reply: Reply, events: Callable[[], AsyncIterator[RunnerEvent]]) -> None:
        chunker = PhraseChunker()
        put = reply.phrases.put_nowait
        try:
            repair = self._repair
            if repair is not None:  # a cut reply's history is repaired before this run reads it
                await asyncio.wait((repair,))
            async with self._runner_lock:
                if self._unrepaired is not None:  # the turn it ends is repaired now or never
                    await self._last_try()
                stream = events()
                try:
                    async for event in stream:
                        if isinstance(event, TextChunk):
                            for phrase in chunker.push(event.text):
                                put(phrase)
                        elif isinstance(event, TransferRequest | EndCallRequest):
                            reply.request = event
                finally:
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()
            for phrase in chunker.flush():
                put(phrase)
        except Exception as exc:  # never CancelledError (a barge-in): one failed turn is not the call's end
            self._reply_failed(reply, "runner", exc)
            put(_APOLOGY)
        finally:
            put(None)

    async def _pump_synth(self, reply: Reply) -> None:
        gen, st, tracker = reply.generation, self._state, self._tracker
        queue = reply.phrases

        async def phrases() -> AsyncIterator[str]:
            while (phrase := await queue.get()) is not None:
                if gen == st.generation:  # the apology is heard, but is no part of the graph's reply
                    tracker.add_phrase("" if isinstance(phrase, _Unattributed) else phrase)
                yield phrase

        fs = self._ctx.flow_settings
        chunks = self._synth.synthesize(phrases(), voice=fs.voice, language=fs.language, model=fs.tts_model)
        try:
            async for chunk in chunks:
                if gen != st.generation:
                    break
                self._enqueue_audio(reply, chunk)
        except Exception as exc:  # the reply stops where its audio stops: an interruption, not an end
            self._reply_failed(reply, "synth", exc)
            reply.tasks[0].cancel()  # the graph run: its history is repaired to what was heard
            reply.buf.clear()  # a partial frame is no phrase end
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if gen == st.generation:
            if reply.buf:  # a synthesizer that never flagged ``last``
                self._emit(reply, bytes(reply.buf), reply.buf_phrase, end=True)
                reply.buf.clear()
            self._out.reply_end(gen)

    def _enqueue_audio(self, reply: Reply, chunk: AudioChunk) -> None:
        """Cut TTS audio into 20 ms frames; hold the last partial frame until the phrase ends."""
        self._tracker.add_audio(chunk.phrase, len(chunk.audio))
        buf = reply.buf
        if chunk.phrase != reply.buf_phrase:
            if buf:
                self._emit(reply, bytes(buf), reply.buf_phrase, end=True)
                buf.clear()
            reply.buf_phrase = chunk.phrase
        buf += chunk.audio
        if chunk.last:
            if buf:
                self._emit(reply, bytes(buf), chunk.phrase, end=True)
                buf.clear()
            reply.buf_phrase = -1
        else:
            n = (len(buf) - 1) // FRAME_BYTES * FRAME_BYTES
            if n > 0:
                self._emit(reply, bytes(buf[:n]), chunk.phrase, end=False)
                del buf[:n]

    def _emit(self, reply: Reply, audio: bytes, phrase: int, *, end: bool) -> None:
        self._out.audio(reply.generation, phrase, audio, phrase_end=end)

    def _reply_failed(self, reply: Reply, stage: str, exc: Exception) -> None:
        """A turn's graph run or its synthesis raised: log it, drop any transfer or hang-up
        it asked for, and let the reply end as an interrupted one (the call goes on)."""
        if isinstance(exc, ProviderError):
            self._log.warning("reply failed", stage=stage, provider=exc.provider, error=str(exc))
        else:
            self._log.error("reply failed", stage=stage, exc_info=exc)
        reply.failed = reply.failed or stage
        reply.request = None
        self._record(CallEvent(call_sid=self._state.call_sid, kind="error", role="system", data={"stage": stage}))

    def set_heard(self, heard: str | None) -> None:
        """Store what the caller has heard of the reply in progress ("" = its audio began;
        None = it played to the end: nothing of it to repair). After a failed repair the kept
        text goes in front, and a reply played to the end joins it whole."""
        kept = self._unrepaired
        if kept is not None:
            if heard is None:
                heard = self._unrepaired = _joined(kept, self._tracker.full_text())
            else:
                heard = _joined(kept, heard)
        self._progress.set(self._state.call_sid, heard)

    def repair_after(self, tg: asyncio.TaskGroup | None, reply: Reply, heard: str) -> None:
        """Make the history say what the caller heard of ``reply``, once its tasks are done
        and in order with every other graph run and repair (``_repair``). ``tg`` is the
        session's task group, None once the call is over."""
        st = self._state
        if st.first_audio_gen == reply.generation:  # until repaired, a resume repairs it
            self.set_heard(heard)
        if tg is None:  # the call is over: the stored heard text is the repair
            return
        previous = self._repair
        repair = self._repair_reply(reply, heard, previous)
        self._repair = tg.create_task(repair, name=f"call-heard-{st.call_sid}")

    async def _repair_reply(self, reply: Reply, heard: str, previous: asyncio.Task[None] | None) -> None:
        # The cut graph run has stopped, and earlier repairs are done, before this one.
        await asyncio.wait(reply.tasks if previous is None else (*reply.tasks, previous))
        st = self._state
        kept = self._unrepaired
        text = heard if kept is None else _joined(kept, heard)
        try:
            async with self._runner_lock:
                await self._runner.record_heard(self._ctx, text)
        except Exception:  # the stored heard text stays: a resume may still repair it
            self._log.exception("could not record what the caller heard")
            if kept is not None:
                self._unrepaired = text
        else:
            if kept is not None:
                self._unrepaired = text
                self._settle_unrepaired()
            if st.first_audio_gen <= reply.generation:  # never wipe a later reply's progress
                self._progress.set(st.call_sid, None)
        self._record(
            CallEvent(
                call_sid=st.call_sid,
                kind="turn",
                role="agent",
                text=heard,
                interrupted=True,
                latency_ms=reply.timing.latency_ms,
                data={"trigger": reply.timing.trigger, **({"failed": reply.failed} if reply.failed else {})},
            )
        )

    async def _last_try(self) -> None:
        """Before the caller's next turn runs: repair the turn it ends with the kept text.
        After that run ``record_heard`` would cut the new reply instead, so a failure here
        gives the text up (cleared from the row; the transcript still has it)."""
        assert self._unrepaired is not None
        try:
            await self._runner.record_heard(self._ctx, self._unrepaired)
        except Exception:
            self._log.exception("could not repair the interrupted reply: what the caller heard of it is lost")
        else:
            self._log.info("interrupted reply repaired before the next turn", heard_chars=len(self._unrepaired))
        self._settle_unrepaired()

    def _settle_unrepaired(self) -> None:
        """The kept text is repaired (or given up): clear it from the row if the row still
        holds it, and put the part no transcript event holds into the transcript."""
        text, unrecorded = self._unrepaired, self._unrecorded
        assert text is not None
        self._unrepaired, self._unrecorded = None, ""
        sid = self._state.call_sid
        self._progress.clear_heard(sid, text)  # queued: nothing here to cancel it
        self._record(
            CallEvent(
                call_sid=sid, kind="turn", role="agent", text=unrecorded, interrupted=True, data={"trigger": "drop"}
            )
        )
