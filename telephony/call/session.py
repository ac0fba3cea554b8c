"""CallSession: one Twilio media stream, from ``start`` to ``stop``.

One session per call owns its state (``CallState``), the reply in progress, the turn
policy, and its tasks, all in ONE ``asyncio.TaskGroup``:

* reader -- moves text frames into the stream's ``MediaStreamProtocol`` (handshake done by
  the media route; stream id, gaps, duplicates and malformed frames are its business) and
  acts on its events: media -> recognizer + VAD -> policy; marks -> the reply in progress;
  DTMF -> a turn.
* recognition -- ASR events -> ``TurnPolicy`` -> turns and barge-ins.
* writer -- ``AudioPacer.run``, the ONLY task that writes to the socket: ``clear``/close
  first, then audio paced at real time plus ``playback_lead_ms``, with the marks each reply
  asks for.
* call log -- transcript turns and call events, recorded on the process-wide
  ``server.core.call_events.CallEventWriter`` (no task here: it writes every call's events in
  one transaction a round), flushed before the call row gets its outcome and on the way out.
  Each caller turn's event carries ``data.language``: what the recognizer heard its finals
  in (``Final.language``), else ``server.core.language.detect`` of its text (``turn_language``).
* watchdog -- ends the call when no frame arrived for ``inbound_timeout_s`` (a dead socket).
* deadline (with ``max_call_s``) -- at the call's maximum length: no new caller turn, the
  reply in progress finishes, then a fixed goodbye (no model) and the call ends
  (outcome ``max_call_length``).
* cost (with a ``CallMeter``): the stream's usage is counted in memory (stream time, the
  audio pushed to the recogniser from the protocol's frame counters, TTS characters and
  model tokens from the replies) and added to the call row once, on the way out
  (``server.core.costs.record_usage``: a reconnected call's streams accumulate). With a
  ``SpendCap``, each caller turn first checks the running cost against the day's budgets:
  once spent, that turn becomes ``CallSignal("budget_spent")`` (a fixed offer to take a
  message or transfer, no model) and every later one is marked ``offline`` (the free
  offline model answers); the call is never cut mid-sentence.
* per reply (``telephony.call.reply.Reply``): its runner and synth tasks. The reply reports
  ``AudioStarted`` and ``Finished`` here; what the caller heard of it goes to the call's
  ``HeardText`` (checkpoint repairs, and ``calls.reply_heard`` on the process-wide
  ``ReplyProgressWriter`` so that another instance can repair the checkpoint if this process
  dies mid-reply; its last value is flushed on the way out).

Leaving the group (``stop``, socket closed, ``end()``, an error) cancels and awaits every
task; the recognition stream is closed after it. Nothing outlives the call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, runtime_checkable

import structlog

from dialgraph.server.core import call_store, costs
from dialgraph.server.core.call_events import CallEventWriter
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.enums import CallOutcome, SignalKind, StreamSignal
from dialgraph.server.core.language import detect
from dialgraph.server.core.live import SessionEnded, SessionStarted, SessionTraced, TurnSpan, hub
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.reply_heard import ReplyProgressWriter
from dialgraph.server.core.turns import (
    BUDGET_SPENT,
    CallerDigits,
    CallerText,
    CallSignal,
    EndCallRequest,
    PreemptingRunner,
    PreemptiveRun,
    RunnerEvent,
    TextChunk,
    TransferRequest,
    TurnRunner,
)
from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.call.call_log import CallLog
from dialgraph.telephony.call.heard import HeardText
from dialgraph.telephony.call.pacer import AudioPacer, StreamClosedByServer, mark_every_bytes_for, message_ms_for
from dialgraph.telephony.call.recording import CallRecorder
from dialgraph.telephony.call.reply import APOLOGY as APOLOGY  # re-exported: tests and callers import it from here
from dialgraph.telephony.call.reply import AudioStarted, Interrupted, Played, Reply, ReplyContext, ReplyEvent
from dialgraph.telephony.call.state import CallState, TurnTiming
from dialgraph.telephony.call.turn_policy import BargeIn, Preempt, StartTurn, TurnPolicy, TurnState, words_of
from dialgraph.telephony.speech.base import (
    FRAME_BYTES,
    Final,
    Interim,
    RecognitionStream,
    SpeechSynthesizer,
    VoiceActivityDetector,
    prefer_low_latency,
)
from dialgraph.telephony.twilio import codec
from dialgraph.telephony.twilio.protocol import Gap, MediaStreamProtocol, Rejected

log = structlog.get_logger(__name__)


@dataclasses.dataclass(slots=True)
class _Preempted:
    """A reply started on the caller's pause (``Preempt``), held until the turn ends."""

    words: list[str]
    said: CallerText  # what the run was given (``offline`` once a spend cap tripped)
    run: PreemptiveRun
    reply: Reply


# Said when a call reaches its maximum length (``max_call_s``): fixed words, no model.
TIME_LIMIT_GOODBYE = "I'm sorry, we've reached the time limit for this call. Thank you for calling, goodbye."
REPLY_GRACE_S = 15.0  # at the deadline, the reply in progress may play this long before it is cut
GOODBYE_WAIT_S = 30.0  # the goodbye's marks not back by then (a stuck socket): end the call anyway
FRAME_S = 0.020  # one Media Streams frame
MAX_SPEECH_END_LAG_S = 5.0  # an end of speech further back than this is a clock mismatch, not a wait


def turn_language(turn: StartTurn) -> str:
    """The language a caller turn was in: what the recognizer heard its finals in (Deepgram
    with ``language=multi``; Hindi and English finals together are ``hi-en``), else what
    ``dialgraph.server.core.language.detect`` reads in its text."""
    heard = turn.languages
    if not heard:
        return detect(turn.text)
    if len(heard) == 1:
        return heard[0]
    hindi = any(lang == "hi-en" or lang.split("-")[0] == "hi" for lang in heard)
    english = any(lang == "hi-en" or lang.split("-")[0] == "en" for lang in heard)
    return "hi-en" if hindi and english else heard[0]


class MediaSocket(Protocol):
    """The transport under a session (the route adapts Starlette's WebSocket)."""

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the peer has gone."""

    async def send(self, text: str) -> None:
        """Send a text frame; raises ``SocketClosed`` when the peer has gone."""

    async def close(self, code: int = 1000) -> None: ...


@runtime_checkable
class PushingSocket(Protocol):
    """A ``MediaSocket`` that can hand each frame to the session as it is parsed
    (``server/routes/media_socket.py``, picows): no reader task woken per frame."""

    def push_to(self, handler: Callable[[str | bytes | None], None] | None) -> None:
        """From now on call ``handler(frame)`` for every frame, queued ones first, and
        ``handler(None)`` once the peer has gone; ``None`` stops it (back to ``receive``)."""


class SocketClosed(Exception):
    """The WebSocket is gone."""


class _CallEnded(Exception):
    """Leaves the task group: the call is over (stop, socket closed, server closed it)."""


class CallSession:
    """Runs one call; ``await run()`` returns when the call is over. ``media`` is the
    stream's protocol object, its handshake done (``start`` read)."""

    def __init__(
        self,
        *,
        socket: MediaSocket,
        ctx: CallContext,
        media: MediaStreamProtocol,
        db: Database,
        recognition: RecognitionStream,
        synthesizer: SpeechSynthesizer,
        vad: VoiceActivityDetector,
        runner: TurnRunner,
        policy: TurnPolicy,
        progress: ReplyProgressWriter,
        call_events: CallEventWriter,
        signal: str = "",
        playback_lead_ms: int = 200,
        clock: Callable[[], float] = time.monotonic,
        on_finished: Callable[[CallSession], None] | None = None,
        inbound_timeout_s: float = 10.0,
        max_call_s: float | None = None,
        meter: costs.CallMeter | None = None,
        spend_cap: costs.SpendCap | None = None,
        recorder: CallRecorder | None = None,
        preemptive: bool = True,
    ) -> None:
        self.ctx = ctx
        self.meter = meter
        self._spend_cap = spend_cap if meter is not None else None
        self.state = CallState(call_sid=ctx.call_sid, media=media)
        self.policy = policy
        self.timings: list[TurnTiming] = []
        self._socket = socket
        self._media = media
        self._db = db
        self._stream = recognition
        self._low_latency = False  # asked of the stream while the agent holds the floor
        self._vad = vad
        self._runner = runner
        # Replies started on the caller's pause: a runner that can (GraphRunner), when on.
        self._preemptive = preemptive and isinstance(runner, PreemptingRunner)
        self._preempted: _Preempted | None = None
        self._signal = StreamSignal.parse(signal)
        self._clock = clock
        self._speech_end: float | None = None  # the caller's last word of this turn ended (session clock)
        self._on_finished = on_finished
        self._inbound_timeout_s = inbound_timeout_s
        self._max_call_s = max_call_s  # seconds left of the call (None: no limit; <= 0: over already)
        self._frames_seen = 0  # every inbound frame; the watchdog only looks at it once a second
        self._log = log.bind(call_sid=ctx.call_sid)
        self._recorder = recorder  # the flow records its calls: inbound and sent audio, in memory
        # Outbound message size follows the lead (20 ms at 120 ms, 100 ms at 200 ms): see pacer.py.
        message_bytes = message_ms_for(playback_lead_ms) // 20 * FRAME_BYTES
        self._out = AudioPacer(
            stream_sid=media.stream_sid,
            send=socket.send,
            close=socket.close,
            lead_s=min(playback_lead_ms, 200) / 1000,
            message_bytes=message_bytes,
            clock=clock,
            tap=recorder,
        )
        self._call_log = CallLog(call_events, call_sid=ctx.call_sid, stream_sid=media.stream_sid)
        self._record = hub.tee(ctx.call_sid, self._call_log.record)  # the live API and /metrics see it too
        self._progress = progress  # flushed on the way out
        self._heard = HeardText(ctx=ctx, runner=runner, progress=progress, record=self._record, log=self._log)
        self._replies = ReplyContext(
            ctx=ctx,
            synthesizer=synthesizer,
            pacer=self._out,
            heard=self._heard,
            record=self._record,
            report=self._on_reply,
            log=self._log,
            mark_every_bytes=mark_every_bytes_for(message_bytes),
            clock=clock,
            meter=meter,
        )
        self._tg: asyncio.TaskGroup | None = None
        self._closed = asyncio.Event()
        self._run_task: asyncio.Task[Any] | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        self._run_task = asyncio.current_task()
        sid = self.state.call_sid
        if self.meter is not None:
            self.meter.start()
        self._call_log.open()
        ctx = self.ctx
        self._began = (time.time(), self._clock())  # tracing: the session clock on the wall clock
        hub.publish(SessionStarted(sid, ctx.flow, ctx.direction, resumed=self._signal is not None))
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._read_loop(), name=f"call-read-{sid}")
                tg.create_task(self._recognition_loop(), name=f"call-asr-{sid}")
                tg.create_task(self._out.run(), name=f"call-write-{sid}")
                tg.create_task(self._watch_inbound(), name=f"call-watchdog-{sid}")
                if self._max_call_s is not None:
                    tg.create_task(self._watch_deadline(self._max_call_s), name=f"call-deadline-{sid}")
                self._open_call()
        except* (_CallEnded, SocketClosed, StreamClosedByServer):
            pass
        except* Exception as group:  # last resort: this call only
            self.state.end_reason = self.state.end_reason or "error"
            self._log.error("call failed", exc_info=group)
        finally:
            self._tg = None
            try:
                await self._stream.aclose()
            finally:
                await self._call_log.flush()
                await self._progress.flush_call(sid)  # a dropped stream leaves its heard text behind
                await self._record_usage()
                await self._save_recording()
                self._closed.set()
                st = self.state
                reason = st.end_reason or "closed"
                hub.publish(
                    SessionEnded(
                        sid, ctx.flow, ctx.direction, reason, st.barge_ins, st.preempted, st.preempts_discarded
                    )
                )
                if hub.traced:
                    hub.notify(self._timeline(reason))  # tracing (server/core/tracing.py), off by default
                self._log.info(
                    "call session ended",
                    reason=self.state.end_reason or "closed",
                    frames_in=self.state.frames_in,
                    silence_frames=self.state.silence_frames,
                    duplicates=self.state.duplicates,
                    protocol_errors=self.state.protocol_errors,
                    barge_ins=self.state.barge_ins,
                )
                if self._on_finished is not None:
                    self._on_finished(self)

    def _timeline(self, reason: str) -> SessionTraced:
        """This session and its replies on the wall clock, for the call's trace."""
        wall, at = self._began
        end = self._clock()

        def w(t: float | None) -> float | None:
            return None if t is None else wall + (t - at)

        turns = tuple(
            TurnSpan(
                generation=t.generation,
                trigger=t.trigger,
                origin=wall + ((t.speech_end_at if t.speech_end_at is not None else t.started_at) - at),
                asr_final=wall + (t.started_at - at),
                first_token=w(t.first_token_at),
                first_tts_audio=w(t.first_tts_audio_at),
                first_frame=w(t.first_audio_at),
                done=w(t.done_at),
                interrupted=t.interrupted,
            )
            for t in self.timings
        )
        ctx, st = self.ctx, self.state
        return SessionTraced(st.call_sid, ctx.flow, ctx.direction, reason, wall, wall + (end - at), st.barge_ins, turns)

    def asr_seconds(self) -> float:
        """Audio pushed to the recogniser so far: every inbound frame and every gap's
        silence, 20 ms each (the protocol's counters: nothing counted per frame here)."""
        return (self.state.frames_in + self.state.silence_frames) * FRAME_S

    async def _record_usage(self) -> None:
        """Add this stream's usage to the call row (once, on the way out)."""
        meter = self.meter
        if meter is None:
            return
        try:
            cost = await costs.record_usage(
                self._db, self.state.call_sid, meter.prices, add=meter.usage(asr_seconds=self.asr_seconds())
            )
        except Exception as exc:
            self._log.error("could not record the call's usage", exc_info=exc)
            return
        if cost is not None:
            self._log.info("call cost", total=cost["total"], currency=cost["currency"])

    async def _save_recording(self) -> None:
        """Write the stream's recording once, in a worker thread (never per frame)."""
        recorder = self._recorder
        if recorder is None:
            return
        try:
            await asyncio.to_thread(recorder.write)
        except Exception as exc:
            self._log.error("could not write the call's recording", exc_info=exc)

    def _within_budget(self, turn: CallerText | CallerDigits) -> CallerText | CallerDigits | CallSignal:
        """``turn`` as the runner should get it under the spend cap: unchanged while the
        budgets hold; the offer (``budget_spent``) on the turn that finds one spent; marked
        ``offline`` after that. A few dict look-ups per caller turn."""
        cap, meter = self._spend_cap, self.meter
        if cap is None or meter is None:
            return turn
        if cap.tripped is not None:
            return dataclasses.replace(turn, offline=True)
        rule = cap.check(meter.running_total(asr_seconds=self.asr_seconds()))
        if rule is None:
            return turn
        self._log.info("spend cap reached: no more hosted model on this call", rule=rule)
        self._record(CallEvent(call_sid=self.state.call_sid, kind="budget_spent", role="system", data={"rule": rule}))
        return CallSignal(kind=BUDGET_SPENT, detail=rule)

    def end(self, code: int = 1001) -> None:
        """Ask the session to close the socket and finish (server shutdown)."""
        self.state.end_reason = self.state.end_reason or "server closing"
        self._out.close(code, urgent=True)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def cancel(self) -> None:
        """Last resort when ``end`` did not finish the call in time."""
        if self._run_task is not None and not self._run_task.done():
            self._run_task.cancel()

    def _open_call(self) -> None:
        if self._max_call_s is not None and self._max_call_s <= 0:
            return  # a stream (re)opened past the deadline: the deadline task says goodbye at once
        ctx, runner, signal = self.ctx, self._runner, self._signal
        if signal is None:
            self._begin_reply("greeting", lambda: runner.start(ctx))
        elif signal.kind is SignalKind.RECONNECTED:
            resumed = CallSignal(kind=signal.kind)
            self._begin_reply("signal", lambda: self._heard.resume(resumed))
        else:
            turn = CallSignal(kind=signal.kind, detail=signal.detail)
            self._begin_reply("signal", lambda: runner.respond(ctx, turn))
        self.policy.agent_turn_started()

    # --- inbound --------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        socket = self._socket
        if isinstance(socket, PushingSocket):
            await self._take_pushed(socket)
            return
        receive = socket.receive
        while True:
            self._take(await receive())

    async def _take_pushed(self, socket: PushingSocket) -> None:
        """Each frame taken in the socket's own callback; this task only waits for the end
        (``_CallEnded`` or a fault, as the receiving loop would have raised it)."""
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def take(frame: str | bytes | None) -> None:
            if ended.done():
                return
            try:
                self._take(frame)
            except Exception as exc:
                ended.set_exception(exc)  # later frames are ignored; the task stops the push

        socket.push_to(take)
        try:
            await ended
        finally:
            socket.push_to(None)

    def _take(self, frame: str | bytes | None) -> None:
        """One inbound frame (None: the socket is gone)."""
        self._frames_seen += 1
        if frame is None:
            self.state.end_reason = self.state.end_reason or "socket closed"
            raise _CallEnded
        event = self._media.receive_text(frame)
        if event is None:  # a duplicate, or nothing to act on
            return
        if isinstance(event, codec.Media):
            self._on_media(event)
        elif isinstance(event, Gap):
            self._stream.push(SILENCE_FRAME * event.frames)
            if self._recorder is not None:
                self._recorder.caller(SILENCE_FRAME * event.frames)
            self._on_media(event.media)
        elif isinstance(event, codec.Mark):
            reply = self.state.reply
            if reply is not None:
                reply.mark_echoed(event.name)
        elif isinstance(event, codec.Dtmf):
            self._on_dtmf(event.digit)
        elif isinstance(event, codec.Stop):
            self.state.end_reason = self.state.end_reason or "stop"
            raise _CallEnded
        elif isinstance(event, Rejected):
            self._protocol_error(event)

    async def _watch_inbound(self) -> None:
        """Twilio sends 50 frames a second during a call: a socket silent for
        ``inbound_timeout_s`` is dead (with WebSocket pings off, a half-open connection would
        otherwise hold the session for hours). Polls a counter: no per-frame timer."""
        timeout = self._inbound_timeout_s
        seen, quiet_since = self._frames_seen, self._clock()
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = self._clock()
            if self._frames_seen != seen:
                seen, quiet_since = self._frames_seen, now
            elif now - quiet_since >= timeout:
                self.state.end_reason = self.state.end_reason or "inbound timeout"
                self._log.warning("no frame from Twilio: ending the call", quiet_s=round(now - quiet_since, 1))
                raise _CallEnded

    async def _watch_deadline(self, after_s: float) -> None:
        """The call's maximum length: after ``after_s`` no caller turn starts a reply
        (``state.ending``) and nothing is cut by a barge-in; the reply in progress plays to
        its end (cut after ``REPLY_GRACE_S`` only), then ``TIME_LIMIT_GOODBYE`` plays, no
        model involved, and the call ends like one the agent ended. A request the last
        reply carried (the agent was ending or transferring the call) is carried out instead."""
        await asyncio.sleep(max(0.0, after_s))
        st = self.state
        if st.ending:  # the agent is ending or transferring the call already
            return
        st.ending = True
        self._log.info("maximum call length reached", max_call_s=round(after_s, 1))
        reply = st.reply
        if reply is not None and not reply.done():
            try:
                async with asyncio.timeout(REPLY_GRACE_S):
                    outcome = await reply.wait()
            except TimeoutError:
                self._log.warning("reply still playing at the time limit: cut", grace_s=REPLY_GRACE_S)
                self._interrupt(reply)
            else:
                if isinstance(outcome, Played) and outcome.request is not None:
                    await self._carry_out(outcome.request)
                    return

        async def goodbye() -> AsyncIterator[RunnerEvent]:
            yield TextChunk(TIME_LIMIT_GOODBYE)

        self._begin_reply("max_call_length", goodbye)
        self.policy.agent_turn_started()
        farewell = st.reply
        assert farewell is not None
        try:
            async with asyncio.timeout(GOODBYE_WAIT_S):
                await farewell.wait()
        except TimeoutError:
            self._log.warning("time-limit goodbye not confirmed played: ending the call")
        await self._carry_out(EndCallRequest(reason=CallOutcome.MAX_CALL_LENGTH.value))
        st.end_reason = "max call length"

    def _protocol_error(self, rejected: Rejected) -> None:
        n = rejected.count
        if n == 1 or n in (10, 100, 1000, 10000):  # not per frame: a flood must not flood the log
            self._log.warning("malformed frames dropped", count=n, error=str(rejected.error))

    def _on_media(self, media: codec.Media) -> None:
        payload = media.payload
        policy = self.policy
        agent_floor = policy.state is not TurnState.LISTENING
        if agent_floor is not self._low_latency:  # twice a turn, not per frame
            self._low_latency = agent_floor
            prefer_low_latency(self._stream, agent_floor)
        self._stream.push(payload)
        if self._recorder is not None:
            self._recorder.caller(payload)
        # The VAD only serves barge-in: while the caller holds the floor it would be wasted
        # (a model VAD costs ~0.15 ms a speech frame, the largest per-frame cost there is).
        if (
            len(payload) == FRAME_BYTES
            and policy.state is not TurnState.LISTENING
            and policy.vad(media.timestamp / 1000, self._vad.speech_probability(payload))
        ):
            self._barge_in()

    def _on_dtmf(self, digit: str) -> None:
        self._record(CallEvent(call_sid=self.state.call_sid, kind="dtmf", role="caller", text=digit))
        if self.state.ending:
            return
        reply = self.state.reply
        if reply is not None and not reply.done():
            self._barge_in()
        ctx, runner, turn = self.ctx, self._runner, self._within_budget(CallerDigits(digits=digit))
        self._begin_reply("dtmf", lambda: runner.respond(ctx, turn))
        self.policy.agent_turn_started()

    async def _recognition_loop(self) -> None:
        policy = self.policy
        async for event in self._stream:
            if isinstance(event, Interim | Final):  # interim caller text for the live API (never stored)
                hub.caller_speech(self.state.call_sid, event.text, final=isinstance(event, Final))
                if isinstance(event, Final) and event.text.strip():
                    # the last word's end (else the result's, which includes the endpointing
                    # silence), moved from the recogniser's audio clock (the frames fed so far,
                    # gaps filled) onto the session clock: the waterfall's origin
                    spoken_to = event.last_word_end if event.last_word_end is not None else event.end
                    lag = self.asr_seconds() - spoken_to
                    self._speech_end = self._clock() - min(max(0.0, lag), MAX_SPEECH_END_LAG_S)
            for action in policy.recognition(event):
                if isinstance(action, BargeIn):
                    self._barge_in()
                elif isinstance(action, StartTurn):
                    self._on_turn(action)
                elif isinstance(action, Preempt):
                    self._preempt(action.text)
        self._log.warning("recognition stream ended")

    def _on_turn(self, turn: StartTurn) -> None:
        text = turn.text
        # the language the turn was in, kept with it (not the text: that stays in ``text``,
        # where redaction reaches it); once per turn, never per frame
        data = {"language": turn_language(turn)}
        self._record(CallEvent(call_sid=self.state.call_sid, kind="turn", role="caller", text=text, data=data))
        if self.state.ending:
            return
        reply = self.state.reply
        if reply is not None and not reply.done():  # the policy never does this; stay safe if it did
            self._barge_in()
        ctx, runner, said = self.ctx, self._runner, self._within_budget(CallerText(text=text))
        preempted, self._preempted = self._preempted, None
        if preempted is not None:
            if (
                isinstance(said, CallerText)  # not the spend cap's fixed offer
                and said.offline == preempted.said.offline
                and preempted.words == words_of(text)
                and not preempted.reply.done()
            ):
                self._confirm(preempted)  # the reply is ready: its audio goes out now
                return
            self._discard(preempted)
        self._begin_reply("caller", lambda: runner.respond(ctx, said))
        if self.state.reply is not None:
            self.state.reply.timing.speech_end_at = self._speech_end
        self._speech_end = None

    # --- preemptive replies ----------------------------------------------------------------------
    def _preempt(self, text: str) -> None:
        """The caller paused on ``text``: start the reply now, its audio held until the turn
        ends with the same words (``_on_turn``). Not while a reply is live, the call ends, or
        a spend cap turns the turn into a fixed offer."""
        if self._preempted is not None:
            if self._preempted.words == words_of(text):
                return  # the same words again: the reply in the making is theirs
            self._discard(self._preempted)
            self._preempted = None
        st = self.state
        if not self._preemptive or st.ending or self._tg is None or (st.reply is not None and not st.reply.done()):
            return
        said = CallerText(text=text)
        cap, meter = self._spend_cap, self.meter
        if cap is not None and meter is not None:  # as ``_within_budget`` will, without tripping the cap
            if cap.tripped is not None:
                said = dataclasses.replace(said, offline=True)
            elif cap.spent(meter.running_total(asr_seconds=self.asr_seconds())) is not None:
                return  # this turn gets the fixed offer, not a model reply
        assert isinstance(self._runner, PreemptingRunner)
        run = self._runner.preempt(self.ctx, said)
        reply = Reply(self._replies, generation=st.generation + 1, trigger="caller", held=True)
        reply.timing.preempted = True
        reply.start(self._tg, run.__aiter__)
        self._preempted = _Preempted(words_of(text), said, run, reply)

    def _confirm(self, preempted: _Preempted) -> None:
        st, reply = self.state, preempted.reply
        preempted.run.confirm()
        st.preempted += 1
        st.generation = reply.generation
        st.reply = reply
        reply.timing.started_at = self._clock()
        reply.timing.speech_end_at = self._speech_end
        self._speech_end = None
        self.timings.append(reply.timing)
        reply.release()

    def _discard(self, preempted: _Preempted) -> None:
        """The turn's words differ, or something else takes the floor: the held reply goes,
        unheard and unsaved; what its model run spent still counts."""
        preempted.run.discard()
        preempted.reply.discard()
        self.state.preempts_discarded += 1
        meter, task = self.meter, preempted.reply.runner_task
        if meter is not None and task is not None:

            def count(_: object) -> None:
                for used in preempted.run.wasted:
                    meter.add_tokens(used.model, used.input_tokens, used.output_tokens)

            task.add_done_callback(count)

    def _drop_preempted(self) -> None:
        preempted, self._preempted = self._preempted, None
        if preempted is not None:
            self._discard(preempted)

    # --- replies --------------------------------------------------------------------------------
    def _begin_reply(self, trigger: str, events: Callable[[], AsyncIterator[RunnerEvent]]) -> None:
        assert self._tg is not None
        self._drop_preempted()  # another reply takes the floor
        st = self.state
        st.generation += 1
        reply = Reply(self._replies, generation=st.generation, trigger=trigger)
        st.reply = reply
        self.timings.append(reply.timing)
        reply.start(self._tg, events)

    def _barge_in(self) -> None:
        st = self.state
        reply = st.reply
        if reply is None or reply.done() or self._tg is None or st.ending:  # the last words are never cut
            return
        st.barge_ins += 1
        self._interrupt(reply)

    def _interrupt(self, reply: Reply) -> None:
        st = self.state
        st.generation += 1  # an interruption takes a number too: the next reply's marks say so
        st.reply = None
        reply.interrupt()

    def _on_reply(self, event: ReplyEvent) -> None:
        """What a reply reports, in the task that caused it (the turn policy must not lag)."""
        if isinstance(event, AudioStarted):
            self.policy.agent_audio_started()
            return
        outcome = event.outcome
        if isinstance(outcome, Interrupted):  # cut here (``_barge_in``): the policy already knows
            return
        self.policy.playback_done()
        request = outcome.request if isinstance(outcome, Played) else None
        if request is not None and self._tg is not None and not self.state.ending:
            self.state.ending = True
            self._tg.create_task(self._carry_out(request), name=f"call-end-{self.state.call_sid}")

    async def _carry_out(self, request: TransferRequest | EndCallRequest) -> None:
        """The last reply has played: record the outcome, then close the stream (Twilio then
        requests the ``<Connect action>`` URL, which dials the target or hangs up)."""
        sid = self.state.call_sid
        if isinstance(request, TransferRequest):
            self.state.end_reason = "transfer"
            values: dict[str, Any] = {
                "outcome": CallOutcome.TRANSFER_REQUESTED,
                "transfer_target": request.target,
                "transfer_reason": request.reason,
                "transfer_summary": request.summary,
            }
            self._record(CallEvent(call_sid=sid, kind="transfer", role="system", data={"target": request.target}))
        else:
            self.state.end_reason = "ended by agent"
            # An opt-out is its own outcome (a campaign must never call this person again), and
            # so is a declined call; any other ending is the agent's.
            named = {CallOutcome.OPTED_OUT, CallOutcome.NOT_INTERESTED, CallOutcome.MAX_CALL_LENGTH}
            ending = CallOutcome(request.reason) if request.reason in named else CallOutcome.ENDED_BY_AGENT
            values = {"outcome": ending}
            self._record(CallEvent(call_sid=sid, kind="end_call", role="system", data={"reason": request.reason}))
        await self._call_log.flush()
        for attempt in (1, 2):  # a failed write must not turn the transfer into a reconnect
            try:
                await call_store.update_call(self._db, sid, **values)
                break
            except Exception as exc:
                if attempt == 2:
                    self._log.error("could not record the call's outcome", exc_info=exc)
                else:
                    self._log.warning("could not record the call's outcome, retrying", error=str(exc))
                    await asyncio.sleep(0.2)
        self._out.close(1000)
