"""What the model writes from the caller's words into SQL through the tools is redacted too:
an appointment's purpose, a sales lead's notes (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import select

from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.models import Appointment, Contact
from dialgraph.tools.calendar import Calendar
from dialgraph.tools.contacts import update_contact

CARD = "4111 1111 1111 1111"


async def test_a_card_number_in_a_purpose_or_lead_is_stored_redacted(db: Database) -> None:
    now = dt.datetime(2026, 12, 7, 8, 0, tzinfo=dt.UTC)
    cal = Calendar(db, FlowSettings(), clock=lambda: now)
    start = dt.datetime(2026, 12, 7, 10, 0, tzinfo=ZoneInfo("UTC"))
    await cal.book("+15551230009", start, name="Sam", purpose=f"refund to card {CARD}")
    await update_contact(db, "+15551230009", lead={"budget": f"paid with card {CARD}"})
    async with db.sessionmaker() as s:
        appt = (await s.scalars(select(Appointment))).one()
        contact = (await s.scalars(select(Contact))).one()
    assert appt.purpose == "refund to card [card ending 1111]"
    assert "[card ending 1111]" in (contact.notes or "") and "4111" not in (contact.notes or "")
