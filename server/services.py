"""The long-lived resources one app holds, built once in the lifespan and closed with it.

Routes reach them through ``request.app.state.services`` (see ``server.deps``). Tests may
pass any of them in to ``create_app`` (fakes at the provider boundary); whatever is not
passed is built from settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import TurnRunner
from dialgraph.telephony.call.call_log import CallEventWriter
from dialgraph.telephony.call.reply_progress import ReplyProgressWriter
from dialgraph.telephony.speech.base import SpeechRecognizer, SpeechSynthesizer, VoiceActivityDetector

log = structlog.get_logger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    recognizer: SpeechRecognizer
    synthesizer: SpeechSynthesizer
    vad_factory: Callable[[], VoiceActivityDetector]
    runners: Mapping[str, TurnRunner]  # flow name -> runner
    call_control: Any  # telephony.call_control.CallControl
    reply_progress: ReplyProgressWriter  # the process's one writer of calls.reply_heard
    call_events: CallEventWriter  # the process's one writer of call_events (transcripts)
    extras: dict[str, Any] = field(default_factory=dict)

    def runner(self, flow: str) -> TurnRunner:
        return self.runners[flow]


@dataclass
class Overrides:
    """Parts a caller (tests, benchmarks, the simulator) supplies instead of settings."""

    db: Database | None = None
    recognizer: SpeechRecognizer | None = None
    synthesizer: SpeechSynthesizer | None = None
    vad_factory: Callable[[], VoiceActivityDetector] | None = None
    runners: Mapping[str, TurnRunner] | None = None
    call_control: Any = None
