"""Sales: qualify the lead (need, timeline, budget, decision maker), book a follow-up,
hand hot leads straight to the sales team."""

from __future__ import annotations

from dialgraph.graphs.flows.base import FlowSpec, flow_builder

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
    ),
    prompt="""You answer the sales line of {company}. Learn, one question at a time, what the
caller needs, when they need it, their budget, and whether they make the decision; save the
answers with save_lead. A hot lead (needs it soon, has a budget, decides) may be transferred to
the sales team right away with a one-sentence summary; otherwise offer to book a follow-up call.""",
    greeting="Thank you for calling {company}. I'd love to hear what you're looking for. How can I help?",
)

build_sales_graph = flow_builder(SPEC)
