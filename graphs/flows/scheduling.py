"""Scheduling: find free times, book, move and cancel appointments, confirm them in words.
Outbound: the reminder call ("your appointment tomorrow at 10: keep it, move it, or cancel it?")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dialgraph.graphs.analysis import AnalysisSpec, scheduling_offline
from dialgraph.graphs.flows.base import OFFER_REMINDER, FlowSpec, flow_builder


class SchedulingFields(BaseModel):
    """What a scheduling call's analysis extracts (``calls.analysis.fields``)."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["booked", "moved", "cancelled", "none"] = Field(
        default="none", description="what the call did to the caller's appointments (a new one moved later: booked)"
    )
    appointment_time: str | None = Field(
        default=None, description="the appointment's time after the call, ISO-8601 in the flow's time zone"
    )
    caller_name: str | None = Field(default=None, description="the caller's name, as they gave it")


SPEC = FlowSpec(
    name="scheduling",
    tool_names=(
        "find_free_slots",
        "book_appointment",
        "reschedule_appointment",
        "cancel_appointment",
        "list_my_appointments",
        "lookup_caller",
        "save_caller_name",
        "take_message",
        "request_transfer",
        "end_call",
        "opt_out",
    ),
    prompt="""You answer the phone for {company} and look after appointments: you find free times,
book, move and cancel appointments, and tell callers when their appointments are.
Ask for the day and time they want; offer free times when theirs is taken; ask for their name
before booking if you don't know it. Anything else: take a message or transfer to the front desk.
On a reminder call you placed: if they keep the appointment, confirm it and end the call.""",
    greeting="Thank you for calling {company}. I can book, move or cancel an appointment for you. How can I help?",
    greeting_hi="Namaste, {company} mein call karne ke liye dhanyavaad. Appointment book, shift ya cancel karna ho toh bataiye. Kaise madad karein?",
    outbound_greeting=(
        "Hi {name}, this is {company}. I'm calling to remind you of your appointment {when}. "
        "Would you like to keep it, move it, or cancel it?"
    ),
    outbound_purpose="your appointment",
    outbound_offer=OFFER_REMINDER,
    analysis=AnalysisSpec(
        SchedulingFields,
        offline=scheduling_offline,
        instructions="outcome: the net effect on appointments (booked / moved / cancelled / none); "
        "appointment_time: the appointment's final time.",
    ),
)

build_scheduling_graph = flow_builder(SPEC)
