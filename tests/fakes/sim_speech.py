"""Fake speech that carries its text inside the audio, for whole calls through the simulator.

``TextSynthesizer`` turns a phrase into loud 8 kHz mu-law that encodes the phrase's UTF-8
bytes between two marker runs, padded to a speech-like duration. ``TextRecognizer`` finds
those blocks in the audio pushed to it and emits ``SpeechStarted`` at the first loud frame
and a ``Final`` with the decoded text after ``endpoint_ms`` of silence. Mu-law travels
byte-exact from the server's TTS through Twilio's protocol to the simulator and back, so
the server "hears" exactly what the simulated caller "said" and the simulator transcribes
exactly what the caller heard (``clear`` cuts make a phrase unheard). ``TextVad`` calls
loud frames speech, for barge-in. Instant and deterministic: no models, no network.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

from telephony.speech import (
    AudioChunk,
    Final,
    RecognitionEvent,
    RecognizerCapabilities,
    SpeechStarted,
    SynthesizerCapabilities,
)

FRAME = 160
START = bytes(range(0x10, 0x18))
END = bytes(reversed(START))
FILL = b"\x00\x80"


def encode_text(text: str, *, ms_per_char: float = 25.0, min_ms: float = 300.0) -> bytes:
    """Loud mu-law carrying ``text``; whole 20 ms frames."""
    body = b"".join(bytes((b >> 4, b & 0x0F)) for b in text.encode("utf-8"))
    audio = START + body + END
    target = int(max(min_ms, ms_per_char * len(text)) * 8)
    if len(audio) < target:
        audio += FILL * ((target - len(audio)) // 2 + 1)
    pad = (-len(audio)) % FRAME
    return audio + FILL[: pad % 2] + FILL * (pad // 2) if pad else audio


def decode_texts(audio: bytes) -> list[str]:
    """Every complete text block in ``audio``, in order."""
    out: list[str] = []
    pos = 0
    while (start := audio.find(START, pos)) >= 0:
        end = audio.find(END, start + len(START))
        if end < 0:
            break
        body = audio[start + len(START) : end]
        if len(body) % 2 == 0 and all(b < 16 for b in body):
            out.append(bytes((body[i] << 4) | body[i + 1] for i in range(0, len(body), 2)).decode("utf-8", "replace"))
        pos = end + len(END)
    return out


def is_loud(frame: bytes) -> bool:
    return sum(1 for b in frame if b not in (0xFF, 0x7F)) > len(frame) // 2


class TextVad:
    def speech_probability(self, frame: bytes) -> float:
        return 1.0 if is_loud(frame) else 0.0

    def reset(self) -> None:
        pass


class TextRecognitionStream:
    def __init__(self, endpoint_frames: int) -> None:
        self._endpoint = endpoint_frames
        self._events: asyncio.Queue[RecognitionEvent | None] = asyncio.Queue()
        self._utterance = bytearray()
        self._speaking = False
        self._silent = 0
        self._frames = 0
        self._start = 0.0
        self._closed = False
        self._previous = b""

    def push(self, audio: bytes) -> None:
        if self._closed:
            return
        for i in range(0, len(audio), FRAME):
            self._frame(audio[i : i + FRAME])

    def _frame(self, frame: bytes) -> None:
        self._frames += 1
        now = self._frames * 0.02
        if is_loud(frame):
            if not self._speaking:
                self._speaking, self._start = True, now
                self._events.put_nowait(SpeechStarted(at=now))
                self._utterance += self._previous  # pre-roll: a block may start mid-frame
            self._silent = 0
            self._utterance += frame
        elif self._speaking:
            self._utterance += frame
            self._silent += 1
            if self._silent >= self._endpoint:
                self._flush(now)
        self._previous = frame

    def _flush(self, now: float) -> None:
        text = " ".join(decode_texts(bytes(self._utterance)))
        if text:
            self._events.put_nowait(Final(text=text, start=self._start, end=now, speech_final=True, confidence=1.0))
        self._utterance.clear()
        self._speaking = False
        self._silent = 0

    async def end_input(self) -> None:
        if self._speaking:
            self._flush(self._frames * 0.02)
        self._events.put_nowait(None)

    async def aclose(self) -> None:
        self._closed = True
        self._events.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[RecognitionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RecognitionEvent]:
        while (event := await self._events.get()) is not None:
            yield event


class TextRecognizer:
    capabilities = RecognizerCapabilities(streaming=True, interim_results=False, vad_events=True)

    def __init__(self, *, endpoint_ms: int = 300) -> None:
        self.endpoint_frames = max(1, endpoint_ms // 20)

    def stream(self, *, language: str | None = None) -> TextRecognitionStream:
        return TextRecognitionStream(self.endpoint_frames)

    async def aclose(self) -> None:
        pass


class TextSynthesizer:
    capabilities = SynthesizerCapabilities(streaming_input=True, voices=("text",))

    def __init__(self, *, ms_per_char: float = 25.0) -> None:
        self.ms_per_char = ms_per_char

    async def synthesize(
        self, phrases: AsyncIterable[str], *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        index = 0
        async for phrase in phrases:
            audio = encode_text(phrase, ms_per_char=self.ms_per_char) if phrase.strip() else b""
            # Two chunks a phrase, as a streaming TTS would send them.
            half = len(audio) // 2 // FRAME * FRAME
            if half:
                yield AudioChunk(audio[:half], index)
            yield AudioChunk(audio[half:], index, last=True)
            index += 1

    async def aclose(self) -> None:
        pass
