"""A flow graph drawn as SVG, with the path one call took through it (pure, no I/O).

LangGraph describes a compiled graph (``graph.get_graph()``: nodes and edges, conditional
or not); its own renderers need Graphviz or a network service, so the console lays the
graph out itself, the layered (Sugiyama) way: back edges (loops like tools -> agent) are
found by depth-first search and drawn as curves on the right; every other node sits in the
layer of its longest distance from ``__start__``; an edge that skips layers passes through
a slot reserved in each layer it crosses, so it never runs through a node; one barycentre
pass orders each layer to cut crossings. A visited node or walked edge is drawn heavier,
with its count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

NODE_W, NODE_H, GAP_X, GAP_Y, PAD, DUMMY_W, LOOP_ROOM = 120, 36, 24, 56, 16, 18, 70


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    conditional: bool = False


def _back_edges(nodes: Sequence[str], edges: Sequence[Edge]) -> set[tuple[str, str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        out[e.source].append(e.target)
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    back: set[tuple[str, str]] = set()
    for root in sorted(nodes, key=lambda n: n != "__start__"):
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            if i < len(out[node]):
                stack[-1] = (node, i + 1)
                nxt = out[node][i]
                if state.get(nxt) == 1:
                    back.add((node, nxt))
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                stack.pop()
    return back


def _layers(nodes: Sequence[str], forward: Sequence[Edge]) -> dict[str, int]:
    layer = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):  # longest path on a DAG by relaxation; flow graphs are tiny
        changed = False
        for e in forward:
            if layer[e.target] < layer[e.source] + 1:
                layer[e.target] = layer[e.source] + 1
                changed = True
        if not changed:
            break
    if "__end__" in layer:  # the end sits alone at the bottom
        others = [v for n, v in layer.items() if n != "__end__"]
        layer["__end__"] = max(layer["__end__"], max(others, default=-1) + 1)
    return layer


def render(
    nodes: Sequence[str],
    edges: Iterable[Edge],
    *,
    visits: Mapping[str, int] | None = None,
    walked: Mapping[tuple[str, str], int] | None = None,
    title: str = "flow graph",
) -> str:
    """The graph as an ``<svg>`` element; ``visits`` counts a call's visits per node and
    ``walked`` its steps per edge (both optional)."""
    edges = [e for e in edges if e.source in nodes and e.target in nodes]
    visits = visits or {}
    walked = walked or {}
    back = _back_edges(nodes, edges)
    forward = [e for e in edges if (e.source, e.target) not in back]
    layer = _layers(nodes, forward)

    # rows of slots: real nodes, and one dummy slot per layer an edge passes through
    rows: dict[int, list[str]] = defaultdict(list)
    for n in nodes:
        rows[layer[n]].append(n)
    routes: dict[int, list[str]] = {}  # edge index -> slots it passes, source to target
    for i, e in enumerate(forward):
        chain = [e.source]
        for level in range(layer[e.source] + 1, layer[e.target]):
            dummy = f"\x00{i}:{level}"
            rows[level].append(dummy)
            chain.append(dummy)
        chain.append(e.target)
        routes[i] = chain
    up: dict[str, list[str]] = defaultdict(list)  # slot -> slots above it that lead to it
    for chain in routes.values():
        for a, b in zip(chain, chain[1:], strict=False):
            up[b].append(a)
    order: dict[str, float] = {}
    for level in sorted(rows):  # one barycentre pass, top down
        row = rows[level]
        for i, slot in enumerate(row):
            order.setdefault(slot, float(i))
        row.sort(key=lambda s: sum(order[p] for p in up[s]) / len(up[s]) if up[s] else order[s])
        for i, slot in enumerate(row):
            order[slot] = float(i)

    def w(slot: str) -> int:
        return DUMMY_W if slot.startswith("\x00") else NODE_W

    row_widths = {lv: sum(w(s) for s in row) + GAP_X * (len(row) - 1) for lv, row in rows.items()}
    inner = max(row_widths.values(), default=NODE_W)
    width = PAD * 2 + inner + LOOP_ROOM
    height = PAD * 2 + (max(rows, default=0) + 1) * (NODE_H + GAP_Y) - GAP_Y
    centre: dict[str, tuple[float, float]] = {}  # slot -> (x centre, y top)
    for level, row in rows.items():
        x = PAD + (inner - row_widths[level]) / 2
        for slot in row:
            centre[slot] = (x + w(slot) / 2, PAD + level * (NODE_H + GAP_Y))
            x += w(slot) + GAP_X

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-graph" role="img" viewBox="0 0 {width:.0f} {height:.0f}"'
        f' width="{width:.0f}" height="{height:.0f}"><title>{escape(title)}</title>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7"'
        ' orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="currentColor"/></marker></defs>',
    ]

    def edge(e: Edge, d: str) -> None:
        steps = walked.get((e.source, e.target), 0)
        cls = "edge walked" if steps else "edge"
        dash = ' stroke-dasharray="5 4"' if e.conditional else ""
        label = f"<title>{escape(e.source)} to {escape(e.target)}: {steps} step(s)</title>" if steps else ""
        parts.append(f'<path class="{cls}" d="{d}"{dash} marker-end="url(#arrow)">{label}</path>')

    for i, e in enumerate(forward):
        points = []
        for k, slot in enumerate(routes[i]):
            cx, top = centre[slot]
            if k == 0:
                points.append((cx, top + NODE_H))
            elif k == len(routes[i]) - 1:
                points.append((cx, top - 2))
            else:  # a dummy slot: pass straight down through its layer
                points.append((cx, top))
                points.append((cx, top + NODE_H))
        d = f"M{points[0][0]:.0f},{points[0][1]:.0f}"
        for (x1, y1), (x2, y2) in zip(points, points[1:], strict=False):
            mid = (y1 + y2) / 2
            d += f" C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f} {x2:.0f},{y2:.0f}"
        edge(e, d)
    right = PAD + inner
    for e in edges:
        if (e.source, e.target) not in back:
            continue
        (sx, sy), (tx, ty) = centre[e.source], centre[e.target]
        x1, y1, x2, y2 = sx + NODE_W / 2, sy + NODE_H / 2, tx + NODE_W / 2, ty + NODE_H / 2
        bend = max(right, x1, x2) + LOOP_ROOM - 20
        edge(e, f"M{x1:.0f},{y1:.0f} C{bend:.0f},{y1:.0f} {bend:.0f},{y2:.0f} {x2 + 2:.0f},{y2:.0f}")
    for n in nodes:
        cx, y = centre[n]
        x = cx - NODE_W / 2
        count = visits.get(n, 0)
        cls = "node visited" if count else "node"
        name = n.strip("_") if n in ("__start__", "__end__") else n
        badge = f" ×{count}" if count > 1 else ""
        parts.append(
            f'<g class="{cls}" data-node="{escape(n)}"><rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}"'
            f' height="{NODE_H}" rx="8"/><text x="{cx:.0f}" y="{y + NODE_H / 2 + 5:.0f}"'
            f' text-anchor="middle">{escape(name)}{badge}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
