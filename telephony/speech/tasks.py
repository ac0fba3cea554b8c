"""Stopping a task we own without hiding a cancellation of our own."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has finished.

    The task is being abandoned, so its own end (cancelled, or an error it hit first) is
    dropped. A cancellation of the caller that arrives while it waits is not: it is raised,
    where ``suppress(BaseException)`` around the await would swallow it. Cleanup that runs
    because the caller is already being cancelled goes on (only a new request counts)."""
    if task.done():
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" later
        return
    current = asyncio.current_task()
    before = current.cancelling() if current is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass  # the task's, or ours: told apart below
    except Exception:
        pass  # it failed before the cancel reached it
    if current is not None and current.cancelling() > before:
        raise asyncio.CancelledError
