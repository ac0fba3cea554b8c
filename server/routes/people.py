"""People API (bearer admin token): erase everything stored about one person.

``DELETE /api/people/{phone}`` (E.164; a bad number is a 422 naming ``phone``) removes or
anonymises that person's calls, transcripts, checkpoints, messages, appointments, contact
row, campaign contacts and audit rows, and keeps their do-not-call entries as a keyed hash
(``server/privacy/erasure.py``). The answer counts what was done per kind; the number is
not echoed and the log names the person only by the hash (``person``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from pydantic import BaseModel

from dialgraph.server.core.flow_config import E164
from dialgraph.server.deps import DbDep, SettingsDep
from dialgraph.server.privacy.erasure import erase_person_by_settings
from dialgraph.server.routes.admin import require_admin

router = APIRouter(prefix="/api/people", tags=["privacy"], dependencies=[Depends(require_admin)])


class ErasureCounts(BaseModel):
    calls: int
    call_events: int
    checkpoint_threads: int
    messages: int
    appointments: int
    contacts: int
    campaign_contacts: int
    outbound_audit: int
    do_not_call: int
    recordings: int = 0


class ErasureOut(BaseModel):
    erased: bool
    person: str  # the keyed hash the person's opt-outs are kept as (and logs name them by)
    counts: ErasureCounts


@router.delete("/{phone}", response_model=ErasureOut)
async def erase_person(
    phone: Annotated[str, PathParam(pattern=E164, description="the person's number, E.164")],
    db: DbDep,
    settings: SettingsDep,
) -> ErasureOut:
    """Erase one person (DPDP Act 2023 / GDPR); idempotent: a second call counts zeros."""
    report = await erase_person_by_settings(settings, phone, db=db)
    return ErasureOut(erased=True, person=report.ref, counts=ErasureCounts(**report.counts()))
