"""The words a call's record is written in: outcomes, Twilio statuses, stream signals.

They are ``StrEnum``s stored as the same strings the columns always held (``calls.outcome``,
``calls.status``, ``calls.transfer_status``), so no data migration changes their meaning;
a member compares equal to its string, and an unknown string read back from the database
stays a plain ``str``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CallOutcome(StrEnum):
    """How a call ended, or what it is waiting for (``calls.outcome``)."""

    TRANSFER_REQUESTED = "transfer_requested"  # the agent asked for a human; <Dial> follows
    TRANSFERRED = "transferred"  # the human answered
    TRANSFER_REFUSED = "transfer_refused"  # the target was not configured (or not allowed)
    ENDED_BY_AGENT = "ended_by_agent"
    ENDED_BY_ADMIN = "ended_by_admin"
    CALLER_HUNG_UP = "caller_hung_up"
    RECONNECTS_EXHAUSTED = "reconnects_exhausted"
    RATE_LIMITED = "rate_limited"  # over a limit (server/core/limits.py): a short refusal, no agent
    MAX_CALL_LENGTH = "max_call_length"  # the call reached ``max_call_minutes``: a fixed goodbye, no model
    # outbound
    VOICEMAIL = "voicemail"  # a machine answered; the flow's message was left
    FAX = "fax"  # a fax answered; hung up
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"
    CANCELED = "canceled"
    OPTED_OUT = "opted_out"  # the callee asked not to be called again
    NOT_INTERESTED = "not_interested"  # the callee declined; the agent said goodbye


class CallStatus(StrEnum):
    """Twilio's ``CallStatus`` (``calls.status``)."""

    QUEUED = "queued"
    INITIATED = "initiated"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.FAILED, CallStatus.NO_ANSWER, CallStatus.CANCELED}
)


class TransferStatus(StrEnum):
    """Where a ``<Dial>`` transfer stands (``calls.transfer_status``); past ``dialing`` it is
    Twilio's ``DialCallStatus``."""

    DIALING = "dialing"
    REFUSED = "refused"
    COMPLETED = "completed"
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELED = "canceled"


# The ``DialCallStatus`` values of a <Dial> a human took: the transfer is done.
DIAL_ANSWERED = frozenset({TransferStatus.COMPLETED, TransferStatus.ANSWERED})


class SignalKind(StrEnum):
    """Why a media stream (re)started other than a fresh call."""

    RECONNECTED = "reconnected"  # the previous stream dropped: resume the thread
    TRANSFER_FAILED = "transfer_failed"  # the <Dial> was not answered: back to the agent


@dataclass(frozen=True, slots=True)
class StreamSignal:
    """A signal carried in a stream token (``kind[:detail]``, e.g. ``transfer_failed:busy``)."""

    kind: SignalKind
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.detail}" if self.detail else str(self.kind)

    @classmethod
    def parse(cls, text: str) -> StreamSignal | None:
        """The signal in a token's ``s`` claim; None for a fresh call or an unknown kind."""
        kind, _, detail = text.partition(":")
        try:
            return cls(SignalKind(kind), detail)
        except ValueError:
            return None


# AMD verdicts (Twilio's AnsweredBy) that mean a machine took the call.
MACHINE_ANSWERS = frozenset({"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other"})

# The outcome of an outbound call that never got answered, by its final CallStatus.
UNANSWERED_OUTCOMES = {
    "busy": CallOutcome.BUSY,
    "no-answer": CallOutcome.NO_ANSWER,
    "failed": CallOutcome.FAILED,
    "canceled": CallOutcome.CANCELED,
}
