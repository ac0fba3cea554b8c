"""``GraphRunner``: the one door between a call session and a flow's compiled graph.

Caller input goes in; ``TextChunk``s come out as the model streams them, then the
``TransferRequest`` / ``EndCallRequest`` the run decided on. The session never looks
inside the graph.

Durability: runs use ``durability="async"`` by default (``Settings.durability``). Each
step's checkpoint is written while the next step already runs, so the first token never
waits for a commit (measured ~7-9 ms to first token vs ~12-13 ms with "sync"; see
bench/graph_turns.py). What a crash can lose is the last step of the turn in flight;
the turn is then answered again on resume (the caller's words are re-sent by
``record_heard`` if they were not saved). "sync" trades that latency for no loss; "exit"
writes only at the end of a run and would lose whole turns.

Barge-in: the session cancels the task iterating ``respond`` (the graph run is cancelled
with it), then calls ``record_heard`` with what the caller actually heard. A cancelled
run leaves the head checkpoint before the interrupted node, with the partial reply
unsaved; ``record_heard`` writes the heard text as the agent's reply (same message id,
marked ``interrupted``) with ``aupdate_state(..., as_node="agent")``, so the next turn
starts from what the caller really heard. Runs and repairs of one thread take a per-thread
lock, so a repair waits for the cancelled run to finish unwinding.

Cost: every run that used a model ends with a ``TurnUsage`` (tokens by model name, streamed
usage included), which the call session adds to the call's cost. Spend caps: a
``CallSignal("budget_spent")`` is answered with ``BUDGET_OFFER`` (fixed words written to the
thread, no model call), and a caller turn marked ``offline`` runs with ``OFFLINE_ONLY`` in
its config, so a hosted model (``graphs.model``) hands it to the offline model.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from dialgraph.graphs.model import offline_config
from dialgraph.graphs.offline_policy import BUDGET_OFFER, BUDGET_OFFER_ACT
from dialgraph.graphs.state import DIALOG_ACT, INTERRUPTED, UNSAID, CallbackState
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.turns import (
    BUDGET_SPENT,
    CallerDigits,
    CallerInput,
    CallerText,
    CallSignal,
    EndCallRequest,
    RunnerEvent,
    TextChunk,
    TransferRequest,
    TurnUsage,
)

log = structlog.get_logger(__name__)

SPOKEN_NODES = frozenset({"agent", "greeting", "signal", "keypad"})
NOT_DONE = "Not done: the caller interrupted before this finished."
_MAX_LOGS = 4096


@dataclass
class TurnLog:
    """What the latest run of a thread sent out: the caller's message and the spoken
    text per agent message id, in order."""

    human: HumanMessage | None
    segments: list[tuple[str, str]] = field(default_factory=list)

    def add(self, msg_id: str, text: str) -> None:
        if self.segments and self.segments[-1][0] == msg_id:
            self.segments[-1] = (msg_id, self.segments[-1][1] + text)
        else:
            self.segments.append((msg_id, text))


def content_text(message: AnyMessage | AIMessageChunk) -> str:
    """The plain text of a message's content (string or content blocks)."""
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(
        b.get("text", "") if isinstance(b, dict) else str(b)
        for b in content
        if not isinstance(b, dict) or b.get("type") == "text"
    )


def _squash(text: str) -> str:
    return " ".join(text.split())


class GraphRunner:
    """Implements ``server.core.turns.TurnRunner`` for one compiled flow graph."""

    def __init__(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        *,
        durability: Literal["async", "sync", "exit"] = "async",
        recursion_limit: int = 24,
        recall: Callable[[CallContext], Awaitable[CallbackState | None]] | None = None,
    ) -> None:
        """``recall(ctx)`` (``graphs.recall.build_recall``) is awaited before the greeting:
        a caller we recognise is welcomed back by name with their appointment or the
        open topic of their last call."""
        self.graph = graph
        self.recall = recall
        self.durability = durability
        self.recursion_limit = recursion_limit
        self._logs: OrderedDict[str, TurnLog] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # --- TurnRunner ------------------------------------------------------------------------
    def start(self, ctx: CallContext) -> AsyncIterator[RunnerEvent]:
        """Greeting on a new thread; on an existing one a short reconnection line, then the
        answer to a caller turn left unanswered (if any). A caller ringing back (see
        ``recall``) is greeted with what we know of them."""
        return self._start(ctx)

    def respond(self, ctx: CallContext, turn: CallerInput) -> AsyncIterator[RunnerEvent]:
        if isinstance(turn, CallerText):
            human = HumanMessage(turn.text, id=f"caller-{uuid.uuid4().hex}")
            return self._run(ctx, {"messages": [human]}, human=human, offline=turn.offline)
        if isinstance(turn, CallerDigits):
            human = HumanMessage(
                f"(pressed {turn.digits} on the keypad)",
                id=f"caller-{uuid.uuid4().hex}",
                additional_kwargs={"dtmf": turn.digits},
            )
            return self._run(ctx, {"messages": [human], "keypad": turn.digits}, human=human, offline=turn.offline)
        if isinstance(turn, CallSignal) and turn.kind == BUDGET_SPENT:
            return self._budget_offer(ctx)
        if isinstance(turn, CallSignal):
            return self._run(ctx, {"signal": {"kind": turn.kind, "detail": turn.detail}}, human=None)
        raise TypeError(f"unknown caller input type {type(turn).__name__}")  # never the caller's words

    async def record_heard(self, ctx: CallContext, heard_text: str) -> None:
        """Make the thread's last agent reply exactly ``heard_text``, marked interrupted."""
        async with self._lock(ctx.thread_id):
            config = self._config(ctx)
            snapshot = await self.graph.aget_state(config)
            messages: list[AnyMessage] = list(snapshot.values.get("messages", []))
            updates = repair_messages(messages, self._logs.get(ctx.thread_id), heard_text)
            await self.graph.aupdate_state(config, {"messages": updates}, as_node="agent")
            log.info("reply_interrupted", call_sid=ctx.call_sid, thread_id=ctx.thread_id, heard_chars=len(heard_text))

    # --- internals -------------------------------------------------------------------------
    async def _budget_offer(self, ctx: CallContext) -> AsyncGenerator[RunnerEvent, None]:
        """The spend cap was reached: the offer to take a message or transfer, in fixed words
        written to the thread as the agent's reply (no model call, no graph run); the offline
        model reads its dialogue act and answers what the caller says next."""
        async with self._lock(ctx.thread_id):
            offer = AIMessage(
                BUDGET_OFFER, id=f"fixed-{uuid.uuid4().hex}", response_metadata={DIALOG_ACT: BUDGET_OFFER_ACT}
            )
            turn = TurnLog(human=None)
            turn.add(str(offer.id), BUDGET_OFFER)
            self._remember(ctx.thread_id, turn)
            update = {
                "messages": [offer],
                "signal": None,
                "keypad": None,
                "pending_transfer": None,
                "pending_end": None,
            }
            await self.graph.aupdate_state(self._config(ctx), update, as_node="agent")
            log.info("budget_offer", call_sid=ctx.call_sid, flow=ctx.flow)
        yield TextChunk(BUDGET_OFFER)

    async def _start(self, ctx: CallContext) -> AsyncIterator[RunnerEvent]:
        update: dict[str, Any] = {"signal": {"kind": "start", "detail": ""}}
        if self.recall is not None:
            callback = await self.recall(ctx)
            if callback is not None:
                update["callback"] = callback
        events = self._run(ctx, update, human=None)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()

    def _config(self, ctx: CallContext) -> RunnableConfig:
        # The flow goes into every checkpoint's metadata: ``recall`` only reads a caller's
        # earlier thread when it belongs to the same flow.
        return {
            "configurable": {"thread_id": ctx.thread_id},
            "metadata": {"flow": ctx.flow},
            "recursion_limit": self.recursion_limit,
        }

    def _lock(self, thread_id: str) -> asyncio.Lock:
        lock = self._locks.get(thread_id)
        if lock is None:
            lock = self._locks[thread_id] = asyncio.Lock()
        return lock

    def _remember(self, thread_id: str, turn: TurnLog) -> None:
        self._logs[thread_id] = turn
        self._logs.move_to_end(thread_id)
        while len(self._logs) > _MAX_LOGS:
            self._logs.popitem(last=False)

    async def _run(
        self, ctx: CallContext, update: dict[str, Any], *, human: HumanMessage | None, offline: bool = False
    ) -> AsyncGenerator[RunnerEvent, None]:
        # Every run states the per-turn fields, so nothing stale from an earlier turn routes this one.
        payload = {"signal": None, "keypad": None, "pending_transfer": None, "pending_end": None, **update}
        lock = self._lock(ctx.thread_id)
        async with lock:
            turn = TurnLog(human=human)
            self._remember(ctx.thread_id, turn)
            transfer: dict[str, Any] | None = None
            end: dict[str, Any] | None = None
            started = time.perf_counter()
            first_token_ms: float | None = None
            tokens = {"input": 0, "output": 0}
            by_model: dict[str, list[int]] = {}
            last_id: str | None = None
            config = offline_config(self._config(ctx)) if offline else self._config(ctx)
            stream: Any = self.graph.astream(
                payload,
                config,
                context=ctx,
                stream_mode=["messages", "updates"],
                durability=self.durability,
            )
            async with aclosing(stream):
                async for mode, data in stream:
                    if mode == "updates":
                        # a node's update is a dict, or a list of them when it wrote a key
                        # twice (the tool node applying several tools' Commands)
                        for node_update in data.values():
                            for part in node_update if isinstance(node_update, list) else (node_update,):
                                if isinstance(part, dict):
                                    transfer = part.get("pending_transfer", transfer)
                                    end = part.get("pending_end", end)
                        continue
                    chunk, meta = data
                    if meta.get("langgraph_node") not in SPOKEN_NODES or not isinstance(
                        chunk, (AIMessage, AIMessageChunk)
                    ):
                        continue
                    if chunk.usage_metadata:
                        used_in = chunk.usage_metadata.get("input_tokens", 0)
                        used_out = chunk.usage_metadata.get("output_tokens", 0)
                        tokens["input"] += used_in
                        tokens["output"] += used_out
                        model = str(meta.get("ls_model_name") or chunk.response_metadata.get("model_name") or "default")
                        counted = by_model.setdefault(model, [0, 0])
                        counted[0] += used_in
                        counted[1] += used_out
                    text = content_text(chunk)
                    if not text:
                        continue
                    msg_id = chunk.id or "unknown"
                    if last_id is not None and msg_id != last_id and not text[:1].isspace():
                        turn.add(last_id, " ")
                        yield TextChunk(" ")
                    last_id = msg_id
                    if first_token_ms is None:
                        first_token_ms = (time.perf_counter() - started) * 1000
                    turn.add(msg_id, text)
                    yield TextChunk(text)
            log.info(
                "turn_done",
                call_sid=ctx.call_sid,
                flow=ctx.flow,
                first_token_ms=round(first_token_ms, 1) if first_token_ms is not None else None,
                turn_ms=round((time.perf_counter() - started) * 1000, 1),
                input_tokens=tokens["input"],
                output_tokens=tokens["output"],
                transfer=transfer["target"] if transfer else None,
                end=bool(end),
                offline=offline or None,
            )
            for model, (used_in, used_out) in by_model.items():
                yield TurnUsage(model=model, input_tokens=used_in, output_tokens=used_out)
            if transfer:
                yield TransferRequest(target=transfer["target"], reason=transfer["reason"], summary=transfer["summary"])
            if end:
                yield EndCallRequest(reason=end.get("reason", "completed"))


def unsaid_rest(said: str, heard: str) -> str | None:
    """What the caller did not hear of ``said``, from the start of the sentence the cut
    fell in (so it can be said again after a reconnection; a colon or semicolon counts
    as a sentence end); None when ``heard`` is not a prefix of ``said`` or nothing is
    missing."""
    said, heard = _squash(said), _squash(heard)
    if not said.startswith(heard) or len(said) <= len(heard):
        return None
    cut = len(heard)
    start = max(said.rfind(end, 0, cut + 1) for end in (". ", "? ", "! ", ": ", "; "))
    return said[start + 2 :] if start >= 0 else said


def _mark(message: AIMessage, text: str) -> AIMessage:
    extra: dict[str, Any] = {INTERRUPTED: True}
    if not message.tool_calls and (rest := unsaid_rest(content_text(message), text)):
        extra[UNSAID] = rest
    return message.model_copy(
        update={
            "content": text,
            "additional_kwargs": {**message.additional_kwargs, **extra},
            "response_metadata": {**message.response_metadata, INTERRUPTED: True},
        }
    )


def repair_messages(messages: list[AnyMessage], turn: TurnLog | None, heard_text: str) -> list[AnyMessage]:
    """The messages to write (same id replaces) so the latest turn ends with the agent
    having said exactly ``heard_text``: the caller's words saved once, each streamed
    reply cut to what was heard, tool calls that never finished answered as not done,
    and a final plain agent message marked interrupted."""
    updates: list[AnyMessage] = []
    ids = {m.id for m in messages}
    if turn is not None and turn.human is not None and turn.human.id not in ids:
        updates.append(turn.human)
        tail: list[AnyMessage] = []
    else:
        last_human = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
        tail = messages[last_human + 1 :]
    by_id = {m.id: m for m in tail}
    remaining = _squash(heard_text)
    final: AIMessage | None = None
    for msg_id, said in turn.segments if turn else []:
        said = _squash(said)
        if remaining.startswith(said) and said:
            part, remaining = said, remaining[len(said) :].lstrip()
        else:
            part, remaining = remaining, ""
        existing = by_id.get(msg_id)
        if isinstance(existing, AIMessage):
            final = _mark(existing, part)
            by_id[msg_id] = final
        elif part:
            final = AIMessage(
                content=part, id=msg_id, additional_kwargs={INTERRUPTED: True}, response_metadata={INTERRUPTED: True}
            )
            tail.append(final)
            by_id[msg_id] = final
    # AI messages in the tail that were not streamed this turn (unsaved log: other process)
    ordered = [by_id.get(m.id, m) for m in tail]
    if final is None:
        last_ai = next((m for m in reversed(ordered) if isinstance(m, AIMessage) and not m.tool_calls), None)
        if last_ai is not None and ordered and ordered[-1] is last_ai:
            final = _mark(last_ai, _squash(heard_text))
            ordered[-1] = final
    originals = {m.id: m for m in messages}
    done_calls = {m.tool_call_id for m in ordered if isinstance(m, ToolMessage)}
    for m in ordered:
        if originals.get(m.id) is not m:
            updates.append(m)
        if isinstance(m, AIMessage):
            for call in m.tool_calls:
                call_id = call["id"] or ""
                if call_id not in done_calls:
                    updates.append(ToolMessage(NOT_DONE, tool_call_id=call_id, name=call["name"], status="error"))
                    done_calls.add(call_id)
    last = updates[-1] if updates else (ordered[-1] if ordered else None)
    if not (isinstance(last, AIMessage) and not last.tool_calls and last.additional_kwargs.get(INTERRUPTED)):
        updates.append(
            AIMessage(
                content=remaining if final is None else "",
                id=f"heard-{uuid.uuid4().hex}",
                additional_kwargs={INTERRUPTED: True},
                response_metadata={INTERRUPTED: True},
            )
        )
    return updates
