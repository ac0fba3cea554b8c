"""The simulated caller: a phone that outlives media legs, its recorder, and the script runner.

``Phone`` is what every ``MediaLeg`` of a call talks to: it hands out the caller's next
20 ms frame (silence between lines), takes the agent's audio as Twilio would play it, and
keeps the timeline (one call clock across legs, transfers included) that the transcript,
the latency table and the stereo recording are built from.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from dialgraph.telephony.simulator.protocol import FRAME_BYTES, FRAME_S, SAMPLE_RATE
from dialgraph.telephony.simulator.scenario import (
    BargeIn,
    Dtmf,
    Hangup,
    Say,
    Scenario,
    Transfer,
    Wait,
    WaitForAgent,
)

log = structlog.get_logger(__name__)


@dataclass
class CallerTurn:
    """One thing the caller did that the agent should answer (a line or DTMF)."""

    kind: Literal["say", "barge_in", "dtmf"]
    text: str
    queued: float
    start: float | None = None
    end: float | None = None
    first_agent_audio: float | None = None
    clear_at: float | None = None  # barge-in: first `clear` after the caller started

    @property
    def latency_ms(self) -> float | None:
        if self.end is None or self.first_agent_audio is None:
            return None
        return (self.first_agent_audio - self.end) * 1000


@dataclass
class Recorder:
    """Both sides of the call as heard, as 8 kHz mu-law on the call clock."""

    caller: bytearray = field(default_factory=bytearray)
    agent: bytearray = field(default_factory=bytearray)

    caller_cursor: int = 0
    agent_cursor: int = 0

    @staticmethod
    def write(track: bytearray, i: int, audio: bytes) -> None:
        end = i + len(audio)
        if len(track) < end:
            track.extend(b"\xff" * (end - len(track)))
        track[i:end] = audio

    def add_caller(self, at: float, frame: bytes) -> None:
        # Frames of one leg are contiguous: snap float clock error to the running cursor.
        i = max(0, round(at * SAMPLE_RATE))
        if abs(i - self.caller_cursor) <= 8:
            i = self.caller_cursor
        self.write(self.caller, i, frame)
        self.caller_cursor = i + len(frame)

    def add_agent(self, received: float, audio: bytes) -> None:
        # Twilio plays queued audio back to back: never re-derive positions from floats.
        i = max(self.agent_cursor, round(received * SAMPLE_RATE))
        self.write(self.agent, i, audio)
        self.agent_cursor = i + len(audio)

    def cut_agent(self, at: float) -> None:
        i = max(0, round(at * SAMPLE_RATE))
        j = min(len(self.agent), self.agent_cursor)
        if j > i:
            self.agent[i:j] = b"\xff" * (j - i)
        self.agent_cursor = min(self.agent_cursor, i)


class Keypad:
    """Keys the caller pressed, each handed once to the media leg, which sends its ``dtmf``."""

    def __init__(self) -> None:
        self._pressed: deque[tuple[str, asyncio.Future[None]]] = deque()

    def press(self, digit: str) -> asyncio.Future[None]:
        """Queue a key; the future resolves once the leg has taken it (or ``release``)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pressed.append((digit, done))
        return done

    def take(self) -> str | None:
        if not self._pressed:
            return None
        digit, done = self._pressed.popleft()
        if not done.done():
            done.set_result(None)
        return digit

    def release(self) -> None:
        """The stream is gone: nothing queued will be sent."""
        for _, done in self._pressed:
            if not done.done():
                done.set_result(None)


def to_frames(audio: bytes) -> list[bytes]:
    """Cut mu-law into 160-byte frames, padding the last with silence."""
    pad = (-len(audio)) % FRAME_BYTES
    audio = audio + b"\xff" * pad
    return [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]


class Phone:
    """The caller's handset across every media leg of one call."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, record: bool = True, poll_s: float = 0.05
    ) -> None:
        self._clock = clock
        self._t0 = clock()
        self.record = record
        self.poll_s = poll_s
        self.recorder = Recorder()
        self.turns: list[CallerTurn] = []
        self.boundaries: list[float] = [0.0]
        self.transfer_policies: deque[Transfer] = deque()
        self.legs = 0
        self.leg_open = False
        self.ended = asyncio.Event()
        self.reference = 0.0  # last caller action or leg change: agent audio after it is a reply
        self.last_audio = -1.0
        self.first_audio_after_reference: float | None = None
        self.playback_end = 0.0
        self.clears: list[float] = []
        self._lines: deque[tuple[CallerTurn, list[bytes], asyncio.Future[None]]] = deque()
        self._current: tuple[CallerTurn, list[bytes], asyncio.Future[None]] | None = None
        self._index = 0
        self.keypad = Keypad()
        self._awaiting: CallerTurn | None = None
        self._hangup = False

    # --- the media leg's side (CallerLine protocol) ---------------------------------------
    def now(self) -> float:
        return self._clock() - self._t0

    def next_frame(self, at: float) -> bytes | None:
        if self._current is None:
            if not self._lines:
                return None
            self._current, self._index = self._lines.popleft(), 0
            turn = self._current[0]
            turn.start = at
            self.boundaries.append(at)
        turn, frames, done = self._current
        frame = frames[self._index]
        self._index += 1
        if self._index >= len(frames):
            turn.end = at + FRAME_S
            self._turn_done(turn, turn.end)
            self._current = None
            if not done.done():
                done.set_result(None)
        return frame

    def take_dtmf(self) -> str | None:
        digit = self.keypad.take()
        if digit is None:
            return None
        at = self.now()
        turn = CallerTurn(kind="dtmf", text=digit, queued=at, start=at, end=at)
        self.turns.append(turn)
        self.boundaries.append(at)
        self._turn_done(turn, at)
        return digit

    def hangup_requested(self) -> bool:
        return self._hangup

    def on_caller_frame(self, at: float, frame: bytes) -> None:
        if self.record:
            self.recorder.add_caller(at, frame)

    def on_agent_audio(self, received: float, starts: float, audio: bytes) -> None:
        self.last_audio = received
        self.playback_end = max(self.playback_end, starts + len(audio) / SAMPLE_RATE)
        if self.first_audio_after_reference is None and received >= self.reference:
            self.first_audio_after_reference = received
        if self._awaiting is not None and self._awaiting.end is not None and received >= self._awaiting.end:
            self._awaiting.first_agent_audio = received
            self._awaiting = None
        if self.record:
            self.recorder.add_agent(received, audio)

    def on_clear(self, at: float, cut_end: float) -> None:
        self.clears.append(at)
        self.boundaries.append(at)
        self.playback_end = min(self.playback_end, at)
        if self.record:
            self.recorder.cut_agent(at)
        for turn in reversed(self.turns):
            if turn.kind == "barge_in" and turn.start is not None and turn.clear_at is None:
                turn.clear_at = at
                break

    def on_leg(self, event: Literal["open", "closed"], at: float) -> None:
        self.leg_open = event == "open"
        if self.leg_open:
            self.legs += 1
            self.boundaries.append(at)
        self._set_reference(at)

    # --- the script's side -----------------------------------------------------------------
    def _set_reference(self, at: float) -> None:
        self.reference = at
        self.first_audio_after_reference = None

    def _turn_done(self, turn: CallerTurn, at: float) -> None:
        self._awaiting = turn
        self._set_reference(at)

    async def speak(self, kind: Literal["say", "barge_in"], text: str, audio: bytes) -> CallerTurn:
        """Queue a line and return once its last frame has gone out."""
        turn = CallerTurn(kind=kind, text=text, queued=self.now())
        self.turns.append(turn)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lines.append((turn, to_frames(audio), done))
        await self._until(done)
        return turn

    async def press(self, digits: str) -> None:
        for digit in digits:
            await self._until(self.keypad.press(digit))

    async def _until(self, done: asyncio.Future[None]) -> None:
        ended: asyncio.Future[Any] = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait([done, ended], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()

    def last_caller_action(self) -> float:
        return self.reference

    def agent_quiet_for(self, now: float) -> float:
        return now - max(self.playback_end, self.last_audio)

    async def wait_for_agent(self, *, quiet_s: float, timeout_s: float) -> bool:
        """Until the agent has replied (after the last caller action) and gone quiet."""
        deadline = self.now() + timeout_s
        while not self.ended.is_set():
            now = self.now()
            if self.leg_open and self.first_audio_after_reference is not None and self.agent_quiet_for(now) >= quiet_s:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(self.poll_s)
        return True

    async def wait_to_barge_in(self, *, after_s: float, quiet_s: float, timeout_s: float) -> bool:
        """Until the agent's reply has been heard for ``after_s`` (True) or it ended first (False)."""
        deadline = self.now() + timeout_s
        while not self.ended.is_set():
            now = self.now()
            first = self.first_audio_after_reference
            if self.leg_open and first is not None:
                if now - first >= after_s and self.playback_end > now:
                    return True
                if self.agent_quiet_for(now) >= quiet_s:
                    return False
            if now >= deadline:
                return False
            await asyncio.sleep(self.poll_s)
        return False

    async def hang_up(self) -> None:
        self._hangup = True
        await self.ended.wait()


async def run_script(
    phone: Phone,
    scenario: Scenario,
    audio_for: Callable[[Say | BargeIn], bytes],
    *,
    notes: list[str],
    steps: Sequence[object] | None = None,
) -> None:
    """Play the caller's steps against the phone; problems become ``notes`` (failures)."""
    quiet_s = scenario.quiet_ms / 1000
    for step in steps if steps is not None else scenario.steps:
        if phone.ended.is_set():
            if not isinstance(step, Hangup | Transfer):
                notes.append(f"call ended before step {step!r}")
            return
        if isinstance(step, Say):
            await phone.speak("say", step.text or str(step.wav), audio_for(step))
        elif isinstance(step, WaitForAgent):
            if not await phone.wait_for_agent(quiet_s=quiet_s, timeout_s=step.timeout_s):
                notes.append(f"the agent did not answer within {step.timeout_s:g} s (at {phone.now():.1f} s)")
        elif isinstance(step, Wait):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, BargeIn):
            if not await phone.wait_to_barge_in(
                after_s=step.after_ms / 1000, quiet_s=quiet_s, timeout_s=step.timeout_s
            ):
                notes.append(f"barge-in {step.text!r}: the agent was not talking, spoke after it instead")
            await phone.speak("barge_in", step.text, audio_for(step))
        elif isinstance(step, Dtmf):
            await phone.press(step.digits)
        elif isinstance(step, Transfer):
            phone.transfer_policies.append(step)
        elif isinstance(step, Hangup):
            await phone.hang_up()
            return
