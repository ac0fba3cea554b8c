"""``[retention]``: how long each kind of personal data is kept (days; 0 or null: forever).

Enforced by ``dialgraph db prune`` and by a task every instance runs every
``prune_interval_h`` hours (``server/privacy/retention.py``; on PostgreSQL one instance at a
time, under an advisory lock). What each kind covers:

- ``transcripts_days``: the ``call_events`` rows (transcript turns and call events) of calls
  older than this, and the words kept on the call row (``transfer_summary``,
  ``transfer_reason``, ``reply_heard``). The call row itself (numbers, flow, times, outcome,
  cost) is the business record and stays.
- ``checkpoints_days``: LangGraph conversation threads whose newest checkpoint is older
  (a caller ringing back later is greeted as new). The old top-level key
  ``checkpoint_retention_days`` still works when this one is not set.
- ``messages_days``: messages taken for a human (``messages``), by when they were taken.
- ``recordings_days``: files under ``data_dir/recordings/``, by file age.
- ``outbound_days``: the outbound audit trail (``outbound_audit`` rows), and what the agent
  was told about a person it called (``calls.context``, ``campaign_contacts.context`` of
  finished contacts).

A ground module: ``settings.py`` holds it; nothing here does I/O.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

DAYS = "days; 0 or null keeps forever"


class RetentionSettings(BaseModel):
    """``[retention]`` (or ``DIALGRAPH_RETENTION`` as JSON). Defaults are documented in the
    README's "Safety and privacy" section and ``dialgraph.toml.example``."""

    model_config = ConfigDict(extra="forbid")

    transcripts_days: float | None = Field(default=90, ge=0, description=f"call events and transcript text; {DAYS}")
    checkpoints_days: float | None = Field(default=30, ge=0, description=f"conversation checkpoints; {DAYS}")
    messages_days: float | None = Field(default=180, ge=0, description=f"messages taken for a human; {DAYS}")
    recordings_days: float | None = Field(default=30, ge=0, description=f"files in data_dir/recordings; {DAYS}")
    outbound_days: float | None = Field(
        default=365, ge=0, description=f"outbound audit rows and the context given about callees; {DAYS}"
    )
    prune_interval_h: float = Field(
        default=6, ge=0, description="hours between scheduled prunes in each instance; 0: only `dialgraph db prune`"
    )
    batch: int = Field(default=1000, ge=1, le=100_000, description="rows per delete statement (short transactions)")

    @field_validator("transcripts_days", "checkpoints_days", "messages_days", "recordings_days", "outbound_days")
    @classmethod
    def _zero_is_forever(cls, v: float | None) -> float | None:
        return None if v is None or v == 0 else v


__all__ = ["RetentionSettings"]
