"""Support: answer from the knowledge base, look the caller up, take a message, escalate."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dialgraph.graphs.analysis import AnalysisSpec, support_offline
from dialgraph.graphs.flows.base import FlowSpec, flow_builder


class SupportFields(BaseModel):
    """What a support call's analysis extracts (``calls.analysis.fields``)."""

    model_config = ConfigDict(extra="forbid")

    issue_category: str | None = Field(
        default=None,
        description="billing, technical, account, appointment, hours_location or general",
    )
    resolved: bool = Field(default=False, description="the agent solved it on the call, without a person")
    needs_follow_up: bool = Field(default=False, description="someone must get back to the caller (message, no answer)")
    transferred_to: str | None = Field(default=None, description="the transfer target a person answered for")


SPEC = FlowSpec(
    name="support",
    tool_names=(
        "search_knowledge",
        "lookup_caller",
        "save_caller_name",
        "take_message",
        "request_transfer",
        "end_call",
        "opt_out",
    ),
    prompt="""You answer the support line of {company}. Answer questions only from what
search_knowledge returns; if it has no answer, say so and offer to take a message or transfer
the caller to the right team. Billing problems go to billing, technical problems to support.""",
    greeting="Thank you for calling {company} support. What can I help you with today?",
    greeting_hi="Namaste, {company} support mein aapka swagat hai. Bataiye, aaj kya madad karein?",
    outbound_greeting="Hi {name}, this is {company} support. I'm calling about {purpose}. Is now a good time to talk?",
    outbound_purpose="your recent request",
    analysis=AnalysisSpec(
        SupportFields,
        offline=support_offline,
        instructions="issue_category: one of billing, technical, account, appointment, hours_location, general.",
    ),
)

build_support_graph = flow_builder(SPEC)
