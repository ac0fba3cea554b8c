"""Sales: qualify the lead (need, timeline, budget, decision maker), book a follow-up,
hand hot leads straight to the sales team. Outbound: greet the contact by name, say why we
call, ask for a minute; "not interested" ends politely, "stop calling me" opts out."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dialgraph.graphs.analysis import AnalysisSpec, sales_offline
from dialgraph.graphs.flows.base import OFFER_MINUTE, FlowSpec, flow_builder


class SalesFields(BaseModel):
    """What a sales call's analysis extracts (``calls.analysis.fields``)."""

    model_config = ConfigDict(extra="forbid")

    interest: str | None = Field(default=None, description="what the lead needs, in their words")
    budget: str | None = Field(default=None, description="the budget they named")
    timeline: str | None = Field(default=None, description="when they need it")
    decision_maker: bool | None = Field(default=None, description="they make the decision themselves")
    next_step: Literal[
        "follow_up_booked", "transferred", "callback_requested", "not_interested", "opted_out", "none"
    ] = Field(default="none", description="what happens next")
    follow_up_at: str | None = Field(default=None, description="the booked follow-up, ISO-8601 in the flow's zone")


SPEC = FlowSpec(
    name="sales",
    tool_names=(
        "save_lead",
        "lookup_caller",
        "save_caller_name",
        "find_free_slots",
        "book_appointment",
        "take_message",
        "request_transfer",
        "end_call",
        "opt_out",
    ),
    prompt="""You answer the sales line of {company}. Learn, one question at a time, what the
caller needs, when they need it, their budget, and whether they make the decision; save the
answers with save_lead. A hot lead (needs it soon, has a budget, decides) may be transferred to
the sales team right away with a one-sentence summary; otherwise offer to book a follow-up call.
On a call you placed, ask your questions only once they agree to talk; if they are not
interested, thank them and end the call.""",
    greeting="Thank you for calling {company}. I'd love to hear what you're looking for. How can I help?",
    greeting_hi="Namaste, {company} mein call karne ke liye dhanyavaad. Bataiye, aap kya dhoondh rahe hain?",
    outbound_greeting="Hi {name}, this is {company}. I'm calling about {purpose}. Do you have a minute?",
    outbound_purpose="how we could help your business",
    outbound_offer=OFFER_MINUTE,
    analysis=AnalysisSpec(SalesFields, offline=sales_offline),
)

build_sales_graph = flow_builder(SPEC)
