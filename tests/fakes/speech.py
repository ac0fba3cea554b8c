"""In-process speech fakes that only tests use: instant and deterministic, no models, no
network. (The scripted and text-carrying stand-ins live in the product, in
``dialgraph.telephony.simulator.scripted`` and ``.text_speech``: the benches use them too.)

- ``NullRecognizer`` / ``NullSynthesizer`` hear nothing and say nothing: for tests that
  build the whole app but never stream audio (webhooks, admin API).
- ``WordCodeRecognizer`` / ``ToneSynthesizer`` understand the word-coded audio of the
  Deepgram stand-in (``simulator.vendors.deepgram``: one mu-law byte value per vocabulary
  word) and speak bytes distinct from the ElevenLabs stand-in's: stand-ins behind a failing
  cloud provider, so a test can tell whose voice the caller heard.
"""

from __future__ import annotations

import asyncio
import itertools

from dialgraph.telephony.simulator.text_speech import PhraseSynthesizer
from dialgraph.telephony.simulator.vendors.deepgram import RATE, SILENCE, WORD_BASE
from dialgraph.telephony.speech.base import Final, RecognizerCapabilities, SpeechStarted, UtteranceEnd
from dialgraph.telephony.speech.stream import QueuedRecognitionStream


# --- nothing at all -----------------------------------------------------------------------------
class NullRecognizer:
    """Streams accept audio and emit no events."""

    capabilities = RecognizerCapabilities(interim_results=False)

    def stream(self, *, language: str | None = None) -> QueuedRecognitionStream:
        return QueuedRecognitionStream()

    async def aclose(self) -> None:
        pass


class NullSynthesizer(PhraseSynthesizer):
    """One empty, final chunk per phrase."""

    def chunks(self, phrase: str) -> list[bytes]:
        return [b""]


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

    def _hear(self, audio: bytes) -> None:
        self.received += audio
        for value, group in itertools.groupby(audio):
            n = len(list(group))
            if value not in SILENCE:
                if value != self._run:
                    self._word_end()
                    if not self._words:
                        self._emit(SpeechStarted(at=self._t / RATE))
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
        self._emit(Final(" ".join(w for w, _, _ in words), words[0][1], words[-1][2], speech_final=True))
        self._emit(UtteranceEnd(last_word_end=words[-1][2]))

    def _flush(self) -> None:
        self._word_end()
        if self._words:
            self._final()
        super()._flush()


class WordCodeRecognizer:
    capabilities = RecognizerCapabilities(interim_results=False, vad_events=True)

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
