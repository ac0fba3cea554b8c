"""Structured logging. Call-bound loggers carry ``call_sid``; PII goes only into fields
named in ``PII_FIELDS`` so redaction can reach it, never into message strings."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from dialgraph.server.core.redaction import Redactor, default_redactor

PII_FIELDS = frozenset({"text", "transcript", "digits", "from_number", "to_number", "caller", "phone", "called"})


def _redact(_logger: object, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in PII_FIELDS & event.keys():
        value = event[key]
        event[key] = f"<{len(str(value))} chars>" if value else value
    return event


# Identifiers and stamps, never PII: left alone (a hex CallSid may hold a Luhn-valid run).
_NOT_TEXT = frozenset({"timestamp", "level", "logger", "call_sid", "stream_sid", "sid", "thread_id"})


class RedactStrings:
    """A processor: the PII redactor (``server/core/redaction.py``) over the message and every
    other string value (a card number that slipped into an error text, a traceback)."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        self._redactor = redactor or default_redactor()

    def __call__(self, _logger: object, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        redact = self._redactor.redact
        for key, value in event.items():
            if type(value) is str and key not in _NOT_TEXT and not key.endswith(("_sid", "_id")):
                event[key] = redact(value)
        return event


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured:
    a stream swapped and closed since (a test's capture, a daemon's redirect) never
    breaks a log call."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", redactor: Redactor | None = None) -> None:
    """Key=value logs on stderr, PII fields masked and strings redacted; idempotent."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        # Render exc_info (log.exception, exc_info=True) as a traceback string, after
        # the PII fields are masked so a traceback is never mistaken for one.
        structlog.processors.format_exc_info,
        RedactStrings(redactor),
        structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
