"""The Deepgram stand-in hearing real speech by script: a transcript with word timings per
utterance, played out against the audio as it arrives.

``DeepgramFake`` recognises word-coded audio only. A benchmark that sends real speech (piper's
voice: the Smart Turn detector needs real prosody) tells ``ScriptedDeepgram`` what the next
connection's caller will say (``expect``: the utterances in order, each its words with times
from the utterance's first voiced frame, e.g. whisper's word timestamps on the rendered audio)
and the stand-in answers the way Deepgram's live API does, on the audio timeline (bytes
received, in 20 ms frames):

* a frame is voiced when its energy is (RMS of the 16-bit samples >= ``voiced_rms``); the
  first voiced frame after an utterance's span (its ``duration``, plus ``GAP_S``) starts the
  next scripted utterance there: ``SpeechStarted`` (``vad_events``);
* a word is heard once the audio reached its end; interims at word ends as
  ``DeepgramTiming.interim_every_ms`` says (``interim_results``);
* ``endpointing`` ms of silence measured on the audio's energy (not the word times) ->
  ``is_final`` + ``speech_final`` with the words ended by then; a mid-sentence pause longer
  than the endpoint ends the result there, as Deepgram's endpointing does;
* ``utterance_end_ms`` of silence after the last word -> ``UtteranceEnd``;
* ``Finalize`` -> an ``is_final`` (``from_finalize``) with the words begun so far, at once.

Every message goes out with the profile's ``result_latency_ms`` as in word-coded mode (the
same ``_Session`` sends them). A connection opened with no script queued is the plain
word-coded stand-in, so ``ScriptedDeepgram`` serves both; ``DeepgramFake`` itself is unchanged.
Voiced audio beyond the script is heard as nothing (no words).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection

from dialgraph.telephony.audio import audioop
from dialgraph.telephony.simulator.vendors.deepgram import RATE, DeepgramFake, ListenConnection, _Session

FRAME = 160  # 20 ms of mu-law at 8 kHz
GAP_S = 0.2  # voice this long after an utterance's span belongs to the next one


@dataclass(frozen=True, slots=True)
class ScriptedWord:
    """``text`` as Deepgram would write it (punctuated), seconds from the utterance's onset."""

    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class ScriptedUtterance:
    """What the caller says next: its words, and its span from the first voiced frame to the
    end of the last (``duration``, seconds; pauses included)."""

    words: tuple[ScriptedWord, ...]
    duration: float


class ScriptedDeepgram(DeepgramFake):
    """``async with ScriptedDeepgram(timing=...) as fake:``; before each call,
    ``await fake.expect(utterances)`` resolves with the connection that took the script."""

    def __init__(self, vocab: list[str] | None = None, *, voiced_rms: int = 100, **kwargs: Any) -> None:
        super().__init__(vocab or [], **kwargs)
        self.voiced_rms = voiced_rms
        self._scripts: deque[tuple[tuple[ScriptedUtterance, ...], asyncio.Future[ListenConnection]]] = deque()

    async def __aenter__(self) -> ScriptedDeepgram:
        await super().__aenter__()
        return self

    def expect(self, script: Sequence[ScriptedUtterance]) -> asyncio.Future[ListenConnection]:
        """The next connection hears ``script``; the future is its ``ListenConnection``."""
        taken: asyncio.Future[ListenConnection] = asyncio.get_running_loop().create_future()
        self._scripts.append((tuple(script), taken))
        return taken

    def _session(self, ws: ServerConnection, conn: ListenConnection) -> _Session:
        while self._scripts:
            script, taken = self._scripts.popleft()
            if not taken.cancelled():
                taken.set_result(conn)
                return ScriptSession(self, ws, conn, script)
        return super()._session(ws, conn)


class ScriptSession(_Session):
    """One connection's audio timeline, heard by script (see the module docstring)."""

    def __init__(
        self, fake: ScriptedDeepgram, ws: ServerConnection, conn: ListenConnection, script: Sequence[ScriptedUtterance]
    ) -> None:
        super().__init__(fake, ws, conn)
        self.voiced_rms = fake.voiced_rms
        self.script = deque(script)
        self.current: ScriptedUtterance | None = None
        self.onset = 0.0  # audio time of the current utterance's first voiced frame
        self.next_word = 0  # index of its first word not heard yet
        self.last_voiced: float | None = None  # audio time the last voiced frame ended
        self._frame = bytearray()

    async def audio(self, data: bytes) -> bool:
        if self.fake.record_audio:
            self.conn.audio += data
        self._frame += data
        while len(self._frame) >= FRAME:
            frame = bytes(self._frame[:FRAME])
            del self._frame[:FRAME]
            start = self.t / RATE
            self.t += FRAME
            now = self.t / RATE
            if audioop.rms(audioop.ulaw2lin(frame, 2), 2) >= self.voiced_rms:
                await self._voiced(start, now)
            await self._hear(until=now)
            await self._quiet_checks(now)
        return False

    async def _voiced(self, start: float, now: float) -> None:
        if self.current is None or start > self.onset + self.current.duration + GAP_S:
            self.current = self.script.popleft() if self.script else None
            self.onset, self.next_word = start, 0
        if self.vad_events and not self.speaking:
            await self._send({"type": "SpeechStarted", "channel": [0], "timestamp": start})
        self.speaking = True
        self.last_voiced = now

    async def _hear(self, *, until: float, begun: bool = False) -> None:
        """Words ended by ``until`` (``begun``: started before it) become heard."""
        words = self.current.words if self.current is not None else ()
        while self.next_word < len(words):
            word = words[self.next_word]
            start, end = self.onset + word.start, self.onset + word.end
            if (start if begun else end) > until:
                return
            self.next_word += 1
            await self._add(word.text, start, min(end, until) if begun else end)

    async def _add(self, word: str, start: float, end: float) -> None:
        """As ``_Session._word_end`` for a word-coded run."""
        self.conn.words.append(word)
        self.pending.append((word, start, end))
        self.last_word_end = end
        self.utterance_open = True
        if self.interim and end - max(self.last_interim, self.pending[0][1]) >= self.interim_every_s:
            self.last_interim = end
            await self._results(is_final=False, speech_final=False, until=end)

    async def _quiet_checks(self, now: float) -> None:
        if self.last_voiced is None or now <= self.last_voiced:
            return
        quiet = now - self.last_voiced
        if quiet >= self.endpointing and self.speaking:
            # the words ended by now (``audio`` heard them): one ending later goes on after
            # the pause (whisper may time a run of spoken digits as one word, "-0123.")
            if self.pending:
                await self._results(is_final=True, speech_final=True, until=now)
            self.speaking = False
        if (
            self.utterance_end is not None
            and self.utterance_open
            and self.last_word_end is not None
            and min(quiet, now - self.last_word_end) >= self.utterance_end
        ):
            self.utterance_open = False
            await self._send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.last_word_end})

    async def finalize(self, *, from_finalize: bool) -> None:
        await self._hear(until=self.t / RATE, begun=True)
        await super().finalize(from_finalize=from_finalize)
