"""Structured logging. Call-bound loggers carry ``call_sid``; PII goes only into fields
named in ``PII_FIELDS`` so redaction can reach it, never into message strings."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

PII_FIELDS = frozenset({"text", "transcript", "digits", "from_number", "to_number", "caller", "phone", "called"})


def _redact(_logger: object, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in PII_FIELDS & event.keys():
        value = event[key]
        event[key] = f"<{len(str(value))} chars>" if value else value
    return event


def configure_logging(level: str = "INFO") -> None:
    """Key=value logs on stderr, PII fields redacted; idempotent."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        # Render exc_info (log.exception, exc_info=True) as a traceback string, after
        # redaction so a traceback is never mistaken for a PII field.
        structlog.processors.format_exc_info,
        structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
