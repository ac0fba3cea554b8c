"""Support: answer from the knowledge base, look the caller up, take a message, escalate."""

from __future__ import annotations

from dialgraph.graphs.flows.base import FlowSpec, flow_builder

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
    outbound_greeting="Hi {name}, this is {company} support. I'm calling about {purpose}. Is now a good time to talk?",
    outbound_purpose="your recent request",
)

build_support_graph = flow_builder(SPEC)
