"""The offline model reads a turn on the loop (a monologue off it); its date parsing is warm before the first call;
its notion of "now" without a stated local time is the flow's zone; no caller words in errors."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage

from dialgraph.graphs.facts import CallFacts, facts_config
from dialgraph.graphs.offline_model import INLINE_MAX_CHARS, OfflineChatModel
from dialgraph.graphs.runner import GraphRunner
from dialgraph.server.core.settings import Settings
from tests.fakes.graph_calls import Call

ROOT = Path(__file__).resolve().parents[2]
FACTS = CallFacts(
    company="Acme Dental",
    timezone="America/New_York",
    now=dt.datetime(2026, 11, 20, 10, 0),
    targets={"front_desk": "front desk"},
)
SYSTEM = SystemMessage(FACTS.prompt())


async def test_a_turn_is_read_on_the_loop_and_a_monologue_off_it_and_both_stream() -> None:
    """A reply costs well under a millisecond, less than a thread trip under load: computed
    on the loop. A caller turn past ``INLINE_MAX_CHARS`` goes to a worker thread."""
    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []

    def clock() -> dt.datetime:  # called inside the reply computation
        seen.append(threading.current_thread())
        return dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)

    model = OfflineChatModel(clock=clock)
    short = "Can I come in in two weeks at ten?"
    monologue = "So, " + "um, let me think about what works for me, " * 12 + short
    assert len(short) <= INLINE_MAX_CHARS < len(monologue)
    for said, on_loop in ((short, True), (monologue, False)):
        seen.clear()
        history = [SYSTEM, HumanMessage(said)]
        chunks = [c async for c in model.astream(history, facts_config(FACTS))]
        assert all(isinstance(c, AIMessageChunk) for c in chunks)
        assert sum(1 for c in chunks if c.content) > 3  # token by token, not one block
        reply = await model.ainvoke(history, facts_config(FACTS))
        assert reply.content == "".join(str(c.content) for c in chunks)  # deterministic
        assert len(seen) == 2 and all((t is loop_thread) is on_loop for t in seen)


def test_build_runners_warms_dateparser(tmp_path: Path) -> None:
    """In a fresh process: dateparser's English data is not loaded by importing our modules,
    and is loaded once ``build_runners`` returns (so no caller's turn pays for it)."""
    script = textwrap.dedent(
        f"""
        import asyncio, contextlib
        from pathlib import Path
        from dateparser.languages.loader import LocaleDataLoader
        from dialgraph.graphs.runtime import build_runners
        from dialgraph.server.core.db import Database
        from tests.fakes.graph_calls import fixed_clock, graph_settings

        async def main():
            url = "sqlite+aiosqlite:///{tmp_path}/app.db"
            settings = graph_settings(Path({str(tmp_path)!r}), url)
            db = Database(url)
            before = "en" in LocaleDataLoader._loaded_languages
            async with contextlib.AsyncExitStack() as stack:
                await build_runners(settings, db, stack, clock=fixed_clock)
            after = "en" in LocaleDataLoader._loaded_languages
            await db.aclose()
            print(before, after)

        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["False", "True"]


def test_now_without_a_stated_local_time_is_aware_in_the_flows_zone() -> None:
    before = dt.datetime.now(dt.UTC)
    now = CallFacts(company="Acme", timezone="Pacific/Kiritimati").local_now()
    after = dt.datetime.now(dt.UTC)
    assert now.utcoffset() == dt.timedelta(hours=14)
    assert before <= now <= after
    assert CallFacts(company="Acme").local_now().utcoffset() == dt.timedelta(0)  # no zone named: UTC


@dataclass(frozen=True)
class Unknown:
    text: str


async def test_an_unknown_turn_type_error_carries_no_caller_words(
    runners: dict[str, GraphRunner], flow_settings: Settings
) -> None:
    call = Call.open(runners["scheduling"], flow_settings, "scheduling", thread_id="t-pii")
    with pytest.raises(TypeError) as err:
        call.runner.respond(call.ctx, Unknown("my card number is 4111 1111"))  # type: ignore[arg-type]
    assert "4111" not in str(err.value) and "Unknown" in str(err.value)
