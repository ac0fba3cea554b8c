"""Call recordings (opt-in per flow: ``[flows.NAME] recording = true``), served to the admin only.

``GET /api/calls/{sid}/recording`` -- the admin bearer token (``require_admin``);
``GET /dashboard/calls/{sid}/recording`` -- the dashboard's session cookie (``page_session``:
no session, a redirect to the login form). Both answer ``audio/wav`` (a stereo WAV: the
caller left, the agent as heard right; ``telephony/call/recording.py``) or 404 when the call
has none. The file is looked up by CallSid only under ``data_dir/recordings`` (a sid that
is not letters, digits, ``-`` or ``_`` is a 404, never a path).

``recorder_for(settings, ctx)`` is what the media route gives a session of a recording flow.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from dialgraph.server.core.context import CallContext
from dialgraph.server.core.settings import Settings
from dialgraph.server.dashboard.session import Session
from dialgraph.server.dashboard.views import page_session
from dialgraph.server.deps import SettingsDep
from dialgraph.server.routes.admin import require_admin
from dialgraph.telephony.call.recording import CallRecorder, find_recording, safe_sid

NO_LIMIT_S = 4 * 3600.0  # the memory bound of a call with no maximum length
GRACE_S = 60.0  # the goodbye (and the reply it waits for) after the maximum length


def api_path(sid: str) -> str:
    """The API URL of a call's recording (``CallOut.recording_url``)."""
    return f"/api/calls/{sid}/recording"


def recorder_for(settings: Settings, ctx: CallContext) -> CallRecorder | None:
    """A recorder for this stream when its flow records calls (else None), bounded by the
    call's maximum length."""
    if not ctx.flow_settings.recording or not safe_sid(ctx.call_sid):
        return None
    minutes = settings.limits.merged(ctx.flow_settings.limits).max_call_minutes
    limit = minutes * 60 + GRACE_S if minutes else NO_LIMIT_S
    return CallRecorder(call_sid=ctx.call_sid, data_dir=settings.data_dir, max_seconds=limit)


async def recording_file(settings: Settings, sid: str) -> Path | None:
    """The call's WAV, looked up in a worker thread (a directory scan)."""
    return await asyncio.to_thread(find_recording, settings.data_dir, sid)


async def url_if_recorded(settings: Settings, sid: str) -> str | None:
    """``api_path(sid)`` when the call has a recording, else None (``CallOut.recording_url``)."""
    return api_path(sid) if await recording_file(settings, sid) is not None else None


async def _serve(settings: Settings, sid: str) -> FileResponse:
    path = await recording_file(settings, sid)
    if path is None:
        raise HTTPException(status_code=404, detail="no recording for this call")
    return FileResponse(
        path,
        media_type="audio/wav",
        filename=f"{sid}.wav",
        headers={"Cache-Control": "private, no-store"},
    )


api_router = APIRouter(prefix="/api/calls", tags=["admin"], dependencies=[Depends(require_admin)])
dashboard_router = APIRouter(prefix="/dashboard", tags=["dashboard"])


@api_router.get("/{sid}/recording", response_class=FileResponse)
async def api_recording(sid: str, settings: SettingsDep) -> FileResponse:
    """The call's recording (admin token)."""
    return await _serve(settings, sid)


@dashboard_router.get("/calls/{sid}/recording", response_class=FileResponse)
async def dashboard_recording(
    sid: str, settings: SettingsDep, session: Annotated[Session, Depends(page_session)]
) -> FileResponse:
    """The call's recording (dashboard session cookie)."""
    return await _serve(settings, sid)


__all__ = ["api_path", "api_router", "dashboard_router", "recorder_for", "recording_file", "url_if_recorded"]
