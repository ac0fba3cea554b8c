"""Instant speech that carries its text inside the audio: the simulator's stand-in for
ASR and TTS in load runs and whole-call tests.

``TextSynthesizer`` turns a phrase into loud 8 kHz mu-law that encodes the phrase's UTF-8
bytes between two marker runs, padded to a speech-like duration. ``TextRecognizer`` finds
those blocks in the audio pushed to it and emits ``SpeechStarted`` at the first loud frame
and a ``Final`` with the decoded text after ``endpoint_ms`` of silence. Mu-law travels
byte-exact from the server's TTS through Twilio's protocol to the simulator and back, so
the server "hears" exactly what the simulated caller "said" and the simulator transcribes
exactly what the caller heard (``clear`` cuts make a phrase unheard). ``TextVad`` calls
loud frames speech, for barge-in. Nothing here loads a model or opens a socket.

``PhraseSynthesizer`` is the plumbing every in-process synthesizer shares.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from dialgraph.telephony.audio import FRAME_BYTES
from dialgraph.telephony.speech.base import AudioChunk, Final, RecognizerCapabilities, SpeechStarted
from dialgraph.telephony.speech.stream import QueuedRecognitionStream

START = bytes(range(0x10, 0x18))
END = bytes(reversed(START))
FILL = b"\x00\x80"
QUIET = frozenset({0xFF, 0x7F})  # the two mu-law codes of a zero sample


class PhraseSynthesizer:
    """A streaming synthesizer: phrases in order, numbered from 0, each cut into the
    chunks ``chunks`` returns (the last one flagged); ``pause`` runs between two chunks of
    a phrase. A phrase with no chunks is skipped and takes no number."""

    def chunks(self, phrase: str) -> list[bytes]:
        raise NotImplementedError

    async def pause(self) -> None:
        pass

    async def synthesize(
        self,
        phrases: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> AsyncIterator[AudioChunk]:
        index = 0
        async for phrase in phrases:
            chunks = self.chunks(phrase)
            if not chunks:
                continue
            for n, chunk in enumerate(chunks):
                if n:
                    await self.pause()
                yield AudioChunk(chunk, index, last=n == len(chunks) - 1)
            index += 1

    async def aclose(self) -> None:
        pass


def encode_text(text: str, *, ms_per_char: float = 25.0, min_ms: float = 300.0) -> bytes:
    """Loud mu-law carrying ``text``; whole 20 ms frames."""
    body = b"".join(bytes((b >> 4, b & 0x0F)) for b in text.encode("utf-8"))
    audio = START + body + END
    target = int(max(min_ms, ms_per_char * len(text)) * 8)
    if len(audio) < target:
        audio += FILL * ((target - len(audio)) // 2 + 1)
    pad = (-len(audio)) % FRAME_BYTES
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
    return sum(1 for b in frame if b not in QUIET) > len(frame) // 2


class TextVad:
    def speech_probability(self, frame: bytes) -> float:
        return 1.0 if is_loud(frame) else 0.0

    def reset(self) -> None:
        pass


class TextRecognitionStream(QueuedRecognitionStream):
    def __init__(self, endpoint_frames: int) -> None:
        super().__init__()
        self._endpoint = endpoint_frames
        self._utterance = bytearray()
        self._speaking = False
        self._silent = 0
        self._frames = 0
        self._start = 0.0
        self._previous = b""

    def _hear(self, audio: bytes) -> None:
        for i in range(0, len(audio), FRAME_BYTES):
            self._frame(audio[i : i + FRAME_BYTES])

    def _frame(self, frame: bytes) -> None:
        self._frames += 1
        now = self._frames * 0.02
        if is_loud(frame):
            if not self._speaking:
                self._speaking, self._start = True, now
                self._emit(SpeechStarted(at=now))
                self._utterance += self._previous  # pre-roll: a block may start mid-frame
            self._silent = 0
            self._utterance += frame
        elif self._speaking:
            self._utterance += frame
            self._silent += 1
            if self._silent >= self._endpoint:
                self._say(now)
        self._previous = frame

    def _say(self, now: float) -> None:
        text = " ".join(decode_texts(bytes(self._utterance)))
        if text:
            self._emit(Final(text=text, start=self._start, end=now, speech_final=True, confidence=1.0))
        self._utterance.clear()
        self._speaking = False
        self._silent = 0

    def _flush(self) -> None:
        if self._speaking:
            self._say(self._frames * 0.02)
        super()._flush()


class TextRecognizer:
    capabilities = RecognizerCapabilities(interim_results=False, vad_events=True)

    def __init__(self, *, endpoint_ms: int = 300) -> None:
        self.endpoint_frames = max(1, endpoint_ms // 20)

    def stream(self, *, language: str | None = None) -> TextRecognitionStream:
        return TextRecognitionStream(self.endpoint_frames)

    async def aclose(self) -> None:
        pass


class TextSynthesizer(PhraseSynthesizer):
    """Two chunks a phrase, as a streaming TTS would send them (cut on a frame boundary);
    a blank phrase is one empty chunk."""

    def __init__(self, *, ms_per_char: float = 25.0) -> None:
        self.ms_per_char = ms_per_char

    def chunks(self, phrase: str) -> list[bytes]:
        audio = encode_text(phrase, ms_per_char=self.ms_per_char) if phrase.strip() else b""
        half = len(audio) // 2 // FRAME_BYTES * FRAME_BYTES
        return [audio[:half], audio[half:]] if half else [audio]
