"""``[analysis]``: post-call analysis (``server/analysis.py``): when it runs and on which model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AnalysisSettings(BaseModel):
    """When a call's summary and fields are written, and by which model."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="analyse every call once it has ended")
    model: str | None = Field(
        default=None,
        description="model spec for the analysis ('offline', 'openai:<model>', ...); unset: the flows' model",
    )
    delay_s: float = Field(default=1.0, ge=0, le=600, description="wait this long after the final status")
    timeout_s: float = Field(default=30.0, gt=0, le=600, description="a hosted model's answer; then offline")
    sweep_interval_s: float = Field(default=30.0, gt=0, le=3600, description="how often the sweeper looks")
    sweep_after_s: float = Field(
        default=120.0, ge=0, le=86400, description="an ended call still without analysis this long is swept up"
    )
    claim_ttl_s: float = Field(
        default=300.0, gt=0, le=86400, description="a claim older than this (its instance died) is taken over"
    )
    horizon_hours: float = Field(default=24.0, gt=0, le=24 * 30, description="the sweeper ignores older calls")
    max_attempts: int = Field(default=3, ge=1, le=20, description="then the call is marked failed, not retried")
    max_concurrent: int = Field(
        default=1, ge=1, le=64, description="analyses running at once in this process; the others wait their turn"
    )
    busy_lag_ms: float = Field(
        default=20.0,
        ge=0,
        le=10_000,
        description="while the event loop's lag p99 is above this, background analyses wait (0: never wait)",
    )
    max_defer_s: float = Field(
        default=300.0, ge=0, le=86400, description="the longest a background analysis waits for a quiet loop"
    )
