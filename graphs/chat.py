"""Text mode: hold a conversation with a flow in the terminal (``dialgraph chat``).

Same runner, checkpointer and model as a phone call; the caller's lines come from stdin
(one turn a line, so it can be piped) and each agent reply is printed on one line
starting ``agent: ``. ``--thread ID`` resumes a thread where it stood. A line ``#0``..``#9``
(or ``#*``, ``##``) presses keypad keys; ``/heard TEXT`` pretends the caller barged in
after hearing TEXT of the last reply.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import TextIO

from dialgraph.graphs.runtime import build_runners
from dialgraph.server.core.context import CallContext
from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import (
    CallerDigits,
    CallerInput,
    CallerText,
    EndCallRequest,
    RunnerEvent,
    TextChunk,
    TransferRequest,
)


async def stdin_lines() -> AsyncIterator[str]:
    """Lines from stdin without blocking the loop (a prompt when it's a terminal)."""
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stdout.write("you: ")
            sys.stdout.flush()
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        yield line.rstrip("\n")


async def _say(events: AsyncIterator[RunnerEvent], out: TextIO) -> RunnerEvent | None:
    """Print one reply as a line; return the transfer/end request it carried, if any."""
    text: list[str] = []
    request: RunnerEvent | None = None
    async for event in events:
        if isinstance(event, TextChunk):
            text.append(event.text)
        elif isinstance(event, TransferRequest | EndCallRequest):  # not a TurnUsage
            request = event
    out.write(f"agent: {' '.join(''.join(text).split())}\n")
    if isinstance(request, TransferRequest):
        out.write(f"[transfer to {request.target}: {request.summary}]\n")
    elif isinstance(request, EndCallRequest):
        out.write(f"[call ended: {request.reason}]\n")
    out.flush()
    return request


async def run_chat(
    settings: Settings,
    *,
    flow: str,
    caller: str,
    thread_id: str | None = None,
    lines: AsyncIterator[str] | None = None,
    out: TextIO | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> int:
    """Converse with ``flow`` as ``caller`` until the input ends or the call ends.

    Prints ``thread: ID`` first; pass it back as ``thread_id`` to resume. Returns an exit code.
    ``clock`` (aware UTC now) is for tests and demos; the wall clock by default. A flow in
    ``hi-en`` (or ``hi``, ``en-IN``) converses in Hinglish the same way as on a call.
    """
    out = out or sys.stdout
    db = Database(settings.effective_database_url)
    try:
        if settings.effective_database_url.startswith("sqlite"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        await db.upgrade()
        async with AsyncExitStack() as stack:
            runner = (await build_runners(settings, db, stack, clock=clock))[flow]
            thread = thread_id or f"chat-{uuid.uuid4().hex[:12]}"
            ctx = CallContext(
                call_sid=f"CHAT{uuid.uuid4().hex[:30]}",
                thread_id=thread,
                caller=caller,
                called="",
                flow=flow,
                flow_settings=settings.flows[flow],
            )
            out.write(f"thread: {thread}\n")
            if await _say(runner.start(ctx), out) is not None:
                return 0
            async for line in lines if lines is not None else stdin_lines():
                if not line.strip():
                    continue
                if line.startswith("/heard "):
                    await runner.record_heard(ctx, line.removeprefix("/heard "))
                    continue
                turn: CallerInput = (
                    CallerDigits(line[1:]) if line.startswith("#") and len(line) > 1 else CallerText(line)
                )
                if await _say(runner.respond(ctx, turn), out) is not None:
                    return 0
            return 0
    finally:
        await db.aclose()
