"""Drive a flow's GraphRunner like a call session does, in text (helpers for tests and bench)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from dialgraph.graphs.runner import GraphRunner
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.flow_config import FlowSettings, TransferTarget
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import (
    CallerDigits,
    CallerInput,
    CallerText,
    CallSignal,
    EndCallRequest,
    RunnerEvent,
    TextChunk,
    TransferRequest,
)

# Friday 20 November 2026, 15:00 UTC (10:00 in New York).
NOW = dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)


def fixed_clock() -> dt.datetime:
    return NOW


@dataclass
class Reply:
    chunks: list[str] = field(default_factory=list)
    transfer: TransferRequest | None = None
    end: EndCallRequest | None = None

    @property
    def text(self) -> str:
        return "".join(self.chunks)


async def collect(events: object) -> Reply:
    reply = Reply()
    async for event in events:  # type: ignore[attr-defined]
        assert isinstance(event, RunnerEvent.__args__)  # type: ignore[attr-defined]
        if isinstance(event, TextChunk):
            reply.chunks.append(event.text)
        elif isinstance(event, TransferRequest):
            reply.transfer = event
        elif isinstance(event, EndCallRequest):
            reply.end = event
    return reply


@dataclass
class Call:
    runner: GraphRunner
    ctx: CallContext
    transcript: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        runner: GraphRunner,
        settings: Settings,
        flow: str,
        *,
        thread_id: str = "thread-1",
        caller: str = "+15551234567",
    ) -> Call:
        ctx = CallContext(
            call_sid=f"CA{thread_id}",
            thread_id=thread_id,
            caller=caller,
            called="+15550009999",
            flow=flow,
            flow_settings=settings.flows[flow],
        )
        return cls(runner, ctx)

    async def start(self) -> Reply:
        reply = await collect(self.runner.start(self.ctx))
        self.transcript.append(("agent", reply.text))
        return reply

    async def turn(self, turn: CallerInput) -> Reply:
        reply = await collect(self.runner.respond(self.ctx, turn))
        self.transcript.append(("agent", reply.text))
        return reply

    async def say(self, text: str) -> Reply:
        self.transcript.append(("caller", text))
        return await self.turn(CallerText(text))

    async def press(self, digits: str) -> Reply:
        return await self.turn(CallerDigits(digits))

    async def signal(self, kind: str, detail: str = "") -> Reply:
        return await self.turn(CallSignal(kind, detail))


def graph_settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    flows = {
        "scheduling": FlowSettings(
            timezone="America/New_York",
            transfer_targets={"front_desk": TransferTarget(number="+15550100001", description="front desk")},
            dtmf_transfer={"0": "front_desk"},
        ),
        "support": FlowSettings(
            timezone="Europe/Madrid",
            transfer_targets={
                "billing": TransferTarget(number="+15550100002", description="billing team"),
                "support": TransferTarget(number="+15550100003", description="technical support"),
            },
        ),
        "sales": FlowSettings(
            timezone="America/Los_Angeles",
            company="Acme Software",
            transfer_targets={"sales": TransferTarget(number="+15550100004", description="sales team")},
        ),
    }
    return Settings(data_dir=tmp_path, database_url=database_url, flows=flows, _env_file=None, **overrides)  # type: ignore[call-arg]
