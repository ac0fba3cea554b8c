"""A scripted ``graphs.events.TurnRunner`` (tests and bench only): answers from a table keyed
by the caller's text / digits / signal kind, recording every input and every heard text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.turns import CallerDigits, CallerInput, CallerText, CallSignal, RunnerEvent, TextChunk

Reply = str | Sequence[RunnerEvent]


def _events(reply: Reply) -> list[RunnerEvent]:
    """A string becomes word-sized TextChunks, like an LLM's token stream."""
    if isinstance(reply, str):
        words = reply.split(" ")
        return [TextChunk(w + (" " if i < len(words) - 1 else "")) for i, w in enumerate(words)]
    return list(reply)


def _key(turn: CallerInput) -> str:
    if isinstance(turn, CallerText):
        return turn.text
    if isinstance(turn, CallerDigits):
        return f"digits:{turn.digits}"
    assert isinstance(turn, CallSignal)
    return f"signal:{turn.kind}:{turn.detail}" if turn.detail else f"signal:{turn.kind}"


@dataclass
class ScriptedRunner:
    """Answers ``start`` with ``greeting`` and each turn from ``replies`` (keyed by caller
    text, ``digits:<d>`` or ``signal:<kind>[:<detail>]``), else ``default``."""

    greeting: Reply = "Hello, you reached Acme Dental. How can I help?"
    replies: Mapping[str, Reply] = field(default_factory=dict)
    default: Reply = "Sorry, could you say that again?"
    event_delay_s: float = 0.0
    inputs: list[tuple[str, CallerInput | None]] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    contexts: list[CallContext] = field(default_factory=list)
    cancelled: int = 0

    async def _play(self, reply: Reply) -> AsyncIterator[RunnerEvent]:
        try:
            for event in _events(reply):
                if self.event_delay_s:
                    await asyncio.sleep(self.event_delay_s)
                yield event
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def start(self, ctx: CallContext) -> AsyncIterator[RunnerEvent]:
        self.contexts.append(ctx)
        self.inputs.append(("start", None))
        return self._play(self.greeting)

    def respond(self, ctx: CallContext, turn: CallerInput) -> AsyncIterator[RunnerEvent]:
        self.contexts.append(ctx)
        self.inputs.append(("respond", turn))
        return self._play(self.replies.get(_key(turn), self.default))

    async def record_heard(self, ctx: CallContext, heard_text: str) -> None:
        self.heard.append(heard_text)
