"""Knowledge answers ranked by BM25, "don't know" below the threshold."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
import structlog

from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.tools.knowledge import DEFAULT_KNOWLEDGE_FILE as SAMPLE
from dialgraph.tools.knowledge import DONT_KNOW, KnowledgeBase, KnowledgeLibrary, knowledge_tools, load_entries
from tests.fakes.tool_graph import ToolGraph, call_context


@pytest.fixture
def graph() -> ToolGraph:
    return ToolGraph(knowledge_tools())


@pytest.mark.parametrize(
    ("question", "answer_starts"),
    [
        ("What time do you open?", "We're open Monday to Friday"),
        ("are you open on saturday", "We're open Monday to Friday"),
        ("Where can I park my car?", "Yes, there's free parking"),
        ("do you take Delta Dental insurance", "We accept most major dental insurance"),
        ("can I pay in installments", "Yes. For treatments over 500 dollars"),
        ("I think I was overcharged on my bill", "Our billing team"),
        ("I forgot my portal password", "On the portal's sign-in page"),
        ("do you see kids", "Yes, we see children"),
    ],
)
async def test_sample_file_answers(graph: ToolGraph, question: str, answer_starts: str) -> None:
    assert (await graph.text(call_context("+15550100101"), "search_knowledge", question=question)).startswith(
        answer_starts
    )


@pytest.mark.parametrize(
    "question",
    [
        "What's the capital of France?",
        "can you sing me a song",
        "who is the president",
        "do you have wifi",
        "",
        "the and of",
    ],
)
async def test_unrelated_questions_get_dont_know(graph: ToolGraph, question: str) -> None:
    assert await graph.text(call_context("+15550100101"), "search_knowledge", question=question) == DONT_KNOW


async def test_flow_knowledge_file_json_is_used_and_reloaded(graph: ToolGraph, tmp_path: Path) -> None:
    path = tmp_path / "kb.json"
    path.write_text(json.dumps([{"question": "Do you ship abroad?", "answer": "We ship to 30 countries."}]))
    ctx = call_context("+15550100101", FlowSettings(knowledge_file=path))
    assert await graph.text(ctx, "search_knowledge", question="can you ship to Canada") == "We ship to 30 countries."
    assert await graph.text(ctx, "search_knowledge", question="what are your opening hours") == DONT_KNOW
    path.write_text(json.dumps({"entries": [{"question": "What are your opening hours?", "answer": "Always open."}]}))
    os.utime(path, (1, 1))  # a different mtime even on coarse filesystem clocks
    await asyncio.sleep(1.05)  # the library looks at the file at most once a second
    assert await graph.text(ctx, "search_knowledge", question="what are your opening hours") == "Always open."


async def test_missing_file_is_said_and_logged(graph: ToolGraph, tmp_path: Path) -> None:
    ctx = call_context("+15550100101", FlowSettings(knowledge_file=tmp_path / "nope.yaml"))
    with structlog.testing.capture_logs() as logs:
        text = await graph.text(ctx, "search_knowledge", question="hours?")
    assert text == "I can't look that up right now. Offer to take a message."
    assert [e["event"] for e in logs] == ["tool_failed"] and logs[0]["call_sid"] == ctx.call_sid


def test_bad_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- question: only a question\n")
    with pytest.raises(ValueError, match="entry 0"):
        load_entries(bad)
    with pytest.raises(ValueError):
        KnowledgeBase([])


async def test_library_caches_per_file() -> None:
    lib = KnowledgeLibrary()
    assert await lib.get(None) is await lib.get(SAMPLE)


async def test_library_reloads_an_edited_file_after_recheck_s(tmp_path: Path) -> None:
    path = tmp_path / "kb.yaml"
    path.write_text("- question: when do you open\n  answer: at nine\n")
    lib = KnowledgeLibrary(recheck_s=0.05)
    first = await lib.get(path)
    assert first.search("when do you open") is not None
    path.write_text("- question: is there parking\n  answer: free parking behind the shop\n")
    os.utime(path, (time.time() + 5, time.time() + 5))  # a new mtime even on a coarse clock
    assert await lib.get(path) is first  # within recheck_s: no look at the file
    await asyncio.sleep(0.06)
    second = await lib.get(path)
    assert second is not first
    match = second.search("is there parking")
    assert match is not None and match.entry.answer == "free parking behind the shop"
