"""LangChain tools the flows call, built per app with ``build_tools(db=..., clock=...)``.

Every tool reads the caller and the flow from the run's ``CallContext`` (a hidden
``ToolRuntime`` argument), answers in short speakable words, and turns errors into
something the agent can say. A tool that changes the call's state (a transfer or end-call
request, an opt-out, the caller's name, sales answers) returns ``Command(update=...)`` with keys of
``tools.state.ToolState``; the flow's tool node applies it, and the call session carries
out the requests once the reply has played.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from langchain_core.tools import BaseTool

from dialgraph.server.core.db import Database
from dialgraph.server.core.redaction import Redactor
from dialgraph.tools.booking import calendar_tools
from dialgraph.tools.contacts import contact_tools
from dialgraph.tools.handoff import handoff_tools
from dialgraph.tools.knowledge import KnowledgeLibrary, knowledge_tools
from dialgraph.tools.messages import message_tools
from dialgraph.tools.opt_out import opt_out_tools
from dialgraph.tools.runtime import EARLY_TOOL, model_args_schema, utc_clock

# Safe before the caller's turn is confirmed (see ``EARLY_TOOL``): they read the database, or
# answer with a Command that changes only the graph's state (the session acts on a transfer or
# an end after the reply). Booking, cancelling, messages, names, leads and opt-outs write: they wait.
EARLY_TOOLS = frozenset(
    {"find_free_slots", "list_my_appointments", "lookup_caller", "search_knowledge", "request_transfer", "end_call"}
)


def build_tools(
    *, db: Database, clock: Callable[[], dt.datetime] | None = None, redactor: Redactor | None = None
) -> dict[str, BaseTool]:
    """All tools by name, bound to ``db`` and ``clock`` (aware UTC now; defaults to the wall
    clock); what they store is redacted with ``redactor`` (default: every category)."""
    now = clock or utc_clock
    tools = [
        *calendar_tools(db=db, clock=now),
        *contact_tools(db=db, clock=now),
        *knowledge_tools(library=KnowledgeLibrary()),
        *message_tools(db=db, redactor=redactor),
        *handoff_tools(),
        *opt_out_tools(db=db),
    ]
    built = {t.name: model_args_schema(t) for t in tools}
    for name in EARLY_TOOLS:
        built[name].metadata = {**(built[name].metadata or {}), EARLY_TOOL: True}
    return built


__all__ = ["EARLY_TOOLS", "build_tools"]
