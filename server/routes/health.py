"""Liveness and readiness probes.

- ``/livez``: the process serves requests (always 200): a liveness probe that must not restart
  a process for being busy.
- ``/healthz``: whether this process takes NEW calls (``server/core/overload.py``): 200
  ``{"status": "ok", "ready": true, ...}``, or 503 ``{"status": "overloaded", "ready": false,
  "reason": "overload.max_calls" | "overload.max_loop_lag_ms", ...}`` past ``[overload]``'s
  limit, with the calls in progress here and the event-loop lag either way. No I/O: a load
  balancer may ask it every second. Calls in progress are not affected by its answer.
- ``/readyz``: the database answers, and the process is not overloaded (503 otherwise).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dialgraph.server.core.overload import Overload, OverloadState
from dialgraph.server.deps import DbDep

router = APIRouter(tags=["health"])


def _load(request: Request) -> OverloadState | None:
    overload: Overload | None = getattr(request.app.state, "overload", None)
    return overload.state() if overload is not None else None


@router.get("/livez")
async def livez() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Readiness for new calls, by this process's load (no I/O)."""
    state = _load(request)
    if state is None:  # before the lifespan started
        return JSONResponse({"status": "ok", "ready": True})
    return JSONResponse(state.report(), status_code=200 if state.ready else 503)


@router.get("/readyz")
async def readyz(request: Request, db: DbDep) -> JSONResponse:
    """Readiness: the database answers and the process is not overloaded."""
    if not await db.ping():
        return JSONResponse({"status": "database unreachable"}, status_code=503)
    state = _load(request)
    if state is not None and not state.ready:
        return JSONResponse({"status": "overloaded", "reason": state.reason}, status_code=503)
    return JSONResponse({"status": "ready"})
