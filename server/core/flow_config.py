"""The configuration of a call flow: how it talks, when it is open, whom it may hand over to.

One ``FlowSettings`` per ``[flows.<name>]`` table of ``dialgraph.toml``; tools and graphs
read it from the call's context. It is also validated on its own when a run started over
HTTP (LangGraph Studio) carries it as JSON.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dialgraph.server.core.language import LANGUAGES
from dialgraph.server.core.limits import LimitOverrides
from dialgraph.server.core.webhooks_config import FlowWebhooks

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_KEYTERMS = 50  # Deepgram allows 500 tokens of keyterms per stream: stay well inside it
MAX_KEYTERM_CHARS = 60


class TransferTarget(BaseModel):
    """A human the agent may hand a caller to. Only these can ever be dialled."""

    model_config = ConfigDict(extra="forbid")

    number: str = Field(pattern=r"^\+[1-9]\d{6,14}$", description="E.164 number to <Dial>")
    description: str = ""
    timeout_s: int = Field(default=20, ge=5, le=120, description="ring time before giving up")


E164 = r"^\+[1-9]\d{6,14}$"
DTMF_KEYS = frozenset("0123456789*#")


class CallingWindow(BaseModel):
    """Local calling hours and weekdays, evaluated in the *callee's* time zone."""

    model_config = ConfigDict(extra="forbid")

    start: str = Field(default="09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(default="21:00", pattern=r"^([01]\d|2[0-4]):[0-5]\d$")
    days: list[str] = Field(default_factory=lambda: list(WEEKDAYS))

    @field_validator("days")
    @classmethod
    def _weekdays(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d not in WEEKDAYS]
        if bad:
            raise ValueError(f"unknown weekday(s) {', '.join(bad)} (use {', '.join(WEEKDAYS)})")
        if not v:
            raise ValueError("a calling window needs at least one day")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> CallingWindow:
        if self.start >= self.end:
            raise ValueError(f"calling window {self.start}-{self.end} ends before it starts")
        return self

    def _opens(self, day: dt.date) -> tuple[dt.time, dt.time] | None:
        if WEEKDAYS[day.weekday()] not in self.days:
            return None
        close = dt.time.max if self.end == "24:00" else dt.time.fromisoformat(self.end)
        return dt.time.fromisoformat(self.start), close

    def allows(self, now_utc: dt.datetime, zone: ZoneInfo) -> bool:
        local = now_utc.astimezone(zone)
        span = self._opens(local.date())
        return span is not None and span[0] <= local.time() < span[1]

    def next_allowed(self, now_utc: dt.datetime, zones: Sequence[ZoneInfo]) -> dt.datetime | None:
        """None when a call is allowed now in every zone of ``zones``; else the earliest UTC
        instant (to the minute) at which it is, looking up to 8 days ahead."""
        if all(self.allows(now_utc, z) for z in zones):
            return None
        candidates: set[dt.datetime] = set()
        for zone in zones:  # the window's openings in each zone are the only moments it can start
            local_day = now_utc.astimezone(zone).date()
            for offset in range(9):
                day = local_day + dt.timedelta(days=offset)
                span = self._opens(day)
                if span is not None:
                    opening = dt.datetime.combine(day, span[0], tzinfo=zone).astimezone(dt.UTC)
                    if opening > now_utc:
                        candidates.add(opening)
        for at in sorted(candidates):
            if all(self.allows(at, z) for z in zones):
                return at
        return None if not candidates else min(candidates)


class DltFields(BaseModel):
    """India's TRAI DLT registration facts of the sender (TCCCPR 2018)."""

    model_config = ConfigDict(extra="forbid")

    entity_id: str | None = Field(default=None, description="principal entity (PE) id registered on DLT")
    header: str | None = Field(default=None, description="registered caller-ID header")
    template_id: str | None = Field(default=None, description="content template id, when the call uses one")

    def merged(self, other: DltFields | None) -> DltFields:
        """``other``'s fields where set, else ours."""
        if other is None:
            return self
        return DltFields(**{**self.model_dump(exclude_none=True), **other.model_dump(exclude_none=True)})


_TURN_DOC = {
    "detector": "'smart_turn': score the caller's pauses (Deepgram and whisper paths); 'off': the "
    "recognizer's own endpointing alone (Deepgram's endpointing, whisper's 500 ms)",
    "pause_ms": "silence before a pause is scored",
    "end_above": "end the turn at the pause when p >= this; unset: whisper never does (measured: more "
    "cut-offs), Deepgram ends it at p >= hold_below",
    "hold_below": "p below this holds the turn up to max_wait_ms (Deepgram: its speech_final does not end it)",
    "max_wait_ms": "the longest a held turn waits, from the start of the pause",
    "endpoint_ms": "the endpoint after a verdict that neither ends nor holds (Deepgram: only with end_above)",
    "finalize_at_pause": "Deepgram: send Finalize when a pause is scored, not after the verdict, so the words are "
    "final by the time it comes (false: only an ending verdict finalizes)",
}


class TurnSettings(BaseModel):
    """``[turn]``: the semantic end-of-turn detector, on both recognition paths: Deepgram
    (``telephony/speech/cloud_turns.py``: ends a turn with ``Finalize``, holds it against
    Deepgram's ``speech_final``) and offline whisper (``telephony/speech/offline_asr.py``;
    ``python -m bench.turn_taking`` for the trade-off). A flow may override any key under
    ``[flows.NAME.turn]`` (Smart Turn is weaker on code-mixed Hinglish)."""

    model_config = ConfigDict(extra="forbid")

    detector: Literal["off", "smart_turn"] = Field(default="off", description=_TURN_DOC["detector"])
    pause_ms: int = Field(default=160, ge=60, le=1000, description=_TURN_DOC["pause_ms"])
    end_above: float | None = Field(default=None, ge=0.0, le=1.0, description=_TURN_DOC["end_above"])
    hold_below: float = Field(default=0.5, ge=0.0, le=1.0, description=_TURN_DOC["hold_below"])
    max_wait_ms: int = Field(default=1200, ge=200, le=5000, description=_TURN_DOC["max_wait_ms"])
    endpoint_ms: int = Field(default=350, ge=100, le=5000, description=_TURN_DOC["endpoint_ms"])
    finalize_at_pause: bool = Field(default=True, description=_TURN_DOC["finalize_at_pause"])

    @model_validator(mode="after")
    def _ordered(self) -> TurnSettings:
        self._check("turn")
        return self

    def _check(self, where: str) -> None:
        if self.end_above is not None and self.end_above < self.hold_below:
            raise ValueError(f"{where}.end_above ({self.end_above}) is below hold_below ({self.hold_below})")
        if self.max_wait_ms <= self.pause_ms:
            raise ValueError(f"{where}.max_wait_ms ({self.max_wait_ms}) must exceed pause_ms ({self.pause_ms})")

    def merged(self, overrides: TurnOverrides | None, *, where: str = "turn") -> TurnSettings:
        """These settings with the keys ``overrides`` sets; ``where`` names the table in errors."""
        if overrides is None:
            return self
        values = {**self.model_dump(), **overrides.model_dump(exclude_unset=True)}
        merged = TurnSettings.model_construct(**values)
        merged._check(where)
        return merged


class TurnOverrides(BaseModel):
    """``[flows.NAME.turn]``: the keys of ``[turn]`` this flow sets differently."""

    model_config = ConfigDict(extra="forbid")

    detector: Literal["off", "smart_turn"] | None = Field(default=None, description=_TURN_DOC["detector"])
    pause_ms: int | None = Field(default=None, ge=60, le=1000, description=_TURN_DOC["pause_ms"])
    end_above: float | None = Field(default=None, ge=0.0, le=1.0, description=_TURN_DOC["end_above"])
    hold_below: float | None = Field(default=None, ge=0.0, le=1.0, description=_TURN_DOC["hold_below"])
    max_wait_ms: int | None = Field(default=None, ge=200, le=5000, description=_TURN_DOC["max_wait_ms"])
    endpoint_ms: int | None = Field(default=None, ge=100, le=5000, description=_TURN_DOC["endpoint_ms"])
    finalize_at_pause: bool | None = Field(default=None, description=_TURN_DOC["finalize_at_pause"])

    @model_validator(mode="after")
    def _no_nulls(self) -> TurnOverrides:
        for name in self.model_fields_set - {"end_above"}:
            if getattr(self, name) is None:
                raise ValueError(f"turn.{name}: null only unsets end_above")
        return self


class FlowSettings(BaseModel):
    """One call flow: which graph runs it and how it talks, books and hands over."""

    model_config = ConfigDict(extra="forbid")

    graph: str = Field(default="", description="registry name of the graph factory; defaults to the flow's key")
    prompt: str = ""
    greeting: str | None = None
    voice: str | None = None
    tts_model: str | None = None
    language: str = Field(
        default="en",
        description="en, en-IN (Indian English), hi (Hindi) or hi-en (Hindi-English code-switching)",
    )
    script: Literal["roman", "devanagari"] = Field(
        default="roman", description="how the agent writes Hindi for the model and TTS: roman or devanagari"
    )
    keyterms: list[str] = Field(
        default_factory=list,
        description="the flow's vocabulary for ASR (company, staff, product names); default: the "
        "company name and the transfer targets' descriptions",
    )
    company: str = "Acme Dental"
    transfer_targets: dict[str, TransferTarget] = Field(default_factory=dict)
    timezone: str = "UTC"
    business_hours: dict[str, str] = Field(
        default_factory=lambda: {d: "09:00-17:00" for d in WEEKDAYS[:5]},
        description="weekday (mon..sun) -> 'HH:MM-HH:MM' local time; missing days are closed",
    )
    slot_minutes: int = Field(default=30, ge=5, le=480)
    buffer_minutes: int = Field(default=0, ge=0, le=240)
    knowledge_file: Path | None = Field(
        default=None, description="question/answer list; a relative path is relative to the config file"
    )
    dtmf_transfer: dict[str, str] = Field(
        default_factory=dict, description="DTMF digit -> transfer target name, e.g. {'0': 'front_desk'}"
    )
    # --- outbound --------------------------------------------------------------------------
    caller_id: str | None = Field(default=None, pattern=E164, description="E.164 'from' of this flow's outbound calls")
    voicemail: str | None = Field(
        default=None, description="message left on an answering machine; may use {name} {company} {purpose}"
    )
    opt_out_digit: str | None = Field(default=None, description="DTMF key that puts the callee on the opt-out list")
    outbound_greeting: str | None = Field(
        default=None, description="first words of an outbound call; may use {name} {company} {purpose}"
    )
    # --- guardrails -------------------------------------------------------------------------
    limits: LimitOverrides | None = Field(default=None, description="[flows.NAME.limits]: overrides of [limits]")
    webhooks: FlowWebhooks | None = Field(default=None, description="[flows.NAME.webhooks]: this flow's endpoints")
    turn: TurnOverrides | None = Field(default=None, description="[flows.NAME.turn]: overrides of [turn]")
    # --- recording (telephony/call/recording.py) --------------------------------------------
    recording: bool = Field(default=False, description="keep a stereo WAV of each call (caller left, agent as heard)")
    recording_consent: str | None = Field(
        default=None, max_length=300, description="said first in the greeting when recording is on"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("language", mode="before")
    @classmethod
    def _known_language(cls, v: object) -> object:
        if not isinstance(v, str) or v.strip() not in LANGUAGES:
            raise ValueError(f"language {v!r} is not supported (use one of: {', '.join(LANGUAGES)})")
        return v.strip()

    @field_validator("keyterms")
    @classmethod
    def _keyterms(cls, v: list[str]) -> list[str]:
        terms = list(dict.fromkeys(" ".join(t.split()) for t in v if t.strip()))
        long = [t for t in terms if len(t) > MAX_KEYTERM_CHARS]
        if long:
            raise ValueError(f"keyterms: {long[0]!r} is longer than {MAX_KEYTERM_CHARS} characters")
        if len(terms) > MAX_KEYTERMS:
            raise ValueError(f"keyterms: {len(terms)} terms, at most {MAX_KEYTERMS}")
        return terms

    @field_validator("tts_model")
    @classmethod
    def _model_id(cls, v: str | None) -> str | None:
        """Blank means the provider's default model. Anything else must look like a model id,
        so a malformed name (spaces, slashes, a URL) fails at start-up instead of going into
        the vendor's URL on every reply of the flow; a well-formed but unknown id is the
        vendor's to refuse (and the TTS fallback's to cover)."""
        if v is None or not v.strip():
            return None
        if not _MODEL_ID.match(v.strip()):
            raise ValueError(f"tts_model {v!r} is not a model id (like 'eleven_flash_v2_5')")
        return v.strip()

    @field_validator("business_hours")
    @classmethod
    def _hours(cls, v: dict[str, str]) -> dict[str, str]:
        for day, span in v.items():
            if day not in WEEKDAYS:
                raise ValueError(f"business_hours: unknown weekday {day!r} (use {', '.join(WEEKDAYS)})")
            if not _HHMM.match(span):
                raise ValueError(f"business_hours[{day}]: {span!r} is not 'HH:MM-HH:MM'")
            start, end = span.split("-")
            if start >= end:
                raise ValueError(f"business_hours[{day}]: {span!r} ends before it starts")
        return v

    @model_validator(mode="after")
    def _default_keyterms(self) -> FlowSettings:
        """No ``keyterms`` given: the company and the transfer targets' descriptions (an
        explicit empty list turns them off)."""
        if "keyterms" not in self.model_fields_set:
            derived = [self.company, *(t.description for t in self.transfer_targets.values())]
            terms = list(dict.fromkeys(" ".join(t.split()) for t in derived if t.strip()))
            self.keyterms = [t for t in terms if len(t) <= MAX_KEYTERM_CHARS][:MAX_KEYTERMS]
        return self

    @model_validator(mode="after")
    def _dtmf_targets_exist(self) -> FlowSettings:
        for digit, target in self.dtmf_transfer.items():
            if target not in self.transfer_targets:
                raise ValueError(f"dtmf_transfer[{digit!r}] names unknown target {target!r}")
        if self.opt_out_digit is not None:
            if self.opt_out_digit not in DTMF_KEYS:
                raise ValueError(f"opt_out_digit {self.opt_out_digit!r} is not one key of 0-9 * #")
            if self.opt_out_digit in self.dtmf_transfer:
                raise ValueError(f"opt_out_digit {self.opt_out_digit!r} is also a dtmf_transfer key")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def hours_on(self, day: dt.date) -> tuple[dt.time, dt.time] | None:
        """Opening and closing local time on ``day``, or None when closed."""
        span = self.business_hours.get(WEEKDAYS[day.weekday()])
        if span is None:
            return None
        start, end = span.split("-")
        close = dt.time.max if end == "24:00" else dt.time.fromisoformat(end)
        return dt.time.fromisoformat(start), close


def default_flows() -> dict[str, FlowSettings]:
    """The three shipped flows and their transfer targets: the flows when no configuration
    names any."""
    return {
        "scheduling": FlowSettings(
            transfer_targets={"front_desk": TransferTarget(number="+15550100001", description="front desk")},
            dtmf_transfer={"0": "front_desk"},
        ),
        "support": FlowSettings(
            transfer_targets={
                "billing": TransferTarget(number="+15550100002", description="billing team"),
                "support": TransferTarget(number="+15550100003", description="technical support"),
            },
            dtmf_transfer={"0": "support"},
        ),
        "sales": FlowSettings(
            transfer_targets={"sales": TransferTarget(number="+15550100004", description="sales team")},
            dtmf_transfer={"0": "sales"},
            opt_out_digit="9",
        ),
    }
