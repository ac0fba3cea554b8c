"""Call recording (opt-in per flow): a stereo WAV of one call, caller left, agent AS HEARD right.

A ``CallRecorder`` belongs to one media stream. On the 20 ms path it only keeps bytes in
memory (no disk, no decoding, no lock):

* ``caller(payload)`` -- every inbound frame as it arrives (a gap's silence too: the
  protocol object fills gaps, so the n-th frame recorded IS the n-th 20 ms of the stream
  clock). Each call also refines the stream clock's origin on the session clock: the
  earliest ``arrival - n * 20 ms`` seen (a frame can arrive late, never early).
* ``agent(audio, play_at)`` -- the pacer's report of each media message it sent and the
  session-clock instant it starts playing (audio sent ahead is buffered by Twilio and plays
  at ``play_at``, not when sent).
* ``cleared(at)`` -- a barge-in's ``clear`` went out at ``at``: Twilio dropped what it had
  buffered, so the agent audio scheduled after ``at`` was never heard and leaves the
  recording (cut to the sample).

At the end of the stream ``write()`` (blocking: the session runs it in a worker thread)
decodes mu-law to 16-bit PCM, places each agent message at its play time on the stream
clock and writes ``data_dir/recordings/YYYY-MM/<CallSid>.wav`` (8 kHz, 16-bit, 2 channels)
through a temporary file and an atomic rename, so a half-written file is never served.

A call with several streams (a reconnect, a failed transfer that came back to the agent)
keeps ONE file: each later stream is appended to the file of the earlier ones, in order
(the time between streams, a transfer ringing for example, is not in it). The month folder
is the one of the call's first stream.

Memory is bounded by ``max_seconds`` (the call's maximum length): caller audio beyond it is
not kept, nor agent audio playing beyond it. 8 kHz mu-law is 8 kB a second per side.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dialgraph.telephony.audio import FRAME_BYTES, SAMPLE_RATE, ulaw_to_pcm16

RECORDINGS_DIR = "recordings"  # under data_dir (server/privacy/retention.py prunes it by file age)
FRAME_S = FRAME_BYTES / SAMPLE_RATE  # 20 ms
SNAP = 2  # samples: a message starting this close to the last one's end continues it
_SID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def safe_sid(sid: str) -> bool:
    """A CallSid that can name a file (letters, digits, ``-``, ``_``): nothing else is looked up."""
    return bool(_SID.match(sid))


def find_recording(data_dir: Path, sid: str) -> Path | None:
    """The call's recording (``recordings/*/<sid>.wav``), or None (blocking: a directory scan)."""
    if not safe_sid(sid):
        return None
    root = data_dir / RECORDINGS_DIR
    if not root.is_dir():
        return None
    for month in sorted(root.iterdir()):
        path = month / f"{sid}.wav"
        if path.is_file():
            return path
    return None


def delete_recordings(data_dir: Path, sids: list[str]) -> int:
    """Delete these calls' recordings (erasure); the files deleted (blocking)."""
    removed = 0
    for sid in sids:
        path = find_recording(data_dir, sid)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


class CallRecorder:
    """One stream's recording, in memory until ``write`` (see the module docstring)."""

    __slots__ = (
        "_agent",
        "_agent_bytes",
        "_caller",
        "_clock",
        "_limit",
        "_now",
        "_origin",
        "_started",
        "call_sid",
        "data_dir",
    )

    def __init__(
        self,
        *,
        call_sid: str,
        data_dir: Path,
        max_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        if not safe_sid(call_sid):
            raise ValueError("a CallSid must be letters, digits, '-' or '_' to name a recording")
        self.call_sid = call_sid
        self.data_dir = data_dir
        self._clock = clock
        self._now = now
        self._limit = int(max(1.0, max_seconds) * SAMPLE_RATE)  # mu-law bytes (= samples) per side
        self._caller = bytearray()
        self._agent: list[tuple[float, bytes]] = []  # (session-clock play start, mu-law)
        self._agent_bytes = 0
        self._origin: float | None = None  # session-clock instant of the stream clock's 0
        self._started = clock()

    # --- the 20 ms path: memory only ---------------------------------------------------------
    def caller(self, payload: bytes) -> None:
        """Inbound audio (one frame, or a gap's silence), in stream order."""
        buf = self._caller
        origin = self._clock() - len(buf) / SAMPLE_RATE
        if self._origin is None or origin < self._origin:
            self._origin = origin
        if len(buf) < self._limit:
            buf += payload[: self._limit - len(buf)]

    def agent(self, audio: bytes, play_at: float) -> None:
        """A media message the pacer sent, starting to play at ``play_at`` (session clock)."""
        if self._agent_bytes < self._limit and audio:
            self._agent.append((play_at, audio))
            self._agent_bytes += len(audio)

    def cleared(self, at: float) -> None:
        """``clear`` went out at ``at``: agent audio scheduled after it was never heard."""
        agent = self._agent
        while agent:
            start, audio = agent[-1]
            if start + len(audio) / SAMPLE_RATE <= at:
                break
            agent.pop()
            self._agent_bytes -= len(audio)
            keep = max(0, int((at - start) * SAMPLE_RATE))
            if keep > 0:
                agent.append((start, audio[:keep]))
                self._agent_bytes += keep
                break

    @property
    def empty(self) -> bool:
        return not self._caller and not self._agent

    # --- the end of the stream: in a worker thread ------------------------------------------
    def stereo(self) -> np.ndarray:
        """The stream as interleaved 16-bit samples (left caller, right agent), on the stream
        clock: caller frame n at n * 20 ms, agent audio at its play time."""
        origin = self._origin if self._origin is not None else self._started
        if self._agent:  # agent audio before the first inbound frame: start the file there
            origin = min(origin, self._agent[0][0])
        lead = round(((self._origin if self._origin is not None else origin) - origin) * SAMPLE_RATE)
        left = np.frombuffer(ulaw_to_pcm16(bytes(self._caller)), dtype="<i2")
        placed: list[tuple[int, np.ndarray]] = []
        end = lead + len(left)
        cursor = -1 - SNAP  # no message yet
        for start, audio in self._agent:
            at = max(0, round((start - origin) * SAMPLE_RATE))
            if abs(at - cursor) <= SNAP:  # Twilio plays queued audio back to back: no float seams
                at = cursor
            pcm = np.frombuffer(ulaw_to_pcm16(audio), dtype="<i2")
            placed.append((at, pcm))
            cursor = at + len(pcm)
            end = max(end, cursor)
        end = min(end, self._limit + lead)
        frames = np.zeros((end, 2), dtype="<i2")
        frames[lead : lead + len(left), 0] = left[: max(0, end - lead)]
        for at, pcm in placed:
            if at < end:
                n = min(len(pcm), end - at)
                frames[at : at + n, 1] = pcm[:n]
        return frames

    def write(self) -> Path | None:
        """Write (or append to) the call's WAV; its path, or None when nothing was recorded.
        Blocking: run it in a worker thread."""
        if self.empty:
            return None
        frames = self.stereo()
        existing = find_recording(self.data_dir, self.call_sid)
        path = existing or self.data_dir / RECORDINGS_DIR / self._now().strftime("%Y-%m") / f"{self.call_sid}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with wave.open(str(tmp), "wb") as out:
                out.setnchannels(2)
                out.setsampwidth(2)
                out.setframerate(SAMPLE_RATE)
                if existing is not None:  # an earlier stream of this call: keep it, then this one
                    with wave.open(str(existing), "rb") as before:
                        if (before.getnchannels(), before.getsampwidth(), before.getframerate()) == (2, 2, SAMPLE_RATE):
                            out.writeframes(before.readframes(before.getnframes()))
                out.writeframes(frames.tobytes())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return path


__all__ = ["RECORDINGS_DIR", "CallRecorder", "delete_recordings", "find_recording", "safe_sid"]
