"""CallSession: one Twilio media stream, from ``start`` to ``stop``.

One session per call owns its state (``CallState``) and its tasks, all in ONE
``asyncio.TaskGroup``:

* reader -- parses frames (``telephony.media_codec``); media -> recognizer + VAD -> policy;
  gaps filled with silence, duplicates dropped; marks -> ``PlaybackTracker``; DTMF -> a turn.
* recognition -- ASR events -> ``TurnPolicy`` -> turns and barge-ins.
* writer -- ``telephony.outbound.OutboundPacer.run``, the ONLY task that writes to the
  socket: ``clear``/close first, then 20 ms frames paced at real time plus
  ``playback_lead_ms``, with the marks the ``PlaybackTracker`` asks for.
* call log -- transcript turns and call events, recorded on the process-wide
  ``telephony.call_log.CallEventWriter`` (no task here: it writes every call's events in
  one transaction a round), flushed before the call row gets its outcome and on the way out.
* watchdog -- ends the call when no frame arrived for ``inbound_timeout_s`` (a dead socket).
* progress -- ``calls.reply_heard``: what the caller has heard of the reply in progress,
  set through ``ReplyPipeline.set_heard`` on the process-wide
  ``telephony.reply_progress.ReplyProgressWriter`` (no task here; its last value is flushed
  on the way out), so a session on another instance can repair the checkpoint if this
  process dies mid-reply; a ``reconnected`` stream does that repair before its
  reconnection line (and keeps the text in front of later values while the repair fails).
* per reply: a runner task (graph events -> phrase chunker) and a synth task (phrases ->
  TTS -> 20 ms frames on the outbound deque), run by ``telephony.reply.ReplyPipeline``.
  Barge-in cancels both, clears Twilio's buffer, drops queued audio, bumps the generation
  and records what was heard. A reply whose run or synthesis raised ends like an
  interrupted one (the run's failure adds an apology); repairs and graph runs go through
  the pipeline's runner lock in order.

Leaving the group (``stop``, socket closed, ``end()``, an error) cancels and awaits every
task; the recognition stream is closed after it. Nothing outlives the call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import structlog

from dialgraph.server.core import call_store
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import CallEvent
from dialgraph.server.core.turns import (
    CallerDigits,
    CallerText,
    CallSignal,
    EndCallRequest,
    RunnerEvent,
    TransferRequest,
    TurnRunner,
)
from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.call.call_log import CallEventWriter, CallLog
from dialgraph.telephony.call.pacer import OutboundPacer, StreamClosedByServer, mark_every_bytes_for, message_ms_for
from dialgraph.telephony.call.playback import PlaybackTracker
from dialgraph.telephony.call.reply import APOLOGY as APOLOGY  # re-exported: tests and callers import it from here
from dialgraph.telephony.call.reply import ReplyPipeline
from dialgraph.telephony.call.reply_progress import ReplyProgressWriter
from dialgraph.telephony.call.state import CallState, Reply, TurnTiming
from dialgraph.telephony.call.turn_policy import BargeIn, StartTurn, TurnPolicy, TurnState
from dialgraph.telephony.speech.base import FRAME_BYTES, RecognitionStream, SpeechSynthesizer, VoiceActivityDetector
from dialgraph.telephony.twilio import codec

log = structlog.get_logger(__name__)

MAX_GAP_FRAMES = 250  # never fill more than 5 s of silence for one gap


class MediaSocket(Protocol):
    """The transport under a session (the route adapts Starlette's WebSocket)."""

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the peer has gone."""

    async def send(self, text: str) -> None:
        """Send a text frame; raises ``SocketClosed`` when the peer has gone."""

    async def close(self, code: int = 1000) -> None: ...


class SocketClosed(Exception):
    """The WebSocket is gone."""


class _CallEnded(Exception):
    """Leaves the task group: the call is over (stop, socket closed, server closed it)."""


class CallSession:
    """Runs one call; ``await run()`` returns when the call is over."""

    def __init__(
        self,
        *,
        socket: MediaSocket,
        ctx: CallContext,
        stream_sid: str,
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
    ) -> None:
        self.ctx = ctx
        self.state = CallState(call_sid=ctx.call_sid, stream_sid=stream_sid)
        self.policy = policy
        # Outbound message size follows the lead (20 ms at 120 ms, 100 ms at 200 ms): see outbound.py.
        message_bytes = message_ms_for(playback_lead_ms) // 20 * FRAME_BYTES
        self.tracker = PlaybackTracker(mark_every_bytes=mark_every_bytes_for(message_bytes))
        self.timings: list[TurnTiming] = []
        self._socket = socket
        self._db = db
        self._stream = recognition
        self._vad = vad
        self._runner = runner
        self._signal = signal
        self._clock = clock
        self._on_finished = on_finished
        self._inbound_timeout_s = inbound_timeout_s
        self._frames_seen = 0  # every inbound frame; the watchdog only looks at it once a second
        self._log = log.bind(call_sid=ctx.call_sid)
        self._out = OutboundPacer(
            stream_sid=stream_sid,
            send=socket.send,
            close=socket.close,
            current=self._generation,
            on_frame=self._frame_sent,
            on_reply_end=self._reply_audio_sent,
            lead_s=min(playback_lead_ms, 200) / 1000,
            message_bytes=message_bytes,
            clock=clock,
        )
        self._call_log = CallLog(call_events, call_sid=ctx.call_sid, stream_sid=stream_sid)
        self._record = self._call_log.record
        # What the caller heard of the reply in progress, in SQL: survives this process.
        self._progress = progress
        self._phrases_heard = 0
        self._replies = ReplyPipeline(
            ctx=ctx,
            state=self.state,
            tracker=self.tracker,
            out=self._out,
            synthesizer=synthesizer,
            runner=runner,
            progress=progress,
            record=self._record,
            log=self._log,
        )
        self._tg: asyncio.TaskGroup | None = None
        self._closed = asyncio.Event()
        self._run_task: asyncio.Task[Any] | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        self._run_task = asyncio.current_task()
        sid = self.state.call_sid
        self._call_log.open()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._read_loop(), name=f"call-read-{sid}")
                tg.create_task(self._recognition_loop(), name=f"call-asr-{sid}")
                tg.create_task(self._out.run(), name=f"call-write-{sid}")
                tg.create_task(self._watch_inbound(), name=f"call-watchdog-{sid}")
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
                self._closed.set()
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
        ctx, runner, signal = self.ctx, self._runner, self._signal
        if signal == "reconnected":
            self._begin_reply("signal", lambda: self._replies.resume(CallSignal(kind="reconnected")))
        elif signal.startswith("transfer_failed:"):
            kind, _, detail = signal.partition(":")
            turn = CallSignal(kind=kind, detail=detail)
            self._begin_reply("signal", lambda: runner.respond(ctx, turn))
        else:
            self._begin_reply("greeting", lambda: runner.start(ctx))
        self.policy.agent_turn_started()

    # --- inbound --------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        receive = self._socket.receive
        parse = codec.parse
        sid = self.state.stream_sid
        while True:
            frame = await receive()
            self._frames_seen += 1
            if frame is None:
                self.state.end_reason = self.state.end_reason or "socket closed"
                raise _CallEnded
            try:
                event = parse(frame)
            except codec.ProtocolError as exc:
                self._protocol_error(exc)
                continue
            if isinstance(event, codec.Media):
                if event.stream_sid == sid:
                    self._on_media(event)
                else:
                    self._protocol_error(codec.FieldError("media for another stream"))
            elif isinstance(event, codec.Mark):
                if self.tracker.mark_echoed(event.name):
                    if self.tracker.all_played:
                        self._reply_played()
                    elif self.tracker.phrases_heard != self._phrases_heard:
                        self._phrases_heard = self.tracker.phrases_heard
                        self._replies.set_heard(self.tracker.heard_text())
            elif isinstance(event, codec.Dtmf):
                self._on_dtmf(event.digit)
            elif isinstance(event, codec.Stop):
                self.state.end_reason = self.state.end_reason or "stop"
                raise _CallEnded

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

    def _protocol_error(self, exc: codec.ProtocolError) -> None:
        n = self.state.protocol_errors = self.state.protocol_errors + 1
        if n == 1 or n in (10, 100, 1000, 10000):  # not per frame: a flood must not flood the log
            self._log.warning("malformed frames dropped", count=n, error=str(exc))

    def _on_media(self, media: codec.Media) -> None:
        st = self.state
        chunk, ts = media.chunk, media.timestamp
        last = st.last_chunk
        if chunk <= last:
            st.duplicates += 1
            return
        if last >= 0:
            # sequenceNumber counts marks and DTMF too; chunk and timestamp count audio only.
            missing = chunk - last - 1
            if st.last_ts >= 0:
                by_time = (ts - st.last_ts) // 20 - 1
                if by_time > missing:
                    missing = by_time
            if missing > 0:
                missing = min(missing, MAX_GAP_FRAMES)
                st.silence_frames += missing
                self._stream.push(SILENCE_FRAME * missing)
        st.last_chunk = chunk
        st.last_ts = ts
        st.frames_in += 1
        payload = media.payload
        self._stream.push(payload)
        # The VAD only serves barge-in: while the caller holds the floor it would be wasted
        # (a model VAD costs ~0.15 ms a speech frame, the largest per-frame cost there is).
        policy = self.policy
        if (
            len(payload) == FRAME_BYTES
            and policy.state is not TurnState.LISTENING
            and policy.vad(ts / 1000, self._vad.speech_probability(payload))
        ):
            self._barge_in()

    def _on_dtmf(self, digit: str) -> None:
        self._record(CallEvent(call_sid=self.state.call_sid, kind="dtmf", role="caller", text=digit))
        if self.state.ending:
            return
        reply = self.state.reply
        if reply is not None and not reply.done:
            self._barge_in()
        ctx, runner, turn = self.ctx, self._runner, CallerDigits(digits=digit)
        self._begin_reply("dtmf", lambda: runner.respond(ctx, turn))
        self.policy.agent_turn_started()

    async def _recognition_loop(self) -> None:
        policy = self.policy
        async for event in self._stream:
            for action in policy.recognition(event):
                if isinstance(action, BargeIn):
                    self._barge_in()
                elif isinstance(action, StartTurn):
                    self._on_turn(action.text)
        self._log.warning("recognition stream ended")

    def _on_turn(self, text: str) -> None:
        self._record(CallEvent(call_sid=self.state.call_sid, kind="turn", role="caller", text=text))
        if self.state.ending:
            return
        reply = self.state.reply
        if reply is not None and not reply.done:  # the policy never does this; stay safe if it did
            self._barge_in()
        ctx, runner, turn = self.ctx, self._runner, CallerText(text=text)
        self._begin_reply("caller", lambda: runner.respond(ctx, turn))

    # --- replies --------------------------------------------------------------------------------
    def _begin_reply(self, trigger: str, events: Callable[[], AsyncIterator[RunnerEvent]]) -> None:
        assert self._tg is not None
        st = self.state
        st.generation += 1
        self.tracker.start_reply(st.generation)
        self._phrases_heard = 0
        reply = Reply(st.generation, TurnTiming(st.generation, trigger, self._clock()))
        st.reply = reply
        self.timings.append(reply.timing)
        self._replies.start(self._tg, reply, events)

    def _reply_played(self) -> None:
        """The current reply has played to the end (or produced no audio)."""
        reply = self.state.reply
        if reply is None or reply.done:
            return
        reply.done = True
        reply.timing.done_at = self._clock()
        self.policy.playback_done()
        if reply.failed:  # cut short by an error: what played is what the history keeps
            reply.timing.interrupted = True
            self._replies.repair_after(self._tg, reply, self.tracker.heard_text())
            return
        self._replies.set_heard(None)
        self._record(
            CallEvent(
                call_sid=self.state.call_sid,
                kind="turn",
                role="agent",
                text=self.tracker.full_text(),
                latency_ms=reply.timing.latency_ms,
                data={"trigger": reply.timing.trigger},
            )
        )
        if reply.request is not None and self._tg is not None and not self.state.ending:
            self.state.ending = True
            self._tg.create_task(self._carry_out(reply.request), name=f"call-end-{self.state.call_sid}")

    def _barge_in(self) -> None:
        st = self.state
        reply = st.reply
        if reply is None or reply.done or self._tg is None:
            return
        self.tracker.clear()  # marks echoed from now on prove nothing
        heard = self.tracker.heard_text()
        st.generation += 1  # queued frames, pending marks and late TTS of the old reply are stale
        st.barge_ins += 1
        self._out.clear()
        for task in reply.tasks:
            task.cancel()
        reply.done = True
        reply.timing.interrupted = True
        reply.timing.done_at = self._clock()
        st.reply = None
        self._replies.repair_after(self._tg, reply, heard)

    async def _carry_out(self, request: TransferRequest | EndCallRequest) -> None:
        """The last reply has played: record the outcome, then close the stream (Twilio then
        requests the ``<Connect action>`` URL, which dials the target or hangs up)."""
        sid = self.state.call_sid
        if isinstance(request, TransferRequest):
            self.state.end_reason = "transfer"
            values: dict[str, Any] = {
                "outcome": "transfer_requested",
                "transfer_target": request.target,
                "transfer_reason": request.reason,
                "transfer_summary": request.summary,
            }
            self._record(CallEvent(call_sid=sid, kind="transfer", role="system", data={"target": request.target}))
        else:
            self.state.end_reason = "ended by agent"
            values = {"outcome": "ended_by_agent"}
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

    # --- outbound (written by ``OutboundPacer.run``, the only writer) --------------------------
    def _generation(self) -> int:
        return self.state.generation

    def _frame_sent(self, generation: int, phrase: int, nbytes: int, phrase_end: bool) -> str | None:
        st = self.state
        if st.first_audio_gen != generation:
            st.first_audio_gen = generation
            if st.reply is not None and st.reply.generation == generation:
                st.reply.timing.first_audio_at = self._clock()
                self._replies.set_heard("")
            self.policy.agent_audio_started()
        return self.tracker.frame_sent(phrase, nbytes, phrase_end)

    def _reply_audio_sent(self, generation: int) -> None:
        self.tracker.finish()
        if self.tracker.all_played:
            self._reply_played()
