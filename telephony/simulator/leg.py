"""A media leg driven by the code that holds it, for tests and benches that run their own caller.

``TwilioLeg`` is one ``<Connect><Stream>`` the way Twilio runs it (a ``MediaLeg`` over
``TwilioProtocol``: the handshake signed over the public ``wss://`` URL, ``connected`` and
``start`` with the TwiML's parameters, caller audio every 20 ms, silence unless the caller
speaks, the agent's audio played in real time with each ``mark`` echoed once the audio
before it has played, ``clear`` honoured). Where a scenario's ``Phone`` follows a script,
this caller is told what to do: ``say``, ``press``, ``turn``, ``drop``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Literal

from dialgraph.telephony.simulator.caller import Keypad
from dialgraph.telephony.simulator.media import LegEnd, MediaLeg
from dialgraph.telephony.simulator.protocol import DEFAULT_ACCOUNT_SID, FRAME_BYTES, Violation
from dialgraph.telephony.simulator.webhooks import new_sid, stream_signature


class TwilioLeg:
    """One media stream of a call, Twilio's side: ``async with TwilioLeg(...) as leg``.

    ``server_url`` is where the server listens (``http://127.0.0.1:PORT``), ``public_url``
    the URL it believes it has (what Twilio signs). Times are ``time.perf_counter()``."""

    def __init__(
        self,
        server_url: str,
        *,
        public_url: str,
        auth_token: str,
        call_sid: str,
        parameters: Mapping[str, str],
        account_sid: str = DEFAULT_ACCOUNT_SID,
    ) -> None:
        self.audio = bytearray()  # every agent audio byte received, in order
        self.first_audio_at: float | None = None
        self.last_audio_at = 0.0
        self.violations: list[Violation] = []
        self.closed = asyncio.Event()
        self._opened = asyncio.Event()
        self._caller = bytearray()
        self._keypad = Keypad()
        self._hangup = False
        self._run_task: asyncio.Task[LegEnd] | None = None
        self.leg = MediaLeg(
            url=server_url.replace("http://", "ws://", 1) + "/twilio/media",
            signature=stream_signature(auth_token, public_url),
            phone=self,
            call_sid=call_sid,
            account_sid=account_sid,
            stream_sid=new_sid("MZ"),
            parameters=dict(parameters),
            on_violation=self.violations.append,
        )

    @property
    def stream_sid(self) -> str:
        return self.leg.stream_sid

    @property
    def marks_echoed(self) -> int:
        return self.leg.stats.marks_echoed

    @property
    def clears(self) -> int:
        return self.leg.stats.clears

    async def __aenter__(self) -> TwilioLeg:
        run_task = self._run_task = asyncio.create_task(self.leg.run(), name="twilio-leg")
        opened = asyncio.ensure_future(self._opened.wait())
        await asyncio.wait([opened, run_task], return_when=asyncio.FIRST_COMPLETED)
        if not self._opened.is_set():
            opened.cancel()
            await run_task
            raise ConnectionError(self.leg.error or "the stream closed before it opened")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """The caller hangs up (``stop``, then the socket closes), unless the stream already ended."""
        self._hangup = True
        if self._run_task is not None:
            await self._run_task

    async def drop(self) -> None:
        """The network fails: the TCP connection goes away without a close frame."""
        self.leg.abort()
        if self._run_task is not None:
            await self._run_task

    # --- the caller ----------------------------------------------------------------------------
    def say(self, audio: bytes) -> None:
        """Queue caller audio (sent in 20 ms frames after what is already queued)."""
        self._caller += audio

    async def press(self, digit: str) -> None:
        """The caller presses a key; returns once Twilio has sent the ``dtmf`` message."""
        if not self.closed.is_set():
            await self._keypad.press(digit)

    async def turn(self, audio: bytes = b"", *, digit: str = "") -> bytes:
        """The caller speaks (or presses ``digit``); returns the agent's whole answer once played."""
        before = len(self.audio)
        if digit:
            await self.press(digit)
        self.say(audio)
        await self.until_audio(before + 1)
        await self.until_quiet()
        return bytes(self.audio[before:])

    async def until_quiet(self, quiet_s: float = 0.6, timeout_s: float = 60.0) -> None:
        """Wait until the caller has finished speaking, the agent's audio has played, every
        mark came back, and no agent audio arrived for ``quiet_s``."""
        protocol = self.leg.protocol
        async with asyncio.timeout(timeout_s):
            while not self.closed.is_set():
                now = self.now()
                played = protocol.playback.idle(now) and not protocol.echo_waiting
                if not self._caller and played and now - self.last_audio_at >= quiet_s:
                    return
                await asyncio.sleep(0.05)

    async def until_audio(self, nbytes: int = 1, timeout_s: float = 60.0) -> None:
        """Wait until at least ``nbytes`` of agent audio have arrived on this leg."""
        async with asyncio.timeout(timeout_s):
            while len(self.audio) < nbytes:
                if self.closed.is_set():
                    raise ConnectionError("the stream closed before the agent's audio arrived")
                await asyncio.sleep(0.01)

    # --- the media leg's side (CallerLine) -----------------------------------------------------
    def now(self) -> float:
        return time.perf_counter()

    def next_frame(self, at: float) -> bytes | None:
        if not self._caller:
            return None
        frame = bytes(self._caller[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\xff")
        del self._caller[:FRAME_BYTES]
        return frame

    def take_dtmf(self) -> str | None:
        return self._keypad.take()

    def hangup_requested(self) -> bool:
        return self._hangup

    def on_caller_frame(self, at: float, frame: bytes) -> None:
        pass

    def on_agent_audio(self, received: float, starts: float, audio: bytes) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = received
        self.audio += audio
        self.last_audio_at = received

    def on_clear(self, at: float, cut_end: float) -> None:
        pass

    def on_leg(self, event: Literal["open", "closed"], at: float) -> None:
        if event == "open":
            self._opened.set()
            return
        self.closed.set()
        self._keypad.release()

    def last_caller_action(self) -> float:
        return 0.0
