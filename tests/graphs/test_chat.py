"""Text mode (``dialgraph chat``): one reply a line, resumable by thread id, pipeable stdin."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from dialgraph.graphs.chat import run_chat
from dialgraph.server.core.settings import Settings
from tests.fakes.graph_calls import graph_settings

ROOT = Path(__file__).resolve().parents[2]


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_chat_holds_and_resumes_a_conversation(tmp_path: Path, sqlite_url: str) -> None:
    settings: Settings = graph_settings(tmp_path, sqlite_url)
    out = io.StringIO()
    code = await run_chat(
        settings, flow="scheduling", caller="+15551234567", lines=lines("I'd like to book an appointment"), out=out
    )
    assert code == 0
    first = out.getvalue().splitlines()
    assert first[0].startswith("thread: ")
    thread = first[0].removeprefix("thread: ")
    assert [line.split(":")[0] for line in first[1:]] == ["agent", "agent"]
    assert "What day and time would suit you?" in first[2]

    out = io.StringIO()
    await run_chat(settings, flow="scheduling", caller="+15551234567", thread_id=thread, lines=lines("#0"), out=out)
    resumed = out.getvalue().splitlines()
    assert resumed[0] == f"thread: {thread}"
    assert resumed[1].startswith("agent: Sorry about that, we were cut off. What day and time would suit you?")
    assert resumed[2] == "agent: Connecting you to the front desk now. Please hold."
    assert resumed[3].startswith("[transfer to front_desk:")


def test_chat_cli_reads_piped_stdin(tmp_path: Path) -> None:
    env = {"DIALGRAPH_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "DIALGRAPH_LOG_LEVEL": "WARNING"}
    proc = subprocess.run(
        [sys.executable, "-m", "dialgraph.server.cli", "chat", "--flow", "support", "--from", "+15551234567"],
        input="Is there parking?\nthat's all, bye\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    agent = [line for line in proc.stdout.splitlines() if line.startswith("agent: ")]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(agent) == 3 and "free parking" in agent[1] and "Goodbye" in agent[2]
