"""A flow's graph picture and the path one call took through it, read from its checkpoints.

The path comes from the thread's checkpoint history (LangGraph's ``aget_state_history``):
each run starts at ``__start__`` and every checkpoint names the nodes that ran next, so
the nodes visited, the edges walked and the tool calls with their results are all there.
Tool arguments and results pass the redactor before they leave (the checkpoint already
holds them redacted; a call stored before redaction was on does not).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage

from dialgraph.graphs.graph_loop import GraphReader
from dialgraph.server.dashboard.graph_svg import Edge, render


@dataclass
class CallPath:
    """Where a call went in its flow's graph."""

    runs: list[list[str]] = field(default_factory=list)  # each graph run's nodes, in order
    visits: Counter[str] = field(default_factory=Counter)
    walked: Counter[tuple[str, str]] = field(default_factory=Counter)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # name, args, result


def _graph_of(runner: object) -> Any | None:
    return runner.graph if isinstance(runner, GraphReader) else None


def _shape(runner: object) -> tuple[list[str], list[Edge]] | None:
    graph = _graph_of(runner)
    if graph is None:
        return None
    drawable = graph.get_graph()
    return list(drawable.nodes), [Edge(e.source, e.target, bool(e.conditional)) for e in drawable.edges]


def flow_svg(runner: object, *, title: str, path: CallPath | None = None) -> str | None:
    """The flow's graph as SVG (with ``path`` drawn on it), or None for a runner that is
    not a LangGraph graph."""
    shape = _shape(runner)
    if shape is None:
        return None
    nodes, edges = shape
    return render(
        nodes,
        edges,
        visits=path.visits if path else None,
        walked=path.walked if path else None,
        title=title,
    )


async def call_path(runner: object, thread_ids: Sequence[str], redact: Callable[[str], str]) -> CallPath:
    """The path of the call's threads (the call's own and, after a callback, none other:
    pass the threads this call ran on), oldest first."""
    path = CallPath()
    if not isinstance(runner, GraphReader):
        return path
    for thread_id in thread_ids:
        history = await runner.read_history(thread_id)
        if not history:
            continue
        run: list[str] = []
        for snapshot in reversed(history):
            source = (snapshot.metadata or {}).get("source")
            if source == "input":
                if run:
                    path.runs.append(run)
                run = ["__start__"]
                continue
            nxt = list(snapshot.next)
            run.extend(nxt if nxt else ["__end__"])
        if run:
            path.runs.append(run)
        results = {}
        messages = history[0].values.get("messages", []) if isinstance(history[0].values, dict) else []
        for message in messages:
            if isinstance(message, ToolMessage):
                results[message.tool_call_id] = redact(str(message.content))
        for message in messages:
            if isinstance(message, AIMessage):
                for tc in message.tool_calls:
                    path.tool_calls.append(
                        {
                            "name": tc["name"],
                            "args": {k: redact(str(v)) if v is not None else None for k, v in tc["args"].items()},
                            "result": results.get(tc.get("id") or ""),
                        }
                    )
    for run in path.runs:
        path.visits.update(run)
        path.walked.update(zip(run, run[1:], strict=False))
    return path
