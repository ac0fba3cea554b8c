"""The held-in set: Hinglish and Indian-English phrasings per shipped flow, through the real
flow graphs with the offline model on SQLite, each outcome read from real state.

``tests/graphs/hinglish/<flow>.yaml`` holds the cases: a list of caller turns (a single turn
or a short dialogue) and what must come of them:

- ``appointments``: the caller's booked appointments afterwards (local ISO starts, read
  through the calendar tools' own store, ``tools.calendar.Calendar``); ``setup`` books one
  before the call (for moves and cancellations);
- ``name``: the name on the booked appointment;
- ``transfer``: the transfer target the runner handed to the call session;
- ``message``: words the message written to the ``messages`` table contains;
- ``lead``: sales qualification fields saved for the caller (``tools.contacts``): a
  substring each, ``decision_maker`` exactly ``yes``/``no``;
- ``says``: words some agent reply contains (a knowledge answer);
- ``reply``: the language of the last agent reply (``server.core.language.detect``).

Flows run in ``hi-en`` unless a case says ``language: en-IN``. The test prints each
flow's accuracy and the failed cases by id, and asserts at least 90 % per flow.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import delete, select

from dialgraph.graphs import offline_policy
from dialgraph.graphs.chat import run_chat
from dialgraph.graphs.facts import CallFacts
from dialgraph.graphs.runtime import build_runners
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings, TransferTarget
from dialgraph.server.core.language import detect
from dialgraph.server.core.models import Appointment, Contact, Message
from dialgraph.server.core.settings import Settings
from dialgraph.tools.calendar import Calendar
from dialgraph.tools.contacts import caller_profile
from tests.fakes.graph_calls import Call

CASES = Path(__file__).with_name("hinglish")
FLOWS = ("scheduling", "support", "sales")
KOLKATA = ZoneInfo("Asia/Kolkata")
# Monday 7 December 2026, 10:00 in Kolkata: "kal" is Tuesday the 8th, "parson" Wednesday the 9th.
NOW = dt.datetime(2026, 12, 7, 4, 30, tzinfo=dt.UTC)
HOURS = {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat")}
TARGETS = {
    "scheduling": {"front_desk": TransferTarget(number="+911140000001", description="front desk")},
    "support": {
        "billing": TransferTarget(number="+911140000002", description="billing team"),
        "support": TransferTarget(number="+911140000003", description="technical support"),
    },
    "sales": {"sales": TransferTarget(number="+911140000004", description="sales team")},
}
COMPANY = {"scheduling": "Sharma Dental Clinic", "support": "Sharma Dental Clinic", "sales": "Acme Software"}
PASS_RATE = 0.9


def clock() -> dt.datetime:
    return NOW


def eval_settings(tmp_path: Path, url: str) -> Settings:
    """Each flow twice: in Hinglish (``<flow>``) and in Indian English (``<flow>_en_in``)."""
    flows: dict[str, FlowSettings] = {}
    for name in FLOWS:
        for key, language in ((name, "hi-en"), (f"{name}_en_in", "en-IN")):
            flows[key] = FlowSettings(
                graph=name,
                language=language,
                company=COMPANY[name],
                timezone="Asia/Kolkata",
                business_hours=HOURS,
                slot_minutes=15,
                transfer_targets=TARGETS[name],
            )
    return Settings(data_dir=tmp_path, database_url=url, flows=flows, _env_file=None)  # type: ignore[call-arg]


@dataclass
class Case:
    id: str
    turns: list[str]
    expect: dict[str, Any]
    language: str = "hi-en"
    setup: dict[str, Any] = field(default_factory=dict)


def load(flow: str) -> list[Case]:
    raw = yaml.safe_load((CASES / f"{flow}.yaml").read_text(encoding="utf-8"))
    cases = [
        Case(
            id=str(c["id"]),
            turns=[c["turns"]] if isinstance(c["turns"], str) else list(c["turns"]),
            expect=dict(c["expect"]),
            language=str(c.get("language", "hi-en")),
            setup=dict(c.get("setup") or {}),
        )
        for c in raw
    ]
    assert len({c.id for c in cases}) == len(cases), "case ids repeat"
    return cases


@pytest.mark.parametrize("flow", FLOWS)
def test_the_held_in_set_is_big_enough_and_mixed(flow: str) -> None:
    cases = load(flow)
    assert len(cases) >= 40
    assert any(len(c.turns) == 1 for c in cases) and any(len(c.turns) > 1 for c in cases)
    assert any(c.language == "en-IN" for c in cases) and any(c.language == "hi-en" for c in cases)
    assert all(c.expect for c in cases)


async def _reset(db: Database) -> None:
    async with db.sessionmaker() as s, s.begin():
        for table in (Appointment, Message, Contact):
            await s.execute(delete(table))


def _local(at: dt.datetime) -> str:
    return at.astimezone(KOLKATA).strftime("%Y-%m-%dT%H:%M")


async def run_case(
    case: Case, flow: str, runners: dict[str, Any], settings: Settings, db: Database, index: int
) -> list[str]:
    """Play one case; the list of what went wrong (empty: right)."""
    await _reset(db)
    key = flow if case.language == "hi-en" else f"{flow}_en_in"
    caller = f"+9198{index:08d}"
    cal = Calendar(db, settings.flows[key], clock=clock)
    if at := case.setup.get("appointment"):
        start = dt.datetime.fromisoformat(str(at)).replace(tzinfo=KOLKATA)
        outcome = await cal.book(caller, start, name=case.setup.get("name"))
        assert outcome.status == "booked", f"{case.id}: setup could not book {at}"
    call = Call.open(runners[key], settings, key, thread_id=f"{flow}-{case.id}", caller=caller)
    await call.start()
    transfers: list[str] = []
    last = ""
    for turn in case.turns:
        reply = await call.say(turn)
        last = reply.text
        if reply.transfer is not None:
            transfers.append(reply.transfer.target)
        if reply.transfer is not None or reply.end is not None:
            break
    wrong: list[str] = []
    want = case.expect
    if "appointments" in want:
        booked = await cal.upcoming(caller)
        got = [_local(a.starts_at) for a in booked]
        if got != [str(x) for x in want["appointments"]]:
            wrong.append(f"appointments {got} != {want['appointments']}")
        if "name" in want and (not booked or booked[0].name != want["name"]):
            wrong.append(f"name {[a.name for a in booked]} != {want['name']!r}")
    if "transfer" in want and want["transfer"] not in transfers:
        wrong.append(f"transfer {transfers} != {want['transfer']!r}")
    if "transfer" not in want and transfers:
        wrong.append(f"unexpected transfer {transfers}")
    if "message" in want:
        async with db.sessionmaker() as s:
            bodies = list(await s.scalars(select(Message.body).where(Message.from_number == caller)))
        if not any(str(want["message"]).lower() in b.lower() for b in bodies):
            wrong.append(f"message {bodies} lacks {want['message']!r}")
    if "lead" in want:
        lead = (await caller_profile(db, caller)).lead
        for k, v in want["lead"].items():
            saved = lead.get(k, "")
            ok = saved == v if k == "decision_maker" else str(v).lower() in saved.lower()
            if not ok:
                wrong.append(f"lead[{k}] {saved!r} != {v!r}")
    if "says" in want:
        said = " ".join(text for role, text in call.transcript if role == "agent")
        if str(want["says"]).lower() not in said.lower():
            wrong.append(f"no reply says {want['says']!r}")
    if "reply" in want and detect(last) != want["reply"]:
        wrong.append(f"last reply in {detect(last)}, not {want['reply']}: {last!r}")
    if wrong:
        transcript = " | ".join(f"{role}: {text}" for role, text in call.transcript)
        wrong.append(f"transcript: {transcript}")
    return wrong


@pytest.mark.parametrize("flow", FLOWS)
async def test_hinglish_held_in_set(flow: str, tmp_path: Path, sqlite_url: str) -> None:
    settings = eval_settings(tmp_path, sqlite_url)
    db = Database(sqlite_url)
    await db.upgrade()
    cases = load(flow)
    failures: dict[str, list[str]] = {}
    try:
        async with AsyncExitStack() as stack:
            runners = await build_runners(settings, db, stack, clock=clock)
            for i, case in enumerate(cases):
                if wrong := await run_case(case, flow, runners, settings, db, i):
                    failures[case.id] = wrong
    finally:
        await db.aclose()
    right = len(cases) - len(failures)
    rate = right / len(cases)
    print(f"\n{flow}: {right}/{len(cases)} right ({rate:.0%})")
    for case_id, wrong in failures.items():
        print(f"  FAIL {case_id}: " + "; ".join(wrong))
    assert rate >= PASS_RATE, f"{flow}: {rate:.0%} right; failed: {', '.join(failures)}"


# --- the pieces the set relies on --------------------------------------------------------------
def test_every_fixed_sentence_of_the_offline_model_has_a_hinglish_version() -> None:
    fixed = [v for k, v in vars(offline_policy).items() if k.isupper() and isinstance(v, str) and " " in v]
    fixed += list(offline_policy.HELP.values())
    fixed = [s.format(company="Sharma Dental Clinic") for s in fixed]
    assert len(fixed) > 25
    for sentence in fixed:
        said = offline_policy.in_language(sentence, "hi-en")
        assert said != sentence and detect(said) == "hi-en", (sentence, said)
        assert offline_policy.in_language(sentence, "en") == sentence


def test_the_hosted_model_is_told_the_language_only_on_indian_flows() -> None:
    now = dt.datetime(2026, 12, 7, 4, 30, tzinfo=dt.UTC)
    english = CallFacts.of(FlowSettings(), now=now)
    assert english.language == "en" and "Language:" not in english.prompt()
    hinglish = CallFacts.of(FlowSettings(language="hi-en", timezone="Asia/Kolkata"), now=now)
    assert hinglish.language == "hi-en"
    prompt = hinglish.prompt()
    assert "caller's own mix of Hindi and English" in prompt and "Roman script" in prompt and "short" in prompt
    indian = CallFacts.of(FlowSettings(language="en-IN"), now=now).prompt()
    assert "Language:" in indian and "Indian English" in indian
    devanagari = FlowSettings(language="hi", script="devanagari")  # h3's setting
    assert "Devanagari script" in CallFacts.of(devanagari, now=now).prompt()


async def test_chat_books_in_hinglish(tmp_path: Path, sqlite_url: str) -> None:
    settings = eval_settings(tmp_path, sqlite_url)

    async def lines() -> AsyncIterator[str]:
        for line in ("Namaste", "kal subah 11 baje appointment chahiye", "mera naam Rahul Sharma hai", "nahi, bas"):
            yield line

    out = io.StringIO()
    assert await run_chat(settings, flow="scheduling", caller="+919876543210", lines=lines(), out=out, clock=clock) == 0
    replies = [line for line in out.getvalue().splitlines() if line.startswith("agent: ")]
    assert replies[0].startswith("agent: Namaste, Sharma Dental Clinic")
    assert "Tuesday, 8 December ko subah 11 baje" in replies[3] and "Rahul Sharma" in replies[3]
    assert all(detect(r) == "hi-en" for r in replies)
    db = Database(sqlite_url)
    try:
        [appt] = await Calendar(db, settings.flows["scheduling"], clock=clock).upcoming("+919876543210")
    finally:
        await db.aclose()
    assert _local(appt.starts_at) == "2026-12-08T11:00"
