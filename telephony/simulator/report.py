"""What a simulated call produced: the result, the agent's turns, the recording, the report.

The agent's side is cut into turns from the recording as heard (Twilio's playback, with
``clear`` already applied), at every caller line, ``clear`` and new media leg; each turn is
transcribed with a ``SpeechRecognizer`` (the offline ASR by default).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dialgraph.telephony.audio import audioop
from dialgraph.telephony.simulator.expect import Check
from dialgraph.telephony.simulator.protocol import FRAME_BYTES, SAMPLE_RATE
from dialgraph.telephony.speech.base import Final, SpeechRecognizer

VOICED_RMS = 200.0


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    at: float
    role: str  # caller | agent | twilio
    text: str


@dataclass(frozen=True, slots=True)
class TurnLatency:
    """Caller end of speech (or DTMF) -> first agent audio frame received."""

    index: int
    kind: str
    caller: str
    reply_ms: float | None
    server_ms: float | None = None
    clear_ms: float | None = None  # barge-in: caller onset -> `clear` received


@dataclass(frozen=True, slots=True)
class AgentSegment:
    start: float
    end: float
    audio: bytes


@dataclass
class SimulationResult:
    """Everything one simulated call produced (see ``telephony.simulator.simulate``)."""

    scenario: str
    call_sid: str
    ok: bool
    checks: list[Check]
    failures: list[str]
    transcript: list[TranscriptLine]
    turns: list[TurnLatency]
    violations: list[dict[str, Any]]
    transfers: list[dict[str, Any]]
    ended_by: str
    legs: int
    clears: int
    marks_echoed: int
    duration_s: float
    agent_gap_p99_ms: float | None = None
    underruns: int = 0
    recording: Path | None = None
    server_call: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def protocol_violations(self) -> int:
        return len(self.violations)

    def reply_latencies_ms(self) -> list[float]:
        return [t.reply_ms for t in self.turns if t.reply_ms is not None]

    def to_json(self) -> str:
        data = asdict(self)
        data["recording"] = str(self.recording) if self.recording else None
        return json.dumps(data, indent=2, default=str)


def _voiced_frames(track: bytes) -> np.ndarray:
    usable = len(track) - len(track) % FRAME_BYTES
    if usable <= 0:
        return np.zeros(0, dtype=bool)
    pcm = np.frombuffer(audioop.ulaw2lin(bytes(track[:usable]), 2), dtype=np.int16).astype(np.float32)
    rms = np.sqrt(np.mean(pcm.reshape(-1, FRAME_BYTES) ** 2, axis=1))
    return rms > VOICED_RMS


def agent_segments(
    track: bytes, boundaries: Sequence[float], *, max_gap_s: float = 1.5, min_voiced_s: float = 0.1
) -> list[AgentSegment]:
    """Runs of agent speech, never crossing a boundary (caller line, clear, new leg)."""
    voiced = _voiced_frames(track)
    frame_s = FRAME_BYTES / SAMPLE_RATE
    cuts = sorted({round(b / frame_s) for b in boundaries} | {0, len(voiced)})
    out: list[AgentSegment] = []
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        idx = np.flatnonzero(voiced[lo:hi]) + lo
        if idx.size == 0:
            continue
        runs = np.split(idx, np.flatnonzero(np.diff(idx) > max_gap_s / frame_s) + 1)
        for run in runs:
            if run.size * frame_s < min_voiced_s:
                continue
            # One frame of margin each side: speech rarely starts on a frame edge.
            a, b = max(lo, int(run[0]) - 1), min(hi, int(run[-1]) + 2)
            out.append(AgentSegment(a * frame_s, b * frame_s, bytes(track[a * FRAME_BYTES : b * FRAME_BYTES])))
    return out


def split_at_pauses(audio: bytes, *, min_pause_s: float = 0.08, min_piece_s: float = 2.0) -> list[bytes]:
    """Cut a turn at its pauses (phrase ends) into pieces of at least ``min_piece_s``.

    Whisper-sized models decode one sentence far better than a long turn: on a 9 s turn
    whisper tiny.en may return only its first word.
    """
    voiced = _voiced_frames(audio)
    frame_s = FRAME_BYTES / SAMPLE_RATE
    pause = max(1, round(min_pause_s / frame_s))
    cuts: list[int] = [0]
    silent = 0
    for i, v in enumerate(voiced):
        silent = 0 if v else silent + 1
        if silent == pause and (i - silent + 1 - cuts[-1]) * frame_s >= min_piece_s:
            cuts.append(i - silent // 2)
    cuts.append(len(audio) // FRAME_BYTES + 1)
    return [audio[a * FRAME_BYTES : b * FRAME_BYTES] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


async def transcribe_turn(recognizer: SpeechRecognizer, audio: bytes) -> str:
    """Text of one agent turn, decoded phrase by phrase."""
    texts = [await transcribe(recognizer, piece) for piece in split_at_pauses(audio)]
    return " ".join(t for t in texts if t)


async def transcribe(recognizer: SpeechRecognizer, audio: bytes, *, timeout_s: float = 60.0) -> str:
    """Text of one stretch of mu-law audio, through a per-utterance recognition stream."""
    stream = recognizer.stream()
    texts: list[str] = []

    async def collect() -> None:
        async for event in stream:
            if isinstance(event, Final) and event.text.strip():
                texts.append(event.text.strip())

    try:
        async with asyncio.timeout(timeout_s):
            collector = asyncio.create_task(collect())
            # A little trailing silence lets a VAD-segmenting recognizer close the utterance.
            padded = audio + b"\xff" * (SAMPLE_RATE // 2)
            for i in range(0, len(padded), FRAME_BYTES):
                stream.push(padded[i : i + FRAME_BYTES])
            await stream.end_input()
            await collector
    except TimeoutError:
        texts.append("[transcription timed out]")
    finally:
        await stream.aclose()
    return " ".join(texts)


def write_stereo_wav(path: Path, caller: bytes, agent: bytes) -> Path:
    """Caller left, agent right, 8 kHz 16-bit, time-aligned as heard."""
    n = max(len(caller), len(agent))
    left = np.frombuffer(audioop.ulaw2lin(bytes(caller) + b"\xff" * (n - len(caller)), 2), dtype=np.int16)
    right = np.frombuffer(audioop.ulaw2lin(bytes(agent) + b"\xff" * (n - len(agent)), 2), dtype=np.int16)
    frames = np.empty(2 * n, dtype="<i2")
    frames[0::2], frames[1::2] = left, right
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(frames.tobytes())
    return path


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[min(98, max(0, round(q) - 1))])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render_report(result: SimulationResult) -> str:
    """The human-readable report the CLI prints."""
    lines = [
        f"dialgraph simulate: {result.scenario}  call {result.call_sid}",
        f"  {result.duration_s:.1f} s, {result.legs} media leg(s), ended by {result.ended_by}",
        "",
        "Transcript",
    ]
    for entry in result.transcript:
        lines.append(f"  [{entry.at:6.1f}s] {entry.role:<6} {entry.text}")
    lines += ["", "Latency (caller end of speech -> first agent audio)"]
    lines.append(f"  {'turn':<5}{'caller':<46}{'reply ms':>9}{'server ms':>10}")
    for t in result.turns:
        caller = t.caller if len(t.caller) <= 44 else t.caller[:41] + "..."
        extra = f"   (barge-in: clear after {t.clear_ms:.0f} ms)" if t.clear_ms is not None else ""
        lines.append(f"  {t.index:<5}{caller:<46}{_ms(t.reply_ms):>9}{_ms(t.server_ms):>10}{extra}")
    replies = result.reply_latencies_ms()
    if replies:
        lines.append(f"  p50 {_ms(percentile(replies, 50))} ms, max {_ms(max(replies))} ms over {len(replies)} turn(s)")
    lines += [
        "",
        f"Protocol: {result.protocol_violations} violation(s), {result.clears} clear(s), "
        f"{result.marks_echoed} mark(s) echoed, agent audio p99 gap {_ms(result.agent_gap_p99_ms)} ms, "
        f"{result.underruns} underrun(s)",
    ]
    for v in result.violations[:5]:
        lines.append(f"  ! {v['reason']}: {v['raw'][:100]}")
    lines += ["", "Expectations"]
    for check in result.checks:
        lines.append(
            f"  {'ok  ' if check.ok else 'FAIL'} {check.label}" + (f"  ({check.detail})" if check.detail else "")
        )
    for failure in result.failures:
        lines.append(f"  FAIL {failure}")
    if result.recording is not None:
        lines += ["", f"Recording: {result.recording} (stereo: caller left, agent right)"]
    lines += ["", "PASSED" if result.ok else "FAILED"]
    return "\n".join(lines)
