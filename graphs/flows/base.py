"""What every call flow shares: the nodes, the routers, the graph shape and its builder.

    START ─route_entry─┬─ greeting ─────────────────────────► END   (new call, no model)
                       ├─ signal ──┬──────────────────────► END   (reconnected, transfer failed)
                       │           └─► agent                      (a caller turn was left unanswered)
                       ├─ keypad ──┬──────────────────────► END   (DTMF mapped to a transfer)
                       │           ├─► tools                      (the opt-out digit: opt_out)
                       │           └─► agent
                       └─────────────► agent ─route_after_agent─┬─► END
                                         ▲                      └─► tools ─┐
                                         └─────────────────────────────────┘

A flow is data: a ``FlowSpec`` (its tools, prompt and greeting) that its module holds, and
``flow_builder(spec)`` makes the module's ``build_<name>_graph``. The greeting, the
reconnection line, the "nobody is free" line, keypad transfers and the opt-out confirmation
are fixed sentences (no model call: spoken at once, same on every model). ``agent`` is the flow's model with its
tools and prompt; on a new caller turn it also labels the turn's ``intent`` by keywords (no
model call), and routes itself on its reply (a ``Command``: a conditional edge would
rebuild the whole state to read it). ``tools`` is LangGraph's ``ToolNode``: a tool that
changes the call's state (a transfer or end request, the caller's name, sales answers)
answers with a ``Command(update=...)`` that the node applies; the runner hands the requests
to the call session once the reply is out. Every step is a checkpoint write, so work that
needs no step of its own shares one: a turn answered through one tool round trip writes
five checkpoints (input, start, agent, tools, agent). The model sees the flow's prompt and
the call's facts (``graphs.facts.CallFacts``: the local time, the names, never the numbers,
of the transfer targets); the offline model gets the same facts as an object.

Outbound calls (``CallContext.direction == "outbound"``): the agent speaks first. The
greeting node says the flow's outbound greeting (``FlowSettings.outbound_greeting``, else
the spec's), filled from the contact the call was placed with: their name, the company,
why we call, and for a reminder the appointment in words ("tomorrow at 10 in the
morning"). The model is told the same through ``CallFacts``. An opt-out ("stop calling
me", or the flow's ``opt_out_digit``, which the keypad node turns into a call of the same
tool) runs ``opt_out``; once its ``Command`` has set ``pending_end`` to ``opted_out`` the
agent node says ``OPT_OUT_CONFIRM`` without a model call, and the session hangs up.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph._internal._runnable import RunnableCallable
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import Command

from dialgraph.graphs.analysis import AnalysisSpec
from dialgraph.graphs.facts import CallFacts, facts_config
from dialgraph.graphs.intents import classify
from dialgraph.graphs.spoken_time import normalise
from dialgraph.graphs.state import DIALOG_ACT, INTERRUPTED, OFFER, UNSAID, CallbackState, CallState
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.language import Spoken, reply_language
from dialgraph.tools.opt_out import KEYPAD_REASON
from dialgraph.tools.runtime import utc_clock
from dialgraph.tools.speech_format import turn_language
from dialgraph.tools.state import OPTED_OUT, TransferState

VOICE_RULES = """You are on a live phone call, so speak like a friendly, efficient receptionist:
short sentences, one question at a time, no lists, no markdown, no emojis, never read out IDs.
Use the tools for anything about appointments, messages, callers or transfers; never invent availability.
Pass dates and times to tools as local ISO-8601 like 2026-11-27T14:30 (or a date like 2026-11-27).
After a booking, a change or a cancellation, confirm the day and time back in words.
If the caller asks for a person, or you cannot help, call request_transfer with one of the transfer
targets and a one-sentence summary for the human. When the caller is done, call end_call and say a short goodbye."""

RECONNECTED = "Sorry about that, we were cut off."
NOBODY_FREE = "I'm sorry, nobody from the {desc} is free to take your call right now. I can take a message for them, or arrange a call back. Which would you prefer?"
KEYPAD_TRANSFER = "Connecting you to the {desc} now. Please hold."
WELCOME_BACK = "Welcome back, {name}."
OFFER_APPOINTMENT = "I see you have an upcoming appointment — would you like to hear it, or change it?"
OPT_OUT_CONFIRM = "Understood. I've taken your number off our list and we won't call you again. Goodbye."
OUTBOUND_GREETING = "Hi {name}, this is {company}. I'm calling about {purpose}. Is now a good time to talk?"
# what an outbound greeting asks (the ``offer`` of its line): "do you have a minute?", or
# for a reminder "keep it, move it or cancel it?"
OFFER_MINUTE = "minute"
OFFER_REMINDER = "reminder"
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "shri", "smt", "sri", "kumari"})
# The fixed lines in Hinglish (Roman script), for replies in Hindi or Hinglish (``hi``/``hi-en`` flows).
RECONNECTED_HI = "Maaf kijiye, call kat gayi thi."
NOBODY_FREE_HI = (
    "Maaf kijiye, abhi {desc} mein koi call lene ke liye free nahi hai. Unke liye message le sakte hain, "
    "ya call back arrange kar sakte hain. Aap kya chahenge?"
)
KEYPAD_TRANSFER_HI = "Aapko abhi {desc} se connect kar rahe hain. Kripya line par bane rahiye."
WELCOME_BACK_HI = "Namaste {name} ji, phir se swagat hai."
OFFER_APPOINTMENT_HI = "Aapka ek appointment aane wala hai, kya aap use sunna chahenge, ya badalna hai?"
OPT_OUT_CONFIRM_HI = (
    "Theek hai. Aapka number hamari list se hata diya hai, ab aapko hamari taraf se call nahi aayegi. Namaste."
)
HOW_CAN_I_HELP_HI = "Bataiye, kya madad karein?"


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """What makes one flow different: its tools, its prompt, its greetings."""

    name: str
    tool_names: tuple[str, ...]
    prompt: str
    greeting: str  # may use {company}
    # the first words of a call we place: may use {name} {company} {purpose}, and {when}
    # (the contact's appointment in words); a missing value drops out with its space
    outbound_greeting: str = OUTBOUND_GREETING
    outbound_purpose: str = "a quick follow-up"  # {purpose} when the contact gives none
    outbound_offer: str = OFFER_MINUTE  # what the outbound greeting asks
    analysis: AnalysisSpec | None = None  # post-call summary fields (graphs/analysis.py)
    greeting_hi: str | None = None  # the greeting in Hinglish (hi / hi-en flows); may use {company}


def hinglish(language: Spoken) -> bool:
    """True when a reply in ``language`` uses the fixed lines' Hinglish versions."""
    return language in ("hi", "hi-en")


def said_language(flow: FlowSettings, messages: Sequence[AnyMessage]) -> Spoken:
    """The language of the next fixed line: the flow's, following the caller's recent turns."""
    return turn_language(flow.language, [str(m.content) for m in messages if isinstance(m, HumanMessage)])


def first_name(name: str | None) -> str | None:
    """The name to greet someone by: "Jane" of "Jane Doe", "Dr. Rao" of "Dr. Anil Rao"."""
    words = (name or "").split()
    if not words:
        return None
    if words[0].lower().rstrip(".") in _TITLES and len(words) > 1:
        return f"{words[0]} {words[-1]}"
    return words[0]


def fill(template: str, values: Mapping[str, str | None]) -> str:
    """``template`` with its ``{placeholders}`` filled; a missing value drops out with the
    space or comma before it ("Hi {name}, this is" -> "Hi, this is"), and "about {purpose}"
    reads right when the purpose is phrased as "to ..." or "regarding ..."."""
    text = template
    for key, value in values.items():
        text = text.replace("{" + key + "}", (value or "").strip())
    text = re.sub(r"\babout (about|regarding|to|because|on|for) ", r"\1 ", text)
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    text = re.sub(r"[,;:]+(?=[.!?,])", "", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def with_consent(flow: FlowSettings, text: str) -> str:
    """The greeting with the flow's recording consent line first, when it records calls."""
    consent = (flow.recording_consent or "").strip() if flow.recording else ""
    return f"{consent} {text}" if consent else text


def outbound_greeting(spec: FlowSpec, flow: FlowSettings, facts: CallFacts) -> str:
    """The first words of a call we placed, from the contact's facts (fixed words, no model)."""
    template = flow.outbound_greeting or spec.outbound_greeting
    return fill(
        template,
        {
            "name": first_name(facts.contact_name),
            "company": flow.company,
            "purpose": facts.purpose or spec.outbound_purpose,
            "when": facts.appointment_words(),
        },
    )


class GraphFactory(Protocol):
    """``build_<name>_graph``: what the registry finds for a flow's name."""

    def __call__(
        self,
        *,
        model: BaseChatModel,
        tools: Mapping[str, BaseTool] | Sequence[BaseTool],
        checkpointer: BaseCheckpointSaver[Any] | None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> CompiledStateGraph[Any, Any, Any, Any]: ...


def select_tools(tools: Mapping[str, BaseTool] | Sequence[BaseTool], names: Sequence[str]) -> list[BaseTool]:
    """The flow's tools, in the flow's order, from everything built (missing names skipped)."""
    by_name = dict(tools) if isinstance(tools, Mapping) else {t.name: t for t in tools}
    return [by_name[n] for n in names if n in by_name]


def target_desc(flow: FlowSettings, target: str | None) -> str:
    if target and target in flow.transfer_targets:
        return flow.transfer_targets[target].description or target.replace("_", " ")
    return (target or "team").replace("_", " ")


def welcome_back(callback: CallbackState, language: Spoken = "en") -> str:
    """The greeting for a caller we recognise (fixed words, no model call). Caller ID can be
    spoofed: it says the first name only and offers the appointment without reading it."""
    first = (callback.get("name") or "").split()
    if hinglish(language):
        parts = [WELCOME_BACK_HI.format(name=first[0]) if first else "Namaste, phir se swagat hai."]
        parts.append(OFFER_APPOINTMENT_HI if callback.get("appointment") else HOW_CAN_I_HELP_HI)
        return " ".join(parts)
    parts = [WELCOME_BACK.format(name=first[0]) if first else "Welcome back."]
    if callback.get("appointment"):
        parts.append(OFFER_APPOINTMENT)
        return " ".join(parts)
    if callback.get("topic"):
        parts.append(f"Last time we didn't finish {callback['topic']}. Would you like to carry on with that?")
        return " ".join(parts)
    parts.append("How can I help?")
    return " ".join(parts)


# --- routers (pure) --------------------------------------------------------------------------
# Every node and router of the graph is async, pure ones too: LangGraph runs a sync one in
# the default thread pool when the graph runs async, a thread trip that waits for the GIL
# behind the audio path under load (route_entry starts every turn).
async def route_entry(state: CallState) -> Literal["greeting", "signal", "keypad", "agent"]:
    if state.get("signal"):
        return "signal" if state.get("messages") else "greeting"
    if state.get("keypad"):
        return "keypad"
    return "agent"


def route_after_agent(reply: AnyMessage) -> Literal["tools", "__end__"]:
    """Where the agent's reply goes. The agent node routes itself with it (a ``Command``):
    a conditional edge would rebuild the whole state, history and all, just to read it."""
    return "tools" if isinstance(reply, AIMessage) and reply.tool_calls else "__end__"


async def route_after_signal(state: CallState) -> Literal["agent", "__end__"]:
    return "agent" if unanswered(state.get("messages", [])[:-1]) else "__end__"


async def route_after_keypad(state: CallState) -> Literal["agent", "tools", "__end__"]:
    messages = state.get("messages", [])
    if messages and isinstance(messages[-1], AIMessage) and messages[-1].tool_calls:
        return "tools"  # the opt-out digit: the keypad node asked for opt_out
    return "__end__" if state.get("pending_transfer") else "agent"


def opted_out(state: CallState) -> bool:
    """True when this run's tools took the number off the call list (the call ends)."""
    end = state.get("pending_end")
    return end is not None and end.get("reason") == OPTED_OUT


def caller_intent(messages: Sequence[AnyMessage], flow: str, *, lookback: int = 3) -> str | None:
    """The intent of the newest caller turn that shows one (keywords, no model call);
    "yes", "no" and unlabelled turns keep the label before them. Looking back a few turns
    recovers the label of a turn whose run was interrupted before it was saved."""
    seen = 0
    for m in reversed(messages):
        if isinstance(m, HumanMessage):
            label = classify(normalise(str(m.content)), flow)
            if label not in (None, "yes", "no"):
                return label
            seen += 1
            if seen >= lookback:
                break
    return None


def unanswered(messages: Sequence[AnyMessage]) -> bool:
    """True when the history ends with the caller (or a tool) still waiting for the agent."""
    for m in reversed(messages):
        if isinstance(m, AIMessage) and m.response_metadata.get(DIALOG_ACT) == "reconnected":
            continue
        if isinstance(m, AIMessage) and _lost_reply(m):
            continue
        return isinstance(m, (HumanMessage, ToolMessage))
    return False


def _lost_reply(m: AIMessage) -> bool:
    """Cut off before the caller heard a word, and its words are lost: it answered nothing."""
    kw = m.additional_kwargs
    return bool(kw.get(INTERRUPTED)) and not str(m.content).strip() and not kw.get(UNSAID)


# --- nodes -----------------------------------------------------------------------------------
def _ai(text: str, act: str | None = None, **meta: Any) -> AIMessage:
    metadata = {DIALOG_ACT: act, **meta} if act else {}
    return AIMessage(content=text, id=f"fixed-{uuid.uuid4().hex}", response_metadata=metadata)


def build_flow_graph(
    spec: FlowSpec,
    *,
    model: BaseChatModel,
    tools: Mapping[str, BaseTool] | Sequence[BaseTool],
    checkpointer: BaseCheckpointSaver[Any] | None,
    clock: Callable[[], dt.datetime] | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile ``spec`` into the shared graph shape (see the module docstring)."""
    flow_tools = select_tools(tools, spec.tool_names)
    bound = model.bind_tools(flow_tools) if flow_tools else model
    now = clock or utc_clock
    opt_out_ready = any(t.name == "opt_out" for t in flow_tools)

    async def greeting(state: CallState, runtime: Runtime[CallContext]) -> dict[str, Any]:
        flow = runtime.context.flow_settings
        callback = state.get("callback")
        update: dict[str, Any] = {"signal": None, "caller_turns": 0, "agent_turns": 0}
        ctx = runtime.context
        if ctx.direction == "outbound":  # we called them: say who we are and why, by name
            facts = CallFacts.of(flow, now=now(), direction=ctx.direction, contact=ctx.contact)
            text = with_consent(flow, outbound_greeting(spec, flow, facts))
            if facts.contact_name:
                update["caller_name"] = facts.contact_name
            return {**update, "messages": [_ai(text, "greeting", outbound=True, **{OFFER: spec.outbound_offer})]}
        if callback:
            if callback.get("appointment") and "list_my_appointments" not in spec.tool_names:
                callback = {**callback, "appointment": None}  # nothing this flow could do with it
            offer = {OFFER: "appointment"} if callback.get("appointment") else {}
            language = reply_language(flow.language, None)
            line = with_consent(flow, welcome_back(callback, language))
            update["messages"] = [_ai(line, "greeting", callback=True, **offer)]
            if callback.get("name"):
                update["caller_name"] = callback["name"]
            return update
        template = flow.greeting or (
            spec.greeting_hi if spec.greeting_hi and hinglish(reply_language(flow.language, None)) else spec.greeting
        )
        text = with_consent(flow, template.replace("{company}", flow.company))
        return {**update, "messages": [_ai(text, "greeting")]}

    async def signal(state: CallState, runtime: Runtime[CallContext]) -> dict[str, Any]:
        sig = state.get("signal") or {"kind": "reconnected", "detail": ""}
        flow = runtime.context.flow_settings
        messages = state.get("messages", [])
        hi = hinglish(said_language(flow, messages))
        if sig["kind"] == "transfer_failed":
            last_transfer = state.get("last_transfer")
            target = last_transfer["target"] if last_transfer else None
            nobody = (NOBODY_FREE_HI if hi else NOBODY_FREE).format(desc=target_desc(flow, target))
            line = _ai(nobody, "offer_message_or_callback", for_whom=target)
            return {"messages": [line], "signal": None, "pending_transfer": None}
        reconnected = RECONNECTED_HI if hi else RECONNECTED
        text = reconnected
        previous = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
        waiting = unanswered(messages)
        unsaid = previous.additional_kwargs.get(UNSAID) if previous is not None else None
        if not waiting and unsaid and previous is not None and previous.additional_kwargs.get(INTERRUPTED):
            text = f"{reconnected} {unsaid}"  # the drop cut the reply: say the rest again
        elif not waiting and previous is not None and str(previous.content).rstrip().endswith("?"):
            text = f"{reconnected} {previous.content}"
        return {"messages": [_ai(text, "reconnected")], "signal": None}

    async def keypad(state: CallState, runtime: Runtime[CallContext]) -> dict[str, Any]:
        digits = state.get("keypad") or ""
        flow = runtime.context.flow_settings
        if flow.opt_out_digit and flow.opt_out_digit in digits and opt_out_ready:
            # the same tool as a spoken opt-out does the write; the tools node runs it next
            request = AIMessage(
                content="",
                id=f"fixed-{uuid.uuid4().hex}",
                tool_calls=[
                    {"name": "opt_out", "args": {"reason": KEYPAD_REASON}, "id": f"call_{uuid.uuid4().hex[:24]}"}
                ],
                response_metadata={DIALOG_ACT: "keypad_opt_out"},
            )
            return {"messages": [request], "keypad": None}
        target = next((flow.dtmf_transfer[d] for d in digits if d in flow.dtmf_transfer), None)
        if target is None:
            return {"keypad": None}
        who = state.get("caller_name") or "The caller"
        topic = f" about {state['intent']}" if state.get("intent") else ""
        transfer: TransferState = {
            "target": target,
            "reason": "caller pressed a key for a person",
            "summary": f"{who} is calling{topic} and pressed {digits[-1]} to reach you.",
        }
        said = KEYPAD_TRANSFER_HI if hinglish(said_language(flow, state.get("messages", []))) else KEYPAD_TRANSFER
        line = _ai(said.format(desc=target_desc(flow, target)), "keypad_transfer")
        return {"messages": [line], "keypad": None, "pending_transfer": transfer, "last_transfer": transfer}

    async def agent(state: CallState, runtime: Runtime[CallContext]) -> Command[Literal["tools", "__end__"]]:
        flow = runtime.context.flow_settings
        messages = state.get("messages", [])
        update: dict[str, Any] = {"agent_turns": state.get("agent_turns", 0) + 1}
        if messages and isinstance(messages[-1], ToolMessage) and opted_out(state):
            # the number is off the list and the call ends: fixed words, no model call
            confirm = OPT_OUT_CONFIRM_HI if hinglish(said_language(flow, messages)) else OPT_OUT_CONFIRM
            update["messages"] = [_ai(confirm, "opted_out")]
            return Command(update=update, goto="__end__")
        if messages and isinstance(messages[-1], HumanMessage):  # a new caller turn (not a tool round)
            update["caller_turns"] = state.get("caller_turns", 0) + 1
            if label := caller_intent(messages, spec.name):
                update["intent"] = label
        ctx = runtime.context
        facts = CallFacts.of(
            flow, now=now(), caller_name=state.get("caller_name"), direction=ctx.direction, contact=ctx.contact
        )
        role = (flow.prompt or spec.prompt).replace("{company}", flow.company)
        prompt = f"{role}\n\n{VOICE_RULES}\n\n{facts.prompt()}"  # facts end with the language rules (non-en flows)
        reply = await bound.ainvoke([SystemMessage(prompt), *messages], facts_config(facts))
        update["messages"] = [reply]
        return Command(update=update, goto=route_after_agent(reply))

    graph = StateGraph(CallState, context_schema=CallContext)
    graph.add_node("greeting", greeting)
    graph.add_node("signal", signal)
    graph.add_node("keypad", keypad)
    graph.add_node("agent", agent, destinations=("tools", END))
    graph.add_node("tools", ToolNode(flow_tools, handle_tool_errors=True))
    graph.add_conditional_edges(START, untraced(route_entry))
    graph.add_edge("greeting", END)
    graph.add_conditional_edges("signal", untraced(route_after_signal))
    graph.add_conditional_edges("keypad", untraced(route_after_keypad))
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer, name=spec.name)


def flow_builder(spec: FlowSpec) -> GraphFactory:
    """The ``build_<name>_graph(*, model, tools, checkpointer, clock=None)`` of ``spec``:
    what its flow module exports."""

    def build(
        *,
        model: BaseChatModel,
        tools: Mapping[str, BaseTool] | Sequence[BaseTool],
        checkpointer: BaseCheckpointSaver[Any] | None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> CompiledStateGraph[Any, Any, Any, Any]:
        return build_flow_graph(spec, model=model, tools=tools, checkpointer=checkpointer, clock=clock)

    build.__name__ = build.__qualname__ = f"build_{spec.name}_graph"
    build.__doc__ = f"The {spec.name} flow's compiled graph (``context_schema=CallContext``)."
    return build


def untraced(router: Callable[..., Any]) -> RunnableCallable:
    """A router LangGraph runs without callbacks. A plain function is wrapped traced: its own
    task, ``on_chain_start``, and a shielded ``on_chain_end`` (a task and a shield), 5 trips
    round the event loop before the turn goes on; under load each waits behind every call's
    audio (``route_entry`` starts every turn). Nodes are untraced already; the routing shows in
    the graph's own stream and checkpoints. ``RunnableCallable`` is LangGraph's private
    wrapper (the version is pinned below its next minor release in pyproject.toml)."""
    return RunnableCallable(None, router, name=router.__name__, trace=False)
