"""What one call's session knows: ``CallState``, and each reply's ``TurnTiming``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dialgraph.telephony.twilio.protocol import MediaStreamProtocol

if TYPE_CHECKING:
    from dialgraph.telephony.call.reply import Reply


@dataclass(slots=True)
class TurnTiming:
    """One agent reply. Times are the session clock (seconds)."""

    generation: int
    trigger: str  # greeting | signal | caller | dtmf
    started_at: float  # caller's final transcript (or the trigger) processed
    first_audio_at: float | None = None  # first media frame of the reply sent
    done_at: float | None = None
    interrupted: bool = False
    # The waterfall (a caller's turn): when the caller stopped speaking (the last word's end
    # on the recogniser's stream clock, moved onto this clock), the graph's first text, the
    # synthesiser's first audio.
    speech_end_at: float | None = None
    first_token_at: float | None = None
    first_tts_audio_at: float | None = None
    # A preemptive reply: started on the caller's pause, held until the turn was confirmed
    # (its first token and TTS audio may come before the caller's end of speech).
    preempted: bool = False

    @property
    def latency_ms(self) -> float | None:
        if self.first_audio_at is None:
            return None
        return (self.first_audio_at - self.started_at) * 1000

    def marks_ms(self) -> dict[str, float]:
        """Each stage's end in ms from the caller's end of speech (else from the trigger):
        ``asr_final_ms`` (turn taken), ``first_token_ms``, ``first_tts_audio_ms``,
        ``first_frame_ms``; a stage that did not happen is left out."""
        origin = self.speech_end_at if self.speech_end_at is not None else self.started_at
        marks = {
            "asr_final_ms": self.started_at,
            "first_token_ms": self.first_token_at,
            "first_tts_audio_ms": self.first_tts_audio_at,
            "first_frame_ms": self.first_audio_at,
        }
        return {k: round((v - origin) * 1000, 1) for k, v in marks.items() if v is not None}


@dataclass(slots=True)
class CallState:
    """Everything one call's session knows, in one place. The stream's counters are its
    protocol object's (``media``)."""

    call_sid: str
    media: MediaStreamProtocol = field(repr=False)
    # Numbers replies for their mark names (``g<n>.``): a barge-in takes a number too.
    generation: int = 0
    barge_ins: int = 0
    preempted: int = 0  # preemptive replies confirmed (sent)
    preempts_discarded: int = 0  # preemptive replies dropped unheard
    reply: Reply | None = None
    ending: bool = False
    end_reason: str = ""

    @property
    def stream_sid(self) -> str:
        return self.media.stream_sid

    @property
    def frames_in(self) -> int:
        return self.media.frames_in

    @property
    def duplicates(self) -> int:
        return self.media.duplicates

    @property
    def silence_frames(self) -> int:
        return self.media.silence_frames

    @property
    def protocol_errors(self) -> int:
        return self.media.protocol_errors
