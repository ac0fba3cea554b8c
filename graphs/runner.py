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

Preemption: ``preempt(ctx, CallerText)`` answers a turn that is not confirmed yet (a stable
interim transcript) on a fork of the thread in memory, holding back tool calls with effects
(tools marked ``tools.runtime.EARLY_TOOL`` run early); ``confirm()`` writes the fork's head
to the thread and finishes, ``discard()`` leaves the thread and the database untouched
(``PreemptiveReply``).
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
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StateSnapshot

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
from dialgraph.tools.runtime import EARLY_TOOL

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
        self._early_tools = _early_tools(graph)
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

    async def read_state(self, thread_id: str) -> StateSnapshot:
        """The thread's head state."""
        return await self.graph.aget_state({"configurable": {"thread_id": thread_id}})

    async def read_history(self, thread_id: str) -> list[StateSnapshot]:
        """The thread's checkpoints, newest first."""
        return [s async for s in self.graph.aget_state_history({"configurable": {"thread_id": thread_id}})]

    def early_tool(self, name: str) -> bool:
        """Whether the flow's tool ``name`` may run before the caller's turn is confirmed."""
        return name in self._early_tools

    def preempt(self, ctx: CallContext, turn: CallerText) -> PreemptiveReply:
        """Start answering ``turn`` before it is confirmed (a stable interim transcript, or the
        turn detector saying the caller is done): see ``PreemptiveReply``."""
        return PreemptiveReply(self, ctx, turn)

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
        lock = self._lock(ctx.thread_id)
        async with lock:
            turn = TurnLog(human=human)
            self._remember(ctx.thread_id, turn)
            acc = _RunTally()
            config = offline_config(self._config(ctx)) if offline else self._config(ctx)
            async for chunk in self._stream(self.graph, _turn_payload(update), config, ctx, turn, acc):
                yield chunk
            self._log_done(ctx, acc, offline=offline)
            for event in acc.closing_events():
                yield event

    async def _stream(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        payload: dict[str, Any] | None,
        config: RunnableConfig,
        ctx: CallContext,
        turn: TurnLog,
        acc: _RunTally,
        *,
        interrupt_before: list[str] | None = None,
    ) -> AsyncGenerator[TextChunk, None]:
        """One graph run (``payload`` None: resume where the thread stands): the spoken text
        as it streams; the transfer/end requests and token usage go into ``acc``."""
        stream: Any = graph.astream(
            payload,
            config,
            context=ctx,
            stream_mode=["messages", "updates"],
            durability=self.durability,
            interrupt_before=interrupt_before,
        )
        async with aclosing(stream):
            async for mode, data in stream:
                if mode == "updates":
                    # a node's update is a dict, or a list of them when it wrote a key
                    # twice (the tool node applying several tools' Commands)
                    for node_update in data.values():
                        for part in node_update if isinstance(node_update, list) else (node_update,):
                            if isinstance(part, dict):
                                acc.transfer = part.get("pending_transfer", acc.transfer)
                                acc.end = part.get("pending_end", acc.end)
                    continue
                chunk, meta = data
                if meta.get("langgraph_node") not in SPOKEN_NODES or not isinstance(chunk, (AIMessage, AIMessageChunk)):
                    continue
                if chunk.usage_metadata:
                    model = str(meta.get("ls_model_name") or chunk.response_metadata.get("model_name") or "default")
                    acc.count(model, chunk.usage_metadata)
                text = content_text(chunk)
                if not text:
                    continue
                msg_id = chunk.id or "unknown"
                if acc.last_id is not None and msg_id != acc.last_id and not text[:1].isspace():
                    turn.add(acc.last_id, " ")
                    yield TextChunk(" ")
                acc.last_id = msg_id
                if acc.first_token_ms is None:
                    acc.first_token_ms = (time.perf_counter() - acc.started) * 1000
                turn.add(msg_id, text)
                yield TextChunk(text)

    def _log_done(self, ctx: CallContext, acc: _RunTally, *, offline: bool = False, **extra: Any) -> None:
        log.info(
            "turn_done",
            call_sid=ctx.call_sid,
            flow=ctx.flow,
            first_token_ms=round(acc.first_token_ms, 1) if acc.first_token_ms is not None else None,
            turn_ms=round((time.perf_counter() - acc.started) * 1000, 1),
            input_tokens=acc.tokens[0],
            output_tokens=acc.tokens[1],
            transfer=acc.transfer["target"] if acc.transfer else None,
            end=bool(acc.end),
            offline=offline or None,
            **extra,
        )


class PreemptiveReply:
    """A reply run on a caller turn that is not confirmed yet, kept out of the thread until it is.

    Iterate it like ``respond``: the ``TextChunk``s stream at once (the session synthesises
    them but holds the audio back). The run works on a fork of the thread: the head
    checkpoint copied into an in-memory saver, so nothing it does reaches the real
    checkpointer. It stops before a tool call that has effects (a tool without
    ``EARLY_TOOL`` in its metadata: booking, cancelling, messages...); read-only tools and
    tools that only change the graph's state (transfer or end requests, acted on by the
    session after the reply) run early. Then it waits for the session's decision:

    - ``confirm()``: the fork's head is written to the thread (one checkpoint, through the
      real saver, so redaction and encryption apply), the run goes on there (the held-back
      tool calls run now) and the turn ends like ``respond``'s: usage, transfer, end.
    - ``discard()`` (the final transcript differs), or cancelling the iterating task: the
      fork is dropped; the thread and the database are as before. What the model spent is
      in ``wasted`` (the call still pays for it).

    The thread's lock is held from the fork to the decision, so nothing else writes to the
    thread meanwhile: decide before any other call on the same thread (``record_heard``
    would wait for it).
    """

    def __init__(self, runner: GraphRunner, ctx: CallContext, turn: CallerText) -> None:
        self._runner = runner
        self._ctx = ctx
        self._turn = turn
        self._decision: asyncio.Future[bool] | None = None
        self._decided: bool | None = None
        self.wasted: list[TurnUsage] = []  # a discarded run's spend
        self.held_back: tuple[str, ...] = ()  # the tool calls that waited for the confirmation
        self.waiting = asyncio.Event()  # set when all it may do early is done: it needs the decision

    def confirm(self) -> None:
        """The final transcript is this turn's: commit and finish the reply."""
        self._decide(True)

    def discard(self) -> None:
        """The final transcript differs: drop the run; nothing reaches the thread."""
        self._decide(False)

    def _decide(self, confirmed: bool) -> None:
        if self._decided is None:
            self._decided = confirmed
            if self._decision is not None and not self._decision.done():
                self._decision.set_result(confirmed)

    def __aiter__(self) -> AsyncIterator[RunnerEvent]:
        return self._events()

    async def _events(self) -> AsyncGenerator[RunnerEvent, None]:
        runner, ctx = self._runner, self._ctx
        human = HumanMessage(self._turn.text, id=f"caller-{uuid.uuid4().hex}")
        real = runner.graph.checkpointer
        if not isinstance(real, BaseCheckpointSaver):
            raise TypeError("preemption needs a graph compiled with a checkpointer")
        async with runner._lock(ctx.thread_id):
            config = runner._config(ctx)
            if self._turn.offline:
                config = offline_config(config)
            head = await real.aget_tuple(config)
            fork = runner.graph.copy(update={"checkpointer": InMemorySaver()})
            fork_config: RunnableConfig = {**config, "configurable": {**config["configurable"], "checkpoint_ns": ""}}
            if head is not None:
                await _copy_checkpoint(head, fork.checkpointer, fork_config, since=None)  # type: ignore[arg-type]
            turn, acc = TurnLog(human=human), _RunTally()
            payload: dict[str, Any] | None = _turn_payload({"messages": [human]})
            try:
                while True:  # run until the end of the turn or a tool call with effects
                    async for chunk in runner._stream(
                        fork, payload, fork_config, ctx, turn, acc, interrupt_before=["tools"]
                    ):
                        yield chunk
                    payload = None
                    pending = _pending_tool_calls(await fork.aget_state(fork_config))
                    if not pending or not all(runner.early_tool(name) for name in pending):
                        self.held_back = tuple(pending)
                        break
                self._decision = asyncio.get_running_loop().create_future()
                if self._decided is not None:
                    self._decision.set_result(self._decided)
                self.waiting.set()
                confirmed = await self._decision
            except (asyncio.CancelledError, GeneratorExit):  # dropped before the decision: a discard
                self.wasted = acc.usage()
                raise
            if not confirmed:
                self.wasted = acc.usage()
                runner._log_done(ctx, acc, offline=self._turn.offline, preemptive="discarded")
                return
            runner._remember(ctx.thread_id, turn)
            forked = await fork.checkpointer.aget_tuple(fork_config)  # type: ignore[union-attr]
            if forked is not None:
                await _copy_checkpoint(forked, real, config, since=head)
            if self.held_back:  # the tool calls that waited run now, on the real thread
                async for chunk in runner._stream(runner.graph, None, config, ctx, turn, acc):
                    yield chunk
            runner._log_done(ctx, acc, offline=self._turn.offline, preemptive="confirmed")
            for event in acc.closing_events():
                yield event


def _early_tools(graph: CompiledStateGraph[Any, Any, Any, Any]) -> frozenset[str]:
    """The names of the graph's tools marked ``EARLY_TOOL`` (its ``tools`` node's ToolNode)."""
    spec = graph.builder.nodes.get("tools") if graph.builder is not None else None
    by_name = getattr(getattr(spec, "runnable", None), "tools_by_name", {})
    return frozenset(name for name, t in by_name.items() if (t.metadata or {}).get(EARLY_TOOL))


def _pending_tool_calls(snapshot: Any) -> list[str]:
    """The tool calls a run stopped before (empty when it did not stop before ``tools``)."""
    if "tools" not in snapshot.next:
        return []
    messages = snapshot.values.get("messages", [])
    last = messages[-1] if messages else None
    return [call["name"] for call in last.tool_calls] if isinstance(last, AIMessage) else []


async def _copy_checkpoint(
    source: CheckpointTuple, saver: BaseCheckpointSaver[Any], config: RunnableConfig, *, since: CheckpointTuple | None
) -> RunnableConfig:
    """Write ``source`` as the new head of ``config``'s thread in ``saver`` (after ``since``,
    the head it was forked from: only the channels changed since are written), with the
    writes pending on it."""
    versions = source.checkpoint["channel_versions"]
    if since is not None:
        before = since.checkpoint["channel_versions"]
        versions = {k: v for k, v in versions.items() if before.get(k) != v}
        parent = since.config
    else:
        parent = {**config, "configurable": {**config["configurable"], "checkpoint_ns": ""}}
    saved = await saver.aput(parent, source.checkpoint, source.metadata, versions)
    by_task: dict[str, list[tuple[str, Any]]] = {}
    for task_id, channel, value in source.pending_writes or ():
        by_task.setdefault(task_id, []).append((channel, value))
    for task_id, writes in by_task.items():
        await saver.aput_writes(saved, writes, task_id)
    return saved


def _turn_payload(update: dict[str, Any]) -> dict[str, Any]:
    """Every run states the per-turn fields, so nothing stale from an earlier turn routes this one."""
    return {"signal": None, "keypad": None, "pending_transfer": None, "pending_end": None, **update}


@dataclass
class _RunTally:
    """What one turn's runs decided and spent, gathered while its text streams."""

    started: float = field(default_factory=time.perf_counter)
    first_token_ms: float | None = None
    transfer: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    last_id: str | None = None
    tokens: list[int] = field(default_factory=lambda: [0, 0])
    by_model: dict[str, list[int]] = field(default_factory=dict)

    def count(self, model: str, usage: Any) -> None:
        used_in, used_out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        self.tokens[0] += used_in
        self.tokens[1] += used_out
        counted = self.by_model.setdefault(model, [0, 0])
        counted[0] += used_in
        counted[1] += used_out

    def usage(self) -> list[TurnUsage]:
        return [TurnUsage(model=m, input_tokens=i, output_tokens=o) for m, (i, o) in self.by_model.items()]

    def closing_events(self) -> list[RunnerEvent]:
        """The usage, then the transfer or end the turn decided on (after its text)."""
        events: list[RunnerEvent] = list(self.usage())
        if self.transfer:
            t = self.transfer
            events.append(TransferRequest(target=t["target"], reason=t["reason"], summary=t["summary"]))
        if self.end:
            events.append(EndCallRequest(reason=self.end.get("reason", "completed")))
        return events


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
