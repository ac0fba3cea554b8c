"""The hook between the end-of-call report and post-call analysis (``server/analysis.py``).

``call_analysis(call)`` is the call's finished analysis (``{"summary", "fields"}``) or None;
``analysis_pending(settings, call)`` says whether one may still come: analysis is on
(``[analysis] enabled``) and the call's analysis has not failed for good. While it may, the
report waits for it, up to ``[webhooks] analysis_wait_s``; then it goes out with
``analysis: null``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dialgraph.server.analysis import analysis_of
from dialgraph.server.core.models import Call
from dialgraph.server.core.settings import Settings


def call_analysis(call: Call) -> dict[str, Any] | None:
    """The call's post-call analysis (``summary`` and the flow's ``fields``), when done."""
    return analysis_of(call)


def analysis_pending(settings: Settings, call: Call) -> bool:
    """True while an analysis of ``call`` may still be stored."""
    if not settings.analysis.enabled:
        return False
    value = call.analysis
    return not (isinstance(value, Mapping) and value.get("failed"))


__all__ = ["analysis_pending", "call_analysis"]
