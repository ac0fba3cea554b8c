"""Reply: one agent reply, from graph events to what the caller heard of it (in the spirit
of LiveKit's ``SpeechHandle``).

A ``Reply`` owns its number (``generation``, in its mark names), its two tasks in the call's
``TaskGroup`` -- a runner task (graph events -> phrase chunker -> its phrase queue) and a
synth task (phrases -> TTS -> 20 ms frames for the ``AudioPacer``) --, its playback
tracking, and its outcome:

* ``Played`` -- every mark came back: the caller heard it all (it may carry a transfer or
  hang-up request, which the session carries out);
* ``Interrupted`` -- ``interrupt()`` (a barge-in): ``clear`` sent, queued audio dropped,
  tasks cancelled, the history repaired to the heard text;
* ``Failed`` -- its run or synthesis raised (the run's failure adds an apology): what was
  queued plays out, then the history is repaired to what was heard, as if interrupted.

The pacer reports each message it sent to the reply it belongs to (``frame_sent``,
``audio_sent``); the session reports mark echoes (``mark_echoed``). The reply reports to
the session with two events (``AudioStarted``, ``Finished``), and keeps the call's
``HeardText`` up to date. ``await reply`` (or ``wait()``) returns the outcome.

A reply cut by ``interrupt`` is ``cut``: it queues no more audio and names no more marks
(the one stale-audio check; ``clear`` dropped what was queued).

A reply started ``held`` (a preemptive reply: its caller turn is not confirmed yet) runs and
synthesises as usual but keeps its 20 ms frames to itself: ``release()`` hands them to the
pacer in order (and the end of its audio, if synthesis is done), after which it plays like
any reply; ``discard()`` drops them: no audio, no ``clear``, no repair (nothing of it
reached the caller or the thread), outcome ``Interrupted("")``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from typing import Any

from structlog.typing import FilteringBoundLogger

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.costs import CallMeter
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.turns import EndCallRequest, RunnerEvent, TextChunk, TransferRequest, TurnUsage
from dialgraph.telephony.call.heard import HeardText
from dialgraph.telephony.call.pacer import AudioPacer
from dialgraph.telephony.call.phrases import PhraseChunker
from dialgraph.telephony.call.playback import PlaybackTracker
from dialgraph.telephony.call.state import TurnTiming
from dialgraph.telephony.speech.base import FRAME_BYTES, AudioChunk, ProviderError, SpeechSynthesizer

APOLOGY = "Sorry, I'm having trouble right now. Could you say that again?"


class _Unattributed(str):
    """A phrase the session says on its own (the apology after a failed turn): spoken like
    any other, but never part of what the caller heard *of the graph's reply*."""


_APOLOGY = _Unattributed(APOLOGY)

Request = TransferRequest | EndCallRequest


# --- outcomes -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Played:
    """The reply played to the end: the caller heard ``text``."""

    text: str
    request: Request | None = None


@dataclass(frozen=True, slots=True)
class Interrupted:
    """Cut by the caller (or the session) after the caller heard ``heard``."""

    heard: str


@dataclass(frozen=True, slots=True)
class Failed:
    """Its graph run or synthesis (``stage``: "runner" | "synth") raised; what was queued
    played, and the caller heard ``heard``."""

    stage: str
    heard: str


ReplyOutcome = Played | Interrupted | Failed


# --- events to the session ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AudioStarted:
    """The reply's first audio went out."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Finished:
    """The reply is over (reported in the task that ended it, before anything else runs)."""

    reply: Reply
    outcome: ReplyOutcome


ReplyEvent = AudioStarted | Finished


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """What every reply of one call shares; built once per call by the session."""

    ctx: CallContext
    synthesizer: SpeechSynthesizer
    pacer: AudioPacer
    heard: HeardText
    record: Callable[[CallEvent], None]  # the call log
    report: Callable[[ReplyEvent], None]  # the session
    log: FilteringBoundLogger
    mark_every_bytes: int
    clock: Callable[[], float]
    meter: CallMeter | None = None  # the call's usage: model tokens, TTS characters


class Reply:
    """One agent reply; ``start`` runs it, ``interrupt`` cuts it, ``await`` it for its outcome."""

    __slots__ = (
        "_buf",
        "_buf_phrase",
        "_done",
        "_env",
        "_held_audio",
        "_held_end",
        "_outcome",
        "_phrases",
        "_phrases_heard",
        "_tg",
        "cut",
        "failed",
        "generation",
        "held",
        "request",
        "runner_task",
        "synth_task",
        "timing",
        "tracker",
    )

    def __init__(self, env: ReplyContext, *, generation: int, trigger: str, held: bool = False) -> None:
        self._env = env
        self.held = held  # frames kept back until ``release`` (a preemptive reply)
        self._held_audio: list[tuple[int, bytes, bool]] = []
        self._held_end = False
        self.generation = generation
        self.timing = TurnTiming(generation, trigger, env.clock())
        self.tracker = PlaybackTracker(mark_every_bytes=env.mark_every_bytes)
        self.tracker.start_reply(generation)
        self.request: Request | None = None
        self.failed = ""  # "runner" | "synth": cut short by an error, repaired like an interruption
        self.cut = False  # interrupted: queues no audio, names no marks
        self.runner_task: asyncio.Task[None] | None = None
        self.synth_task: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._phrases: asyncio.Queue[str | None] = asyncio.Queue()
        self._buf = bytearray()  # the partial 20 ms frame of the phrase being synthesized
        self._buf_phrase = -1
        self._phrases_heard = 0
        self._outcome: ReplyOutcome | None = None
        self._done: asyncio.Future[ReplyOutcome] = asyncio.get_running_loop().create_future()

    # --- lifetime -------------------------------------------------------------------------------
    def start(self, tg: asyncio.TaskGroup, events: Callable[[], AsyncIterator[RunnerEvent]]) -> None:
        """Run ``events()`` (inside the call's ``HeardText.graph_run``) and speak what it says."""
        sid = self._env.ctx.call_sid
        self._tg = tg
        self.runner_task = tg.create_task(self._run_graph(events), name=f"call-runner-{sid}")
        self.synth_task = tg.create_task(self._speak(), name=f"call-tts-{sid}")

    @property
    def tasks(self) -> tuple[asyncio.Task[None], ...]:
        return tuple(t for t in (self.runner_task, self.synth_task) if t is not None)

    def interrupt(self) -> None:
        """Cut the reply where the caller is: ``clear`` Twilio's buffer, drop queued audio,
        cancel its tasks, and repair the history to what was heard (once they have stopped)."""
        if self._outcome is not None:
            return
        self.cut = True
        self.tracker.clear()  # marks echoed from now on prove nothing
        heard = self.tracker.heard_text()
        self._env.pacer.clear()
        for task in self.tasks:
            task.cancel()
        self.timing.interrupted = True
        self.timing.done_at = self._env.clock()
        outcome = Interrupted(heard)
        self._finish(outcome)
        self._env.heard.cut(self._tg, self, heard)
        self._env.report(Finished(self, outcome))

    def release(self) -> None:
        """A held reply's turn is confirmed: its audio goes out now, and from now on as it comes."""
        if not self.held or self._outcome is not None:
            return
        self.held = False
        pacer = self._env.pacer
        for phrase, audio, end in self._held_audio:
            pacer.audio(self, phrase, audio, phrase_end=end)
        self._held_audio.clear()
        if self._held_end:
            pacer.reply_end(self)

    def discard(self) -> None:
        """A held reply's turn was not the caller's: stop it; nothing of it was sent or saved."""
        if not self.held or self._outcome is not None:
            return
        self.cut = True
        self._held_audio.clear()
        for task in self.tasks:
            task.cancel()
        self.timing.interrupted = True
        self.timing.done_at = self._env.clock()
        self._finish(Interrupted(""))

    def done(self) -> bool:
        return self._outcome is not None

    @property
    def outcome(self) -> ReplyOutcome | None:
        return self._outcome

    async def wait(self) -> ReplyOutcome:
        """The outcome, once the reply is over (cancelling the wait leaves the reply alone)."""
        return await asyncio.shield(self._done)

    def __await__(self) -> Generator[Any, None, ReplyOutcome]:
        return self.wait().__await__()

    # --- reports: the pacer (sent audio) and the session (mark echoes) ---------------------------
    def frame_sent(self, phrase: int, nbytes: int, phrase_end: bool) -> str | None:
        """A message of this reply went out; returns the name of a mark to send after it."""
        if self.cut:  # cut during the send: no mark for a dead reply
            return None
        if self.timing.first_audio_at is None:
            self.timing.first_audio_at = self._env.clock()
            self._env.heard.audio_began(self.generation)
            self._env.report(AudioStarted(self))
        return self.tracker.frame_sent(phrase, nbytes, phrase_end)

    def audio_sent(self) -> None:
        """The reply's last audio went out."""
        if self._outcome is not None:
            return
        self.tracker.finish()
        if self.tracker.all_played:  # no audio at all, or its marks came back already
            self._played()

    def mark_echoed(self, name: str) -> None:
        """Twilio echoed mark ``name``: the audio before it has played."""
        tracker = self.tracker
        if self._outcome is not None or not tracker.mark_echoed(name):
            return
        if tracker.all_played:
            self._played()
        elif tracker.phrases_heard != self._phrases_heard:
            self._phrases_heard = tracker.phrases_heard
            self._env.heard.progressed(tracker.heard_text())

    # --- internals ------------------------------------------------------------------------------
    def _finish(self, outcome: ReplyOutcome) -> None:
        self._outcome = outcome
        self._done.set_result(outcome)

    def _played(self) -> None:
        """Every mark came back (or there was no audio)."""
        env, timing = self._env, self.timing
        timing.done_at = env.clock()
        outcome: ReplyOutcome
        if self.failed:  # cut short by an error: what played is what the history keeps
            timing.interrupted = True
            outcome = Failed(self.failed, self.tracker.heard_text())
            self._finish(outcome)
            env.heard.cut(self._tg, self, outcome.heard)
        else:
            outcome = Played(self.tracker.full_text(), self.request)
            self._finish(outcome)
            env.heard.played(outcome.text)
            env.record(
                CallEvent(
                    call_sid=env.ctx.call_sid,
                    kind="turn",
                    role="agent",
                    text=outcome.text,
                    latency_ms=timing.latency_ms,
                    data={
                        "trigger": timing.trigger,
                        "timings": timing.marks_ms(),
                        **({"preempted": True} if timing.preempted else {}),
                    },
                )
            )
        env.report(Finished(self, outcome))

    async def _run_graph(self, events: Callable[[], AsyncIterator[RunnerEvent]]) -> None:
        chunker = PhraseChunker()
        put = self._phrases.put_nowait
        try:
            async with self._env.heard.graph_run():
                stream = events()
                try:
                    async for event in stream:
                        if isinstance(event, TextChunk):
                            if self.timing.first_token_at is None:
                                self.timing.first_token_at = self._env.clock()
                            for phrase in chunker.push(event.text):
                                put(phrase)
                        elif isinstance(event, TransferRequest | EndCallRequest):
                            self.request = event
                        elif isinstance(event, TurnUsage) and self._env.meter is not None:
                            self._env.meter.add_tokens(event.model, event.input_tokens, event.output_tokens)
                finally:
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()
            for phrase in chunker.flush():
                put(phrase)
        except Exception as exc:  # never CancelledError (a barge-in): one failed turn is not the call's end
            self._fail("runner", exc)
            put(_APOLOGY)
        finally:
            put(None)

    async def _speak(self) -> None:
        queue, tracker, meter = self._phrases, self.tracker, self._env.meter

        async def phrases() -> AsyncIterator[str]:
            while (phrase := await queue.get()) is not None:
                if meter is not None:  # billed once handed to the synthesiser, heard or not
                    meter.add_tts(len(phrase))
                # The apology is heard, but is no part of the graph's reply.
                tracker.add_phrase("" if isinstance(phrase, _Unattributed) else phrase)
                yield phrase

        fs = self._env.ctx.flow_settings
        chunks = self._env.synthesizer.synthesize(phrases(), voice=fs.voice, language=fs.language, model=fs.tts_model)
        try:
            async for chunk in chunks:
                if self.cut:
                    break
                if self.timing.first_tts_audio_at is None:
                    self.timing.first_tts_audio_at = self._env.clock()
                self._enqueue_audio(chunk)
        except Exception as exc:  # the reply stops where its audio stops: an interruption, not an end
            self._fail("synth", exc)
            if self.runner_task is not None:
                self.runner_task.cancel()  # the graph run: its history is repaired to what was heard
            self._buf.clear()  # a partial frame is no phrase end
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if not self.cut:
            if self._buf:  # a synthesizer that never flagged ``last``
                self._emit(bytes(self._buf), self._buf_phrase, end=True)
                self._buf.clear()
            if self.held:
                self._held_end = True
            else:
                self._env.pacer.reply_end(self)

    def _enqueue_audio(self, chunk: AudioChunk) -> None:
        """Cut TTS audio into 20 ms frames; hold the last partial frame until the phrase ends."""
        self.tracker.add_audio(chunk.phrase, len(chunk.audio))
        buf = self._buf
        if chunk.phrase != self._buf_phrase:
            if buf:
                self._emit(bytes(buf), self._buf_phrase, end=True)
                buf.clear()
            self._buf_phrase = chunk.phrase
        buf += chunk.audio
        if chunk.last:
            if buf:
                self._emit(bytes(buf), chunk.phrase, end=True)
                buf.clear()
            self._buf_phrase = -1
        else:
            n = (len(buf) - 1) // FRAME_BYTES * FRAME_BYTES
            if n > 0:
                self._emit(bytes(buf[:n]), chunk.phrase, end=False)
                del buf[:n]

    def _emit(self, audio: bytes, phrase: int, *, end: bool) -> None:
        if self.held:
            self._held_audio.append((phrase, audio, end))
        else:
            self._env.pacer.audio(self, phrase, audio, phrase_end=end)

    def _fail(self, stage: str, exc: Exception) -> None:
        """The graph run or the synthesis raised: log it, drop any transfer or hang-up it
        asked for, and let the reply end as an interrupted one (the call goes on)."""
        log = self._env.log
        if isinstance(exc, ProviderError):
            log.warning("reply failed", stage=stage, provider=exc.provider, error=str(exc))
        else:
            log.error("reply failed", stage=stage, exc_info=exc)
        self.failed = self.failed or stage
        self.request = None
        self._env.record(CallEvent(call_sid=self._env.ctx.call_sid, kind="error", role="system", data={"stage": stage}))
