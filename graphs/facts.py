"""What a model may know about the call it is on: ``CallFacts``.

The flow's agent node builds them for every model call from the run's context (the flow's
settings), the state (the caller's name) and the clock; never the caller's number. A
hosted model reads them as lines of its system prompt (``CallFacts.prompt``); the offline
model reads the object itself from the model call's metadata (``facts_config`` in,
``facts_in`` out), so no one parses prompt text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from langchain_core.runnables import RunnableConfig

from dialgraph.server.core.flow_config import FlowSettings

FACTS_KEY = "dialgraph_call_facts"


@dataclass(frozen=True, slots=True)
class CallFacts:
    """The call's facts as the model is told them."""

    company: str = "us"
    timezone: str = "UTC"
    now: dt.datetime | None = None  # local wall time (naive), to the minute; None: not stated
    hours: Mapping[str, str] = field(default_factory=dict)  # weekday (mon..sun) -> "HH:MM-HH:MM"
    targets: Mapping[str, str] = field(default_factory=dict)  # transfer target key -> spoken description
    caller_name: str | None = None

    @classmethod
    def of(cls, flow: FlowSettings, *, now: dt.datetime, caller_name: str | None = None) -> CallFacts:
        """The facts of a call on ``flow`` at ``now`` (aware, or naive UTC)."""
        aware = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
        local = aware.astimezone(flow.zone).replace(second=0, microsecond=0, tzinfo=None)
        return cls(
            company=flow.company,
            timezone=flow.timezone,
            now=local,
            hours=dict(flow.business_hours),
            targets={k: t.description or k.replace("_", " ") for k, t in flow.transfer_targets.items()},
            caller_name=caller_name,
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local_now(self) -> dt.datetime:
        """The stated local time; without one, the wall clock in the call's zone (aware,
        never the host's zone)."""
        return self.now if self.now is not None else dt.datetime.now(self.zone)

    def prompt(self) -> str:
        """The facts as lines of a system prompt."""
        local = self.local_now()
        targets = "; ".join(f"{key} = {desc}" for key, desc in self.targets.items())
        hours = ", ".join(f"{day} {span}" for day, span in self.hours.items()) or "closed"
        return (
            f"Company: {self.company}.\n"
            f"Local time now: {local.strftime('%Y-%m-%dT%H:%M')} ({local.strftime('%A %d %B %Y, %H:%M')}). "
            f"Time zone: {self.timezone}.\n"
            f"Opening hours: {hours}.\n"
            f"Transfer targets: {targets or 'none'}.\n"
            f"Caller's name: {self.caller_name or 'unknown'}."
        )


def facts_config(facts: CallFacts) -> RunnableConfig:
    """The config of a model call that carries ``facts`` in its metadata."""
    return {"metadata": {FACTS_KEY: facts}}


def facts_in(metadata: Mapping[str, Any] | None) -> CallFacts:
    """The facts a model call's metadata carries (empty facts when it carries none)."""
    facts = (metadata or {}).get(FACTS_KEY)
    return facts if isinstance(facts, CallFacts) else CallFacts()
