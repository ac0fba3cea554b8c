"""The words of the call record: the same strings the columns always held."""

from __future__ import annotations

import json

import pytest

from dialgraph.server.core.enums import (
    DIAL_ANSWERED,
    TERMINAL_STATUSES,
    CallOutcome,
    CallStatus,
    SignalKind,
    StreamSignal,
    TransferStatus,
)


def test_stored_values_are_the_historical_strings() -> None:
    assert {o.value for o in CallOutcome} == {
        "transfer_requested",
        "transferred",
        "transfer_refused",
        "ended_by_agent",
        "ended_by_admin",
        "caller_hung_up",
        "reconnects_exhausted",
        # guardrails (issue 13)
        "rate_limited",
        "max_call_length",
        # outbound (issue 12)
        "voicemail",
        "fax",
        "no_answer",
        "busy",
        "failed",
        "canceled",
        "opted_out",
        "not_interested",
    }
    assert {"completed", "busy", "failed", "no-answer", "canceled"} == TERMINAL_STATUSES
    assert CallStatus.IN_PROGRESS == "in-progress" and not CallStatus.IN_PROGRESS.terminal
    assert CallStatus("no-answer").terminal
    assert {"completed", "answered"} == DIAL_ANSWERED
    assert json.dumps({"status": TransferStatus.NO_ANSWER}) == '{"status": "no-answer"}'


@pytest.mark.parametrize(
    ("signal", "text"),
    [
        (StreamSignal(SignalKind.RECONNECTED), "reconnected"),
        (StreamSignal(SignalKind.TRANSFER_FAILED, "busy"), "transfer_failed:busy"),
        (StreamSignal(SignalKind.TRANSFER_FAILED, TransferStatus.NO_ANSWER), "transfer_failed:no-answer"),
    ],
)
def test_stream_signal_round_trips_through_its_string(signal: StreamSignal, text: str) -> None:
    assert str(signal) == text
    assert StreamSignal.parse(text) == signal


@pytest.mark.parametrize("text", ["", "hello", "transfer-failed:busy", ":busy"])
def test_no_signal_or_an_unknown_one_parses_to_none(text: str) -> None:
    assert StreamSignal.parse(text) is None
