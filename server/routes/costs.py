"""Cost totals (bearer admin token): ``GET /api/costs/daily?from=YYYY-MM-DD&to=YYYY-MM-DD&flow=``.

Per UTC day and flow: the calls that have a cost, their billed telephony minutes and the
breakdown (``server/core/costs.py``). ``dialgraph costs daily`` prints the same.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from dialgraph.server.core.costs import CURRENCY, daily_totals
from dialgraph.server.deps import DbDep
from dialgraph.server.routes.admin import require_admin

router = APIRouter(prefix="/api/costs", tags=["costs"], dependencies=[Depends(require_admin)])

MAX_DAYS = 366


class DayOut(BaseModel):
    day: dt.date
    flow: str
    calls: int
    minutes: float
    telephony: float
    asr: float
    llm: float
    tts: float
    total: float
    currency: str = CURRENCY


class DailyOut(BaseModel):
    start: dt.date
    end: dt.date
    flow: str | None
    days: list[DayOut]
    total: float
    currency: str = CURRENCY


@router.get("/daily", response_model=DailyOut)
async def costs_daily(
    db: DbDep,
    start: Annotated[
        dt.date | None, Query(alias="from", description="first UTC day (default: 6 days before `to`)")
    ] = None,
    end: Annotated[dt.date | None, Query(alias="to", description="last UTC day, inclusive (default: today)")] = None,
    flow: Annotated[str | None, Query(max_length=64, description="one flow only")] = None,
) -> DailyOut:
    last = end or dt.datetime.now(dt.UTC).date()
    first = start or last - dt.timedelta(days=6)
    if first > last:
        raise HTTPException(
            status_code=422,
            detail=[{"loc": ["query", "from"], "msg": "`from` is after `to`", "type": "value_error"}],
        )
    if (last - first).days >= MAX_DAYS:
        raise HTTPException(
            status_code=422,
            detail=[{"loc": ["query", "from"], "msg": f"at most {MAX_DAYS} days at a time", "type": "value_error"}],
        )
    rows = await daily_totals(db, start=first, end=last, flow=flow or None)
    days = [DayOut(**asdict(r)) for r in rows]
    return DailyOut(start=first, end=last, flow=flow or None, days=days, total=round(sum(d.total for d in days), 6))
