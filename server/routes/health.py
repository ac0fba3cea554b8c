"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from dialgraph.server.deps import DbDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(db: DbDep) -> JSONResponse:
    """Readiness: the database answers."""
    ok = await db.ping()
    return JSONResponse({"status": "ready" if ok else "database unreachable"}, status_code=200 if ok else 503)
