"""Caller scripts for the phone simulator: a YAML file in, typed steps and expectations out.

A scenario names the number dialled (which picks the flow on the server), the caller's
number, the steps the caller takes and what must hold at the end::

    name: scheduling_demo
    to: "+15550001001"
    from: "+15551230001"
    steps:
      - wait_for_agent: true            # the greeting
      - say: "I'd like to book a cleaning next Tuesday at 2:30 pm."
      - wait_for_agent: true
      - barge_in: {text: "Actually, make it three.", after_ms: 800}
      - dtmf: "0"
      - transfer: {answer: false, status: no-answer, ring_s: 2}   # arms the next <Dial>
      - wait: 1.5
      - hangup
    expect:
      appointment: {local: "tuesday 15:00", timezone: America/New_York}
      transfer_to: front_desk
      message_left: true
      ended_by_agent: true
      agent_said: ["(?i)booked"]

An outbound scenario plays the other end: the server places the call (``POST /api/calls``)
and the simulator's ``TwilioApi`` answers it as the ``outbound.callee``; ``to`` is the callee's
number and the steps are what the callee says::

    name: outbound_sales_human
    flow: sales
    to: "+15557770001"
    outbound:
      callee: {kind: human, ring_s: 1.0}       # or just: human | voicemail | busy | no-answer | failed | fax
      context: {name: Jane, purpose: "your demo request"}
    steps:
      - wait_for_agent: true
      - say: "Yes, I have a minute."

Shipped scenarios live in ``telephony/scenarios/`` (package data); ``load_scenario`` takes
a path or the name of a shipped one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml


class ScenarioError(ValueError):
    """The scenario file is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Say:
    """Speak a line (offline TTS), or play a WAV file when ``wav`` is set."""

    text: str
    wav: Path | None = None


@dataclass(frozen=True, slots=True)
class WaitForAgent:
    """Wait until the agent has spoken and then gone quiet (its turn is over)."""

    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


@dataclass(frozen=True, slots=True)
class BargeIn:
    """Start speaking once the agent has been heard for ``after_ms``."""

    text: str
    after_ms: int = 800
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Dtmf:
    digits: str


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Transfer:
    """How the human behaves on the next ``<Dial>``: answers, or not (and why)."""

    answer: bool = False
    status: Literal["completed", "no-answer", "busy", "failed"] = "no-answer"
    ring_s: float = 2.0
    talk_s: float = 3.0


Step = Say | WaitForAgent | Wait | BargeIn | Dtmf | Hangup | Transfer

CalleeKind = Literal["human", "voicemail", "busy", "no-answer", "failed", "fax"]
CALLEE_KINDS: tuple[CalleeKind, ...] = ("human", "voicemail", "busy", "no-answer", "failed", "fax")


@dataclass(frozen=True, slots=True)
class Callee:
    """Who (or what) answers an outbound call placed through the simulator's ``TwilioApi``.

    - ``human`` answers after ``ring_s`` and plays ``steps`` (scenario steps) over the media
      stream; when they are done it waits ``linger_s`` for the agent to end the call, then hangs up.
    - ``voicemail`` answers after ``ring_s``, plays ``steps`` as its greeting if any, "beeps" at
      ``beep_after_s`` after the answer, records whatever the call plays, and hangs up after
      ``hangup_after_s`` (default 60 s: the longest message it takes).
    - ``fax`` answers and hangs up after ``hangup_after_s`` (default 10 s) unless hung up first.
    - ``busy``, ``no-answer`` and ``failed`` never answer (no-answer after min(ring timeout, ring_s)).

    AMD's verdict is ``answered_by`` when given, else human / fax / machine_end_beep (DetectMessageEnd)
    or machine_start (Enable), ``amd_after_s`` after the answer (default 1 s; a voicemail under
    DetectMessageEnd: at the beep). ``hangup_after_s`` caps any answered call's length.
    """

    kind: CalleeKind = "human"
    ring_s: float = 1.0
    steps: tuple[Step, ...] = ()
    hangup_after_s: float | None = None
    amd_after_s: float | None = None
    beep_after_s: float = 3.0
    answered_by: str | None = None
    linger_s: float = 8.0
    quiet_ms: int = 900

    @property
    def answers(self) -> bool:
        return self.kind in ("human", "voicemail", "fax")


@dataclass(frozen=True, slots=True)
class Outbound:
    """The outbound side of a scenario: the callee, and what the server is asked to place."""

    callee: Callee
    context: dict[str, Any] = field(default_factory=dict)
    from_number: str | None = None  # the caller ID to ask for ("from"); None: the flow's or the default


@dataclass(frozen=True, slots=True)
class AppointmentExpectation:
    """``local`` is an ISO datetime ("2026-12-01T14:30"), or "[weekday] HH:MM" / "2:30 pm"."""

    local: str
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Expectations:
    appointment: AppointmentExpectation | None = None
    appointments: int | None = None
    transfer_to: str | None = None
    transfer_status: str | None = None
    ended_by_agent: bool | None = None
    message_left: bool | None = None
    agent_said: tuple[str, ...] = ()
    barge_in_cleared: bool | None = None
    max_protocol_violations: int = 0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    to_number: str = "+15550001001"
    from_number: str = "+15551230001"
    flow: str | None = None
    description: str = ""
    quiet_ms: int = 900
    expect: Expectations = field(default_factory=Expectations)
    source: Path | None = None
    outbound: Outbound | None = None

    def lines(self) -> list[str]:
        """Every line the caller speaks (to pre-render audio)."""
        return [s.text for s in self.steps if isinstance(s, Say | BargeIn) and s.text and not getattr(s, "wav", None)]


def _step(raw: Any, base: Path | None) -> Step:
    if raw == "hangup":
        return Hangup()
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ScenarioError(f"a step is a mapping with one key, got {raw!r}")
    ((key, value),) = raw.items()
    if key == "say":
        return Say(text=str(value))
    if key == "wav":
        path = Path(str(value))
        if base is not None and not path.is_absolute():
            path = base / path
        return Say(text="", wav=path)
    if key == "wait_for_agent":
        return WaitForAgent(timeout_s=float(value) if not isinstance(value, bool) else 30.0)
    if key == "wait":
        return Wait(seconds=float(value))
    if key == "barge_in":
        if isinstance(value, str):
            return BargeIn(text=value)
        return BargeIn(text=str(value["text"]), after_ms=int(value.get("after_ms", 800)))
    if key == "dtmf":
        digits = str(value)
        if not re.fullmatch(r"[0-9*#]+", digits):
            raise ScenarioError(f"dtmf digits must be 0-9, * or #: {digits!r}")
        return Dtmf(digits=digits)
    if key == "hangup":
        return Hangup()
    if key == "transfer":
        value = value or {}
        answer = bool(value.get("answer", False))
        status = str(value.get("status", "completed" if answer else "no-answer"))
        if status not in ("completed", "no-answer", "busy", "failed"):
            raise ScenarioError(f"transfer status {status!r} is not completed|no-answer|busy|failed")
        return Transfer(
            answer=answer,
            status=status,  # type: ignore[arg-type]
            ring_s=float(value.get("ring_s", 2.0)),
            talk_s=float(value.get("talk_s", 3.0)),
        )
    raise ScenarioError(f"unknown step {key!r}")


def _expectations(raw: dict[str, Any] | None) -> Expectations:
    raw = dict(raw or {})
    appt = raw.pop("appointment", None)
    said = raw.pop("agent_said", ()) or ()
    known = {f for f in Expectations.__dataclass_fields__ if f not in ("appointment", "agent_said")}
    unknown = set(raw) - known
    if unknown:
        raise ScenarioError(f"unknown expectations: {', '.join(sorted(unknown))}")
    for pattern in said:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ScenarioError(f"agent_said: bad regex {pattern!r}: {exc}") from exc
    appointment = None
    if appt is not None:
        if isinstance(appt, str):
            appt = {"local": appt}
        appointment = AppointmentExpectation(local=str(appt["local"]), timezone=str(appt.get("timezone", "UTC")))
    return Expectations(appointment=appointment, agent_said=tuple(str(p) for p in said), **raw)


_CALLEE_FIELDS = ("ring_s", "hangup_after_s", "amd_after_s", "beep_after_s", "linger_s")


def parse_callee(raw: Any, steps: tuple[Step, ...] = (), *, quiet_ms: int = 900) -> Callee:
    """A ``Callee`` from ``human`` or ``{kind: voicemail, ring_s: 1, ...}``."""
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, dict):
        raise ScenarioError(f"callee is a kind or a mapping, got {raw!r}")
    raw = dict(raw)
    kind = str(raw.pop("kind", "human"))
    if kind not in CALLEE_KINDS:
        raise ScenarioError(f"callee kind {kind!r} is not one of {', '.join(CALLEE_KINDS)}")
    values: dict[str, Any] = {}
    for name in _CALLEE_FIELDS:
        if name in raw:
            values[name] = float(raw.pop(name))
    if "answered_by" in raw:
        values["answered_by"] = str(raw.pop("answered_by"))
    if raw:
        raise ScenarioError(f"unknown callee fields: {', '.join(sorted(raw))}")
    return Callee(kind=kind, steps=steps, quiet_ms=quiet_ms, **values)  # type: ignore[arg-type]


def _outbound(raw: Any, steps: tuple[Step, ...], quiet_ms: int) -> Outbound | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ScenarioError("outbound is a mapping (callee, context, from)")
    raw = dict(raw)
    callee = parse_callee(raw.pop("callee", "human"), steps, quiet_ms=quiet_ms)
    context = raw.pop("context", None) or {}
    if not isinstance(context, dict):
        raise ScenarioError("outbound.context is a mapping")
    from_number = raw.pop("from", None)
    if raw:
        raise ScenarioError(f"unknown outbound fields: {', '.join(sorted(raw))}")
    return Outbound(callee=callee, context=dict(context), from_number=str(from_number) if from_number else None)


def parse_scenario(data: dict[str, Any], *, name: str = "scenario", source: Path | None = None) -> Scenario:
    """Build a Scenario from the YAML mapping (see the module docstring)."""
    if not isinstance(data, dict):
        raise ScenarioError("a scenario is a YAML mapping")
    base = source.parent if source is not None else None
    steps = tuple(_step(s, base) for s in data.get("steps") or ())
    quiet_ms = int(data.get("quiet_ms", 900))
    outbound = _outbound(data.get("outbound"), steps, quiet_ms)
    if not steps and (outbound is None or outbound.callee.kind == "human"):
        raise ScenarioError("a scenario needs at least one step")
    return Scenario(
        name=str(data.get("name", name)),
        steps=steps,
        to_number=str(data.get("to", "+15550001001")),
        from_number=str(data.get("from", "+15551230001")),
        flow=data.get("flow"),
        description=str(data.get("description", "")),
        quiet_ms=quiet_ms,
        expect=_expectations(data.get("expect")),
        source=source,
        outbound=outbound,
    )


# The numbers the shipped scenarios dial, and the flow each picks: a server configured with
# them (``numbers = SCENARIO_NUMBERS``) answers every shipped scenario.
SCENARIO_NUMBERS = {"+15550001001": "scheduling", "+15550001002": "support", "+15550001003": "sales"}


def _scenario_dir() -> Any:
    return resources.files("dialgraph.telephony.simulator") / "scenarios"


def shipped_scenarios() -> list[str]:
    """Names of the scenarios that ship in the package."""
    root = _scenario_dir()
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A scenario from a YAML path, or a shipped one by name ("scheduling_demo")."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not path.exists():
        shipped = _scenario_dir() / f"{path.stem if path.suffix else path.name}.yaml"
        if not shipped.is_file():
            raise ScenarioError(f"no scenario {str(name_or_path)!r} (shipped: {', '.join(shipped_scenarios())})")
        text = shipped.read_text(encoding="utf-8")
        return parse_scenario(yaml.safe_load(text), name=path.stem, source=None)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    return parse_scenario(data, name=path.stem, source=path.resolve())
