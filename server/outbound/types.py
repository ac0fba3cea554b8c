"""What the outbound modules hand each other: a request to call, and a refusal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dialgraph.server.core.flow_config import CallingWindow, DltFields

Purpose = Literal["promotional", "service", "transactional"]
RefusalReason = Literal["dnd", "opted_out", "calling_hours", "rate_limited", "dlt_missing", "overloaded"]


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """One call to place: whom, from which number, on which flow, why, with what context."""

    to: str
    from_: str
    flow: str
    purpose: Purpose = "service"
    context: Mapping[str, Any] = field(default_factory=dict)
    dlt: DltFields | None = None  # overrides the deployment's [outbound.dlt]
    window: CallingWindow | None = None  # None: the deployment's [outbound.window]
    timezone: str | None = None  # the callee's zone when known (else from the number)
    campaign_id: str | None = None
    contact_id: int | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call must not be placed, and the rule that says so. ``detail`` goes into the
    409 answer (``next_allowed_at`` for calling hours, ``missing`` for DLT fields)."""

    reason: RefusalReason
    rule: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The 409 answer's ``detail``."""
        return {"reason": self.reason, "rule": self.rule, **self.detail}


class Refused(Exception):
    """A call was not placed, by rule (never a REST request)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"{refusal.reason} ({refusal.rule})")
        self.refusal = refusal
