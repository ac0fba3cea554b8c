"""The configuration of a call flow: how it talks, when it is open, whom it may hand over to.

One ``FlowSettings`` per ``[flows.<name>]`` table of ``dialgraph.toml``; tools and graphs
read it from the call's context. It is also validated on its own when a run started over
HTTP (LangGraph Studio) carries it as JSON.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TransferTarget(BaseModel):
    """A human the agent may hand a caller to. Only these can ever be dialled."""

    model_config = ConfigDict(extra="forbid")

    number: str = Field(pattern=r"^\+[1-9]\d{6,14}$", description="E.164 number to <Dial>")
    description: str = ""
    timeout_s: int = Field(default=20, ge=5, le=120, description="ring time before giving up")


class FlowSettings(BaseModel):
    """One call flow: which graph runs it and how it talks, books and hands over."""

    model_config = ConfigDict(extra="forbid")

    graph: str = Field(default="", description="registry name of the graph factory; defaults to the flow's key")
    prompt: str = ""
    greeting: str | None = None
    voice: str | None = None
    tts_model: str | None = None
    language: str = "en"
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

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

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
    def _dtmf_targets_exist(self) -> FlowSettings:
        for digit, target in self.dtmf_transfer.items():
            if target not in self.transfer_targets:
                raise ValueError(f"dtmf_transfer[{digit!r}] names unknown target {target!r}")
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
        ),
    }
