"""In-process speech fakes that implement the ``telephony.speech`` protocols: instant and
deterministic, no models, no network.

They share their plumbing (``QueuedRecognitionStream``, ``PhraseSynthesizer``) and differ
in what a recognizer hears and what a voice sounds like:

- ``NullRecognizer`` / ``NullSynthesizer`` hear nothing and say nothing: for tests that
  build the whole app but never stream audio (webhooks, admin API).
- ``ScriptedRecognizer`` / ``ScriptedSynthesizer`` follow a scripted timeline: a stream
  emits scripted events once the session has pushed a given number of 20 ms frames; every
  byte of phrase number ``serial`` is ``phrase_byte(serial)``, so a test can tell from the
  audio it received which phrase (and which reply) it belongs to. For whole calls asserted
  message by message, and for the media-path bench.
- ``WordCodeRecognizer`` / ``ToneSynthesizer`` understand the word-coded audio of
  ``tests.fakes.deepgram_server`` (one mu-law byte value per vocabulary word) and speak
  bytes distinct from the ElevenLabs fake's: stand-ins behind a failing cloud provider,
  so a test can tell whose voice the caller heard.
- ``TextRecognizer`` / ``TextSynthesizer`` / ``TextVad`` carry the text inside the audio,
  for whole calls through the phone simulator and the load bench.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterable, AsyncIterator, Sequence

from dialgraph.telephony.speech.base import (
    FRAME_BYTES,
    AudioChunk,
    Final,
    RecognitionEvent,
    RecognizerCapabilities,
    SpeechStarted,
    SynthesizerCapabilities,
    UtteranceEnd,
)
from tests.fakes.deepgram_server import RATE, SILENCE, WORD_BASE


# --- shared plumbing --------------------------------------------------------------------------
class QueuedRecognitionStream:
    """A recognition stream whose events go through a queue: subclasses turn pushed audio
    into events (``hear``) and say what is pending when input ends (``flush``). Audio
    pushed after ``aclose`` is ignored; iteration ends at ``end_input`` or ``aclose``."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[RecognitionEvent | None] = asyncio.Queue()
        self.closed = False

    def hear(self, audio: bytes) -> None:
        """Audio pushed while the stream is open; ``emit`` what it says."""

    def flush(self) -> None:
        """Input has ended: ``emit`` what is pending."""

    def emit(self, event: RecognitionEvent) -> None:
        self._events.put_nowait(event)

    def push(self, audio: bytes) -> None:
        if not self.closed:
            self.hear(audio)

    async def end_input(self) -> None:
        self.flush()
        self._events.put_nowait(None)

    async def aclose(self) -> None:
        self.closed = True
        self._events.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[RecognitionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RecognitionEvent]:
        while (event := await self._events.get()) is not None:
            yield event
        self._events.put_nowait(None)  # a later reader ends too


class PhraseSynthesizer:
    """A streaming synthesizer: phrases in order, numbered from 0, each cut into the
    chunks ``chunks`` returns (the last one flagged); ``pause`` runs between two chunks of
    a phrase. A phrase with no chunks is skipped and takes no number."""

    capabilities = SynthesizerCapabilities(streaming_input=True)

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


# --- nothing at all -----------------------------------------------------------------------------
class NullRecognizer:
    """Streams accept audio and emit no events."""

    capabilities = RecognizerCapabilities(streaming=True, interim_results=False)

    def stream(self, *, language: str | None = None) -> QueuedRecognitionStream:
        return QueuedRecognitionStream()

    async def aclose(self) -> None:
        pass


class NullSynthesizer(PhraseSynthesizer):
    """One empty, final chunk per phrase."""

    def chunks(self, phrase: str) -> list[bytes]:
        return [b""]


# --- a scripted timeline ------------------------------------------------------------------------
class ScriptedRecognitionStream(QueuedRecognitionStream):
    def __init__(
        self, script: Sequence[tuple[int, RecognitionEvent]], *, repeat_every: int | None, keep_audio: bool
    ) -> None:
        super().__init__()
        self._script = sorted(script, key=lambda item: item[0])
        self._repeat = repeat_every
        self._base = 0
        self._next = 0
        self._bytes = 0
        self._keep = keep_audio
        self.audio = bytearray()

    @property
    def frames(self) -> int:
        return self._bytes // FRAME_BYTES

    def hear(self, audio: bytes) -> None:
        if self._keep:
            self.audio += audio
        self._bytes += len(audio)
        frames = self._bytes // FRAME_BYTES
        while True:
            if self._next >= len(self._script):
                if not self._repeat or not self._script:
                    return
                self._base += self._repeat
                self._next = 0
            at, event = self._script[self._next]
            if self._base + at > frames:
                return
            self._next += 1
            self.emit(event)


class ScriptedRecognizer:
    """Every stream plays the same script: ``(after N frames pushed, event)``; with
    ``repeat_every`` the script starts again every that many frames."""

    capabilities = RecognizerCapabilities(streaming=True, interim_results=True, vad_events=True)

    def __init__(
        self,
        script: Sequence[tuple[int, RecognitionEvent]] = (),
        *,
        repeat_every: int | None = None,
        keep_audio: bool = True,
    ) -> None:
        self.script = list(script)
        self.repeat_every = repeat_every
        self.keep_audio = keep_audio
        self.streams: list[ScriptedRecognitionStream] = []

    def stream(self, *, language: str | None = None) -> ScriptedRecognitionStream:
        s = ScriptedRecognitionStream(self.script, repeat_every=self.repeat_every, keep_audio=self.keep_audio)
        self.streams.append(s)
        return s

    async def aclose(self) -> None:
        pass


def phrase_byte(serial: int) -> int:
    """The mu-law byte every sample of the ``serial``-th synthesized phrase carries (never
    0xFF or 0x7F, the silence codes)."""
    return 0x01 + serial % 0x7E


class ScriptedSynthesizer(PhraseSynthesizer):
    """``bytes_per_word`` bytes of ``phrase_byte(serial)`` a word, in ``chunk_bytes`` chunks."""

    def __init__(self, *, bytes_per_word: int = 800, chunk_bytes: int = 400) -> None:
        self.bytes_per_word = bytes_per_word
        self.chunk_bytes = chunk_bytes
        self.phrases: list[str] = []  # every phrase ever synthesized; index = serial

    def audio_for(self, serial: int) -> bytes:
        words = max(1, len(self.phrases[serial].split()))
        return bytes([phrase_byte(serial)]) * (words * self.bytes_per_word)

    def chunks(self, phrase: str) -> list[bytes]:
        serial = len(self.phrases)
        self.phrases.append(phrase)
        audio = self.audio_for(serial)
        return [audio[offset : offset + self.chunk_bytes] for offset in range(0, len(audio), self.chunk_bytes)]


# --- word codes and tones -----------------------------------------------------------------------
class WordCodeStream(QueuedRecognitionStream):
    def __init__(self, vocab: list[str], endpoint_s: float) -> None:
        super().__init__()
        self._vocab = vocab
        self._endpoint = int(endpoint_s * RATE)
        self._t = 0
        self._run: int | None = None
        self._words: list[tuple[str, float, float]] = []
        self._quiet = 0
        self.received = bytearray()

    def hear(self, audio: bytes) -> None:
        self.received += audio
        for value, group in itertools.groupby(audio):
            n = len(list(group))
            if value not in SILENCE:
                if value != self._run:
                    self._word_end()
                    if not self._words:
                        self.emit(SpeechStarted(at=self._t / RATE))
                    self._run, self._run_start = value, self._t
                self._quiet = 0
            else:
                self._word_end()
                self._quiet += n
                if self._words and self._quiet >= self._endpoint:
                    self._final()
            self._t += n

    def _word_end(self) -> None:
        if self._run is not None:
            self._words.append((self._vocab[self._run - WORD_BASE], self._run_start / RATE, self._t / RATE))
            self._run = None

    def _final(self) -> None:
        words, self._words = self._words, []
        self.emit(Final(" ".join(w for w, _, _ in words), words[0][1], words[-1][2], speech_final=True))
        self.emit(UtteranceEnd(last_word_end=words[-1][2]))

    def flush(self) -> None:
        self._word_end()
        if self._words:
            self._final()
        self.closed = True  # audio after the end of input is ignored


class WordCodeRecognizer:
    capabilities = RecognizerCapabilities(streaming=True, interim_results=False, vad_events=True)

    def __init__(self, vocab: list[str], *, endpoint_s: float = 0.3) -> None:
        self.vocab = vocab
        self.endpoint_s = endpoint_s
        self.streams: list[WordCodeStream] = []

    def stream(self, *, language: str | None = None) -> WordCodeStream:
        s = WordCodeStream(self.vocab, self.endpoint_s)
        self.streams.append(s)
        return s

    async def aclose(self) -> None:
        pass


def tone_audio(text: str) -> bytes:
    """What ``ToneSynthesizer`` 'says' for ``text`` (never equal to the ElevenLabs fake's)."""
    return b"".join(bytes([0x90 + ord(c) % 0x30]) * 40 for c in text.strip())


class ToneSynthesizer(PhraseSynthesizer):
    """Two chunks a phrase, with a yield to the loop between them; blank phrases are skipped."""

    capabilities = SynthesizerCapabilities(streaming_input=True, voices=("tone",))

    def __init__(self) -> None:
        self.spoken: list[str] = []

    def chunks(self, phrase: str) -> list[bytes]:
        if not phrase.strip():
            return []
        self.spoken.append(phrase)
        audio = tone_audio(phrase)
        half = len(audio) // 2
        return [audio[:half], audio[half:]]

    async def pause(self) -> None:
        await asyncio.sleep(0)


# --- text carried in the audio ------------------------------------------------------------------
# ``TextSynthesizer`` turns a phrase into loud 8 kHz mu-law that encodes the phrase's UTF-8
# bytes between two marker runs, padded to a speech-like duration. ``TextRecognizer`` finds
# those blocks in the audio pushed to it and emits ``SpeechStarted`` at the first loud frame
# and a ``Final`` with the decoded text after ``endpoint_ms`` of silence. Mu-law travels
# byte-exact from the server's TTS through Twilio's protocol to the simulator and back, so
# the server "hears" exactly what the simulated caller "said" and the simulator transcribes
# exactly what the caller heard (``clear`` cuts make a phrase unheard). ``TextVad`` calls
# loud frames speech, for barge-in.
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
    return sum(1 for b in frame if b not in SILENCE) > len(frame) // 2


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

    def hear(self, audio: bytes) -> None:
        for i in range(0, len(audio), FRAME_BYTES):
            self._frame(audio[i : i + FRAME_BYTES])

    def _frame(self, frame: bytes) -> None:
        self._frames += 1
        now = self._frames * 0.02
        if is_loud(frame):
            if not self._speaking:
                self._speaking, self._start = True, now
                self.emit(SpeechStarted(at=now))
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
            self.emit(Final(text=text, start=self._start, end=now, speech_final=True, confidence=1.0))
        self._utterance.clear()
        self._speaking = False
        self._silent = 0

    def flush(self) -> None:
        if self._speaking:
            self._say(self._frames * 0.02)


class TextRecognizer:
    capabilities = RecognizerCapabilities(streaming=True, interim_results=False, vad_events=True)

    def __init__(self, *, endpoint_ms: int = 300) -> None:
        self.endpoint_frames = max(1, endpoint_ms // 20)

    def stream(self, *, language: str | None = None) -> TextRecognitionStream:
        return TextRecognitionStream(self.endpoint_frames)

    async def aclose(self) -> None:
        pass


class TextSynthesizer(PhraseSynthesizer):
    """Two chunks a phrase, as a streaming TTS would send them (cut on a frame boundary);
    a blank phrase is one empty chunk."""

    capabilities = SynthesizerCapabilities(streaming_input=True, voices=("text",))

    def __init__(self, *, ms_per_char: float = 25.0) -> None:
        self.ms_per_char = ms_per_char

    def chunks(self, phrase: str) -> list[bytes]:
        audio = encode_text(phrase, ms_per_char=self.ms_per_char) if phrase.strip() else b""
        half = len(audio) // 2 // FRAME_BYTES * FRAME_BYTES
        return [audio[:half], audio[half:]] if half else [audio]
