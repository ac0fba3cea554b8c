"""The long-lived resources one app holds, built once in the lifespan and closed with it.

Routes reach them through ``request.app.state.services`` (see ``server.deps``). Tests may
pass any of them in to ``create_app`` (fakes at the provider boundary); whatever is not
passed is built from settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dialgraph.server.core.call_events import CallEventWriter
from dialgraph.server.core.db import Database
from dialgraph.server.core.reply_heard import ReplyProgressWriter
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import TurnRunner
from dialgraph.telephony.speech.base import SpeechRecognizer, SpeechSynthesizer, VoiceActivityDetector

if TYPE_CHECKING:  # the Twilio client loads only when the app builds one
    from dialgraph.server.core.overload import Overload
    from dialgraph.server.outbound.placer import OutboundPlacer
    from dialgraph.server.outbound.voicemail import VoicemailCache
    from dialgraph.server.routes.metrics import Metrics
    from dialgraph.telephony.twilio.call_control import CallControl


@dataclass
class Services:
    """What the routes use, for the app's whole lifetime."""

    settings: Settings
    db: Database
    recognizer: SpeechRecognizer
    synthesizer: SpeechSynthesizer
    vad_factory: Callable[[], VoiceActivityDetector]
    runners: Mapping[str, TurnRunner]  # flow name -> runner
    call_control: CallControl
    reply_progress: ReplyProgressWriter  # the process's one writer of calls.reply_heard
    call_events: CallEventWriter  # the process's one writer of call_events (transcripts)
    placer: OutboundPlacer  # places outbound calls (compliance checks, then Twilio REST)
    voicemail_cache: VoicemailCache  # rendered voicemail messages, by CallSid
    metrics: Metrics | None = None  # this process's Prometheus metrics (GET /metrics), fed by the live hub
    overload: Overload | None = None  # [overload]: whether this process takes new calls
    active_calls: dict[str, Any] = field(default_factory=dict)  # CallSid -> CallSession here

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
    call_control: CallControl | None = None
