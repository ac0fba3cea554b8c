"""The flows as ``langgraph dev`` loads them (langgraph.json -> graphs/studio.py).

``langgraph dev`` runs every graph factory and every run under blockbuster and fails a run
that blocks the event loop (a file read, a sleep, a sync socket); the same check runs here,
so the factories stay loadable there. It was also run by hand with langgraph-cli 0.4.40.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest
from blockbuster import blockbuster_ctx
from langchain_core.messages import HumanMessage
from langgraph.graph.state import CompiledStateGraph

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def studio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    # The studio module reads its settings like `langgraph dev` gives them: from the environment.
    monkeypatch.setenv("DIALGRAPH_DATA_DIR", str(tmp_path))
    from dialgraph.graphs import studio

    studio._parts_once.cache_clear()
    yield studio
    studio._parts_once.cache_clear()


def shipped_flows() -> set[str]:
    """The flows this repo ships: the modules of ``graphs/flows`` that hold a ``FlowSpec``."""
    from dialgraph.graphs import flows
    from dialgraph.graphs.flows.base import FlowSpec

    modules = (importlib.import_module(f"{flows.__name__}.{m.name}") for m in pkgutil.iter_modules(flows.__path__))
    return {module.SPEC.name for module in modules if isinstance(getattr(module, "SPEC", None), FlowSpec)}


def test_langgraph_json_names_every_shipped_flow() -> None:
    assert shipped_flows() == {"scheduling", "support", "sales"}
    spec = json.loads((ROOT / "langgraph.json").read_text())
    assert set(spec["graphs"]) == shipped_flows()
    for name, target in spec["graphs"].items():
        path, attr = target.split(":")
        assert (ROOT / path).is_file() and attr == name


async def test_factories_load_and_run_a_turn_without_blocking_the_loop(studio: Any) -> None:
    context = {
        "call_sid": "CA-studio",
        "thread_id": "t1",
        "caller": "+15551230000",
        "called": "",
        "flow": "scheduling",
        "flow_settings": {"timezone": "America/New_York"},  # JSON, as an HTTP run gives it
    }
    with blockbuster_ctx():
        graphs = [await studio.scheduling(), await studio.support(), await studio.sales()]
        assert all(isinstance(g, CompiledStateGraph) for g in graphs)
        result = await graphs[0].ainvoke(
            {"messages": [HumanMessage("I'd like to book an appointment next Tuesday at 10 am")]},
            {"configurable": {"thread_id": "t1"}},
            context=context,
        )
    reply = result["messages"][-1].content
    assert "name" in reply.lower(), reply  # the scheduling flow asks who the booking is for
