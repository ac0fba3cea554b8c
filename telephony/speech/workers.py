"""The bounded worker pool for CPU-heavy offline speech work, and model file checks.

Whisper (CTranslate2) and piper/silero (onnxruntime) release the GIL while they compute, so
threads give real parallelism. One pool per process, shared by every call, sized by
``settings.speech_workers``; the number of jobs waiting for it is bounded too, so a burst
of calls queues on the event loop (cheaply) instead of piling up in the executor.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

import structlog

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class ModelIntegrityError(RuntimeError):
    """A model file is missing or its SHA-256 differs from the pinned one."""


def verify_model_files(root: Path, expected: Mapping[str, str]) -> None:
    """Check each ``root/name`` against its pinned SHA-256 (blocking: run it in a thread)."""
    for name, digest in expected.items():
        path = root / name
        if not path.is_file():
            raise ModelIntegrityError(f"model file missing: {path}")
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != digest:
            raise ModelIntegrityError(f"model file {path} has SHA-256 {h.hexdigest()}, expected {digest}")


class SpeechWorkers:
    """A thread pool of ``size`` workers with at most ``size * queue_factor`` jobs in flight."""

    def __init__(self, size: int, *, queue_factor: int = 8) -> None:
        self.size = size
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="speech")
        self._limit = size * queue_factor
        self._slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished (waiting or running; a cancelled job that is
        already running counts until its thread is done). ``>= size`` means saturated:
        optional work (a speculative decode) should not be started."""
        return self._pending

    def _count(self, delta: int) -> None:
        with self._lock:
            self._pending += delta

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self._limit)
        self._count(1)
        submitted = False
        try:
            async with slots:
                job = self._executor.submit(fn, *args, **kwargs)
                submitted = True
                # Runs in the worker when the job ends, or at once if it is cancelled unstarted.
                job.add_done_callback(lambda _: self._count(-1))
                return await asyncio.wrap_future(job, loop=loop)
        finally:
            if not submitted:
                self._count(-1)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_shared: SpeechWorkers | None = None
_shared_users = 0
_shared_lock = threading.Lock()


def shared_workers(size: int) -> SpeechWorkers:
    """The process-wide pool (created on first use with ``size`` workers). Each caller
    releases it with ``release_shared_workers()``; the last release shuts it down."""
    global _shared, _shared_users
    with _shared_lock:
        _shared_users += 1
        if _shared is None:
            _shared = SpeechWorkers(size)
            log.info("speech worker pool started", workers=size)
        elif _shared.size != size:
            log.warning("speech worker pool already sized", workers=_shared.size, requested=size)
        return _shared


def release_shared_workers() -> None:
    """Drop one use of the process-wide pool; the last one shuts it down."""
    global _shared, _shared_users
    with _shared_lock:
        _shared_users = max(0, _shared_users - 1)
        if _shared is not None and _shared_users == 0:
            _shared.shutdown()
            _shared = None
