"""The offline post-call extraction (``graphs/analysis.py``) on conversations the tools could
produce: the rules read tool results, not what was merely said."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from dialgraph.graphs.analysis import CallRecord, offline_analysis, tool_steps
from dialgraph.graphs.registry import flow_spec
from dialgraph.tools.knowledge import DONT_KNOW

ROME = ZoneInfo("Europe/Rome")
STARTED = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)  # a Tuesday


def conversation(*turns: Any) -> list[Any]:
    """("caller", text) | ("tool", name, args, result) | ("agent", text) -> messages."""
    messages: list[Any] = []
    for i, turn in enumerate(turns):
        if turn[0] == "caller":
            messages.append(HumanMessage(turn[1]))
        elif turn[0] == "agent":
            messages.append(AIMessage(turn[1]))
        else:
            _, name, args, result = turn
            messages.append(AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call_{i}"}]))
            if result is not None:
                messages.append(ToolMessage(result, tool_call_id=f"call_{i}", name=name))
    return messages


def analyse(flow: str, *turns: Any, **facts: Any) -> tuple[str, dict[str, Any]]:
    spec = flow_spec(flow)
    assert spec is not None
    state = {"messages": conversation(*turns), **facts.pop("state", {})}
    record = CallRecord(flow=flow, zone=ROME, started_at=STARTED, state=state, **facts)
    result = offline_analysis(spec.analysis, record)
    return result.summary, result.fields


def test_a_refused_booking_is_not_a_booking() -> None:
    summary, fields = analyse(
        "scheduling",
        ("caller", "Book me Friday at 9."),
        ("tool", "book_appointment", {"start": "2026-12-04T09:00", "name": "Ana"}, "That time is already taken."),
    )
    assert fields == {"outcome": "none", "appointment_time": None, "caller_name": "Ana"}  # the name they gave
    assert "no appointment was booked" in summary


def test_moving_an_existing_appointment_by_time_only_keeps_its_day() -> None:
    _, fields = analyse(
        "scheduling",
        ("caller", "Move my appointment on the 4th to 3 pm."),
        (
            "tool",
            "reschedule_appointment",
            {"new_start": "2026-12-04T10:00"},
            "Done: your appointment on A is now on B.",
        ),
        ("tool", "reschedule_appointment", {"new_start": "15:30"}, "Done: your appointment on B is now on C."),
        state={"caller_name": "Ana Rossi"},
    )
    assert fields == {"outcome": "moved", "appointment_time": "2026-12-04T15:30:00+01:00", "caller_name": "Ana Rossi"}


def test_a_cancellation_after_a_booking_in_the_same_call() -> None:
    summary, fields = analyse(
        "scheduling",
        ("tool", "book_appointment", {"start": "2026-12-04T09:00"}, "Booked: Friday at 9."),
        ("tool", "cancel_appointment", {}, "Cancelled your appointment on Friday at 9."),
    )
    assert fields["outcome"] == "cancelled" and fields["appointment_time"] == "2026-12-04T09:00:00+01:00"
    assert summary.startswith("The caller cancelled their appointment on Friday 4 December 2026 at 9 am.")


def test_support_answered_from_the_knowledge_base_is_resolved() -> None:
    _, fields = analyse(
        "support",
        ("caller", "Where do I park?"),
        ("tool", "search_knowledge", {"question": "parking"}, "Park behind the building."),
        ("tool", "end_call", {"reason": "completed"}, "The call will end."),
        outcome="ended_by_agent",
    )
    assert fields == {
        "issue_category": "hours_location",
        "resolved": True,
        "needs_follow_up": False,
        "transferred_to": None,
    }


def test_support_without_an_answer_and_a_failed_transfer_needs_follow_up() -> None:
    summary, fields = analyse(
        "support",
        ("caller", "The app shows an error when I log in."),
        ("tool", "search_knowledge", {"question": "login error"}, DONT_KNOW),
        ("tool", "request_transfer", {"target": "support"}, "Transfer arranged."),
        transfer_target="support",
        transfer_status="busy",
        targets={"support": "technical support"},
    )
    assert fields == {"issue_category": "technical", "resolved": False, "needs_follow_up": True, "transferred_to": None}
    assert "A transfer to the technical support failed (busy)." in summary


def test_sales_opt_out_and_partial_answers() -> None:
    summary, fields = analyse(
        "sales",
        ("caller", "Stop calling me."),
        ("tool", "opt_out", {"reason": "asked"}, "Done."),
        state={"lead": {"budget": "No budget."}, "pending_end": {"reason": "opted_out"}},
        direction="outbound",
        contact_name="Ravi Kumar",
    )
    assert fields["next_step"] == "opted_out" and fields["budget"] == "No budget" and fields["interest"] is None
    assert summary.startswith("Ravi Kumar talked to sales.") and "taken off the list" in summary


def test_a_tool_call_that_never_ran_is_not_a_step() -> None:
    messages = conversation(("tool", "book_appointment", {"start": "2026-12-04T09:00"}, None))
    assert tool_steps(messages) == []


def test_a_hinglish_call_is_read_like_an_english_one() -> None:
    """The tools answer a Hinglish caller in Hinglish; the analysis still sees what they did."""
    from dialgraph.tools.knowledge import DONT_KNOW_HI

    _, fields = analyse(
        "scheduling",
        ("caller", "kal subah 11 baje appointment chahiye, mera naam Rahul hai"),
        (
            "tool",
            "book_appointment",
            {"start": "2026-12-02T11:00", "name": "Rahul"},
            "Appointment book ho gaya, Rahul ke naam se: Wednesday, 2 December ko subah 11 baje.",
        ),
    )
    assert fields["outcome"] == "booked" and fields["appointment_time"] == "2026-12-02T11:00:00+01:00"
    _, fields = analyse(
        "support",
        ("caller", "aapka app login pe error deta hai"),
        ("tool", "search_knowledge", {"question": "login error"}, DONT_KNOW_HI),
    )
    assert fields["resolved"] is False and fields["needs_follow_up"] is True
