"""What one call's session knows: ``CallState``, and the reply in progress (``Reply``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from dialgraph.server.core.turns import EndCallRequest, TransferRequest


@dataclass(slots=True)
class TurnTiming:
    """One agent reply. Times are the session clock (seconds)."""

    generation: int
    trigger: str  # greeting | signal | caller | dtmf
    started_at: float  # caller's final transcript (or the trigger) processed
    first_audio_at: float | None = None  # first media frame of the reply sent
    done_at: float | None = None
    interrupted: bool = False

    @property
    def latency_ms(self) -> float | None:
        if self.first_audio_at is None:
            return None
        return (self.first_audio_at - self.started_at) * 1000


@dataclass(slots=True)
class Reply:
    generation: int
    timing: TurnTiming
    phrases: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    tasks: tuple[asyncio.Task[None], ...] = ()
    request: TransferRequest | EndCallRequest | None = None
    buf: bytearray = field(default_factory=bytearray)
    buf_phrase: int = -1
    done: bool = False
    failed: str = ""  # "runner" | "synth": cut short by an error, repaired like an interruption


@dataclass(slots=True)
class CallState:
    """Everything one call's session knows, in one place."""

    call_sid: str
    stream_sid: str
    generation: int = 0
    last_chunk: int = -1
    last_ts: int = -1
    frames_in: int = 0
    duplicates: int = 0
    silence_frames: int = 0
    protocol_errors: int = 0
    barge_ins: int = 0
    reply: Reply | None = None
    first_audio_gen: int = -1
    ending: bool = False
    end_reason: str = ""
