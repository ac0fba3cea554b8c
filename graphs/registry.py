"""Flow name -> graph factory.

A flow is a module ``graphs/flows/<name>.py`` holding its ``FlowSpec`` and exposing
``build_<name>_graph = flow_builder(SPEC)`` (``graphs.flows.base``); ``FlowSettings.graph``
names it (defaults to the flow's key in the config). So adding a flow is one file plus one
config entry, with nothing to register here. A graph outside this package can be named as
``package.module:function``: any callable of the ``GraphFactory`` shape.
"""

from __future__ import annotations

import importlib
import re

from dialgraph.graphs.flows.base import FlowSpec, GraphFactory

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class UnknownFlowError(LookupError):
    """No graph factory under that name."""


def graph_factory(name: str) -> GraphFactory:
    """The factory for ``name`` ("scheduling" or "my_pkg.flows:build_x_graph")."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
    elif _NAME.match(name):
        module_name, attr = f"dialgraph.graphs.flows.{name}", f"build_{name}_graph"
    else:
        raise UnknownFlowError(f"bad graph name {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise UnknownFlowError(f"no flow module {module_name!r} for graph {name!r}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UnknownFlowError(f"{module_name} has no {attr}()")
    return factory  # type: ignore[no-any-return]


def flow_spec(name: str) -> FlowSpec | None:
    """The ``FlowSpec`` (``SPEC``) of the module that holds flow ``name``, if it has one (its
    post-call ``analysis`` declaration among the rest); None for an unknown name."""
    module_name = name.partition(":")[0] if ":" in name else f"dialgraph.graphs.flows.{name}"
    if ":" not in name and not _NAME.match(name):
        return None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None
    spec = getattr(module, "SPEC", None)
    return spec if isinstance(spec, FlowSpec) else None
