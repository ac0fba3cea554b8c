"""Per-call facts that travel in the graph run's context, hidden from the model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dialgraph.server.core.flow_config import FlowSettings


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is on the line and which flow serves them. Tools read identity from here, never
    from the model's arguments: the caller's number owns appointments and messages.

    On an outbound call (``direction == "outbound"``) ``caller`` is still the other party:
    the person we called (Twilio's To), and ``called`` is our caller ID; ``contact`` holds
    what the call was placed with (``calls.context``): ``name``, ``purpose``,
    ``appointment`` (ISO local date-time, for reminders) and any custom fields.
    """

    call_sid: str
    thread_id: str
    caller: str  # E.164 number of the other party (Twilio's From inbound, To outbound)
    called: str  # our number (Twilio's To inbound, From outbound)
    flow: str  # flow name, a key of Settings.flows
    flow_settings: FlowSettings
    previous_thread_id: str | None = None  # a recent earlier call of this caller (callback)
    direction: str = "inbound"  # inbound | outbound
    contact: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A run started over HTTP (``langgraph dev``, Studio, the SDK) gives its context as
        # JSON: ``flow_settings`` arrives as a dict and is validated like dialgraph.toml.
        if isinstance(self.flow_settings, dict):
            object.__setattr__(self, "flow_settings", FlowSettings.model_validate(self.flow_settings))
        # Twilio's own spellings ("outbound-api", "outbound-dial") count as outbound.
        direction = "outbound" if str(self.direction).startswith("outbound") else "inbound"
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "contact", dict(self.contact or {}))

    @property
    def outbound(self) -> bool:
        return self.direction == "outbound"
