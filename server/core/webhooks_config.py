"""``[webhooks]`` and ``[flows.NAME.webhooks]``: where end-of-call reports and call events go.

An endpoint is a URL, the events it wants and whether phone numbers are masked in what it
gets. Its signing secret never lives in ``dialgraph.toml``: ``secret_env`` names the
environment variable that holds it, or ``DIALGRAPH_WEBHOOK_SECRETS`` (a JSON object,
endpoint name -> secret) gives it; ``settings.py`` reads both, once.

A flow's events go to its own endpoints and, unless ``global_endpoints = false``, to the
global ones. Endpoint names are unique across the whole configuration (the deliveries table
and the secrets are keyed by them); the same name may appear twice only with the same
definition.

A ground module: no I/O; the delivery machinery is ``dialgraph.server.webhooks``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

WebhookEvent = Literal["call.ended", "transfer.started", "transfer.failed", "campaign.finished"]
EVENTS: tuple[WebhookEvent, ...] = ("call.ended", "transfer.started", "transfer.failed", "campaign.finished")

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _all_events() -> list[WebhookEvent]:
    return list(EVENTS)


class WebhookEndpoint(BaseModel):
    """One receiver: ``[webhooks.endpoints.NAME]`` or ``[flows.FLOW.webhooks.endpoints.NAME]``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="http(s) URL the events are POSTed to")
    events: list[WebhookEvent] = Field(default_factory=_all_events, description="events it gets (default: all)")
    mask_numbers: bool = Field(default=True, description="phone numbers as +9198******21 (false: in full)")
    secret_env: str | None = Field(
        default=None, description="name of the environment variable holding its signing secret"
    )
    timeout_s: float = Field(default=5.0, gt=0, le=30, description="connect + answer time of one POST")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        v = v.strip()
        if not re.match(r"^https?://[^\s/?#]+[^\s]*$", v):
            raise ValueError("url must be an http:// or https:// URL")
        return v

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError(f"secret_env {v!r} is not an environment variable name")
        return v

    @field_validator("events")
    @classmethod
    def _some(cls, v: list[WebhookEvent]) -> list[WebhookEvent]:
        if not v:
            raise ValueError("an endpoint needs at least one event")
        return list(dict.fromkeys(v))


def _names(v: dict[str, WebhookEndpoint]) -> dict[str, WebhookEndpoint]:
    bad = [name for name in v if not _NAME.match(name)]
    if bad:
        raise ValueError(f"endpoint name(s) {', '.join(map(repr, bad))}: use 1-64 of A-Z a-z 0-9 _ . -")
    return v


class FlowWebhooks(BaseModel):
    """``[flows.NAME.webhooks]``: this flow's own endpoints."""

    model_config = ConfigDict(extra="forbid")

    endpoints: dict[str, WebhookEndpoint] = Field(default_factory=dict)
    global_endpoints: bool = Field(default=True, description="also send this flow's events to [webhooks] endpoints")

    @field_validator("endpoints")
    @classmethod
    def _endpoint_names(cls, v: dict[str, WebhookEndpoint]) -> dict[str, WebhookEndpoint]:
        return _names(v)


class WebhooksSettings(BaseModel):
    """``[webhooks]`` (or ``DIALGRAPH_WEBHOOKS`` as JSON): global endpoints and the delivery
    worker's schedule."""

    model_config = ConfigDict(extra="forbid")

    endpoints: dict[str, WebhookEndpoint] = Field(default_factory=dict)
    worker: bool = Field(default=True, description="run the delivery worker in this instance")
    poll_interval_s: float = Field(default=1.0, gt=0, le=60, description="how often due deliveries are looked for")
    concurrency: int = Field(default=8, ge=1, le=100, description="POSTs in flight per instance")
    claim_ttl_s: float = Field(
        default=60, ge=5, description="a claimed delivery whose instance vanished is retried after this"
    )
    retry_for_s: float = Field(default=86_400, gt=0, description="retry a failing delivery this long, then fail it")
    retry_base_s: float = Field(default=10, gt=0, description="first retry delay; doubles each attempt (jittered)")
    retry_max_s: float = Field(default=3600, gt=0, description="longest delay between two attempts")
    settle_s: float = Field(
        default=3.0, ge=0, le=300, description="call.ended waits this long after the final status (transcript, cost)"
    )
    analysis_wait_s: float = Field(
        default=30,
        ge=0,
        le=600,
        description="call.ended waits up to this for post-call analysis and cost, then sends null",
    )
    campaign_lookback_s: float = Field(
        default=3600, gt=0, description="campaigns finished this recently get a campaign.finished event"
    )

    @field_validator("endpoints")
    @classmethod
    def _endpoint_names(cls, v: dict[str, WebhookEndpoint]) -> dict[str, WebhookEndpoint]:
        return _names(v)


__all__ = ["EVENTS", "FlowWebhooks", "WebhookEndpoint", "WebhookEvent", "WebhooksSettings"]
