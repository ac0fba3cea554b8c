"""Per-call facts that travel in the graph run's context, hidden from the model."""

from __future__ import annotations

from dataclasses import dataclass

from dialgraph.server.core.flow_config import FlowSettings


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling and which flow serves them. Tools read identity from here, never
    from the model's arguments: the caller's number owns appointments and messages."""

    call_sid: str
    thread_id: str
    caller: str  # E.164 number of the caller (Twilio's From on inbound calls)
    called: str  # the dialled number (Twilio's To on inbound calls)
    flow: str  # flow name, a key of Settings.flows
    flow_settings: FlowSettings
    previous_thread_id: str | None = None  # a recent earlier call of this caller (callback)

    def __post_init__(self) -> None:
        # A run started over HTTP (``langgraph dev``, Studio, the SDK) gives its context as
        # JSON: ``flow_settings`` arrives as a dict and is validated like dialgraph.toml.
        if isinstance(self.flow_settings, dict):
            object.__setattr__(self, "flow_settings", FlowSettings.model_validate(self.flow_settings))
