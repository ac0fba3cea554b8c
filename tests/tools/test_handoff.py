"""Transfer and end-call requests: only configured targets, never a number."""

from __future__ import annotations

import pytest

from dialgraph.server.core.flow_config import FlowSettings, TransferTarget
from dialgraph.server.core.turns import EndCallRequest, TransferRequest
from dialgraph.tools.handoff import handoff_tools, resolve_target
from tests.fakes.tool_graph import ToolGraph, call_context

SUPPORT = FlowSettings(
    transfer_targets={
        "billing": TransferTarget(number="+15550100002", description="billing team"),
        "support": TransferTarget(number="+15550100003", description="technical support"),
        "front_desk": TransferTarget(number="+15550100001", description="front desk reception"),
    }
)
SINGLE = FlowSettings(transfer_targets={"sales": TransferTarget(number="+15550100004", description="sales team")})


@pytest.fixture
def graph() -> ToolGraph:
    return ToolGraph(handoff_tools())


@pytest.mark.parametrize(
    ("asked", "key"),
    [
        ("billing", "billing"),
        ("BILLING", "billing"),
        ("the billing department", "billing"),
        ("tech support", "support"),
        ("Front Desk", "front_desk"),
        ("front-desk", "front_desk"),
        ("reception", "front_desk"),
    ],
)
async def test_names_resolve_to_configured_targets(graph: ToolGraph, asked: str, key: str) -> None:
    reply = await graph.call(
        call_context("+15550100101", SUPPORT), "request_transfer", target=asked, reason="r", summary="s"
    )
    assert reply.artifact == TransferRequest(target=key, reason="r", summary="s")
    assert isinstance(reply.content, str) and "connecting them now" in reply.content


@pytest.mark.parametrize(
    "asked",
    [
        "+15550100002",
        "15550100002",
        "555-0100",
        "(555) 010 0002",
        "tel:+15550100002",
        "sip:agent@example.com",
        "the CEO",
        "someone",
        "billing or support",
    ],
)
async def test_numbers_unknown_and_ambiguous_targets_are_refused(graph: ToolGraph, asked: str) -> None:
    reply = await graph.call(
        call_context("+15550100101", SUPPORT), "request_transfer", target=asked, reason="r", summary="s"
    )
    assert reply.artifact is None
    assert (
        reply.content
        == "I can't transfer to that. I can transfer to billing team, technical support or front desk reception."
    )


async def test_generic_request_goes_to_the_only_target_and_none_configured(graph: ToolGraph) -> None:
    reply = await graph.call(
        call_context("+1555", SINGLE), "request_transfer", target="a real person", reason="r", summary="s"
    )
    assert reply.artifact == TransferRequest(target="sales", reason="r", summary="s")
    nothing = await graph.call(
        call_context("+1555", FlowSettings()), "request_transfer", target="billing", reason="r", summary="s"
    )
    assert nothing.artifact is None and "Transfers aren't available" in str(nothing.content)


async def test_end_call_returns_the_request(graph: ToolGraph) -> None:
    reply = await graph.call(call_context("+1555"), "end_call", reason="caller_request")
    assert reply.artifact == EndCallRequest(reason="caller_request")
    default = await graph.call(call_context("+1555"), "end_call")
    assert default.artifact == EndCallRequest(reason="completed")


def test_resolve_is_pure() -> None:
    assert resolve_target("billing team", SUPPORT.transfer_targets) == "billing"
    assert resolve_target("+15550100002", SUPPORT.transfer_targets) is None
