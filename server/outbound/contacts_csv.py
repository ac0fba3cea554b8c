"""A campaign's contact list, from a CSV upload or a JSON list: rows checked one by one.

A bad row (a number that is not E.164 once spaces, dashes, dots and brackets are stripped; a
number already seen higher up; an unknown time zone) becomes a ``RowError`` with its line
(the file's line for CSV, index + 1 for JSON) and the good rows are kept. A file that cannot
be a contact list at all (no ``to`` column) raises ``ValueError``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dialgraph.server.core.flow_config import E164

_E164 = re.compile(E164)
_SEPARATORS = re.compile(r"[\s\-().]")


class ContactIn(BaseModel):
    """One person to call: the number, what the agent knows of them, their zone if known."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="E.164 number (spaces and dashes are ignored)")
    context: dict[str, Any] = Field(default_factory=dict, description="name, purpose, custom fields for the agent")
    timezone: str | None = Field(default=None, description="IANA zone of the callee; else from the number")
    line: int | None = Field(default=None, ge=1, description="set by the server: CSV line or list index + 1")


class RowError(BaseModel):
    """A row that was left out, and why."""

    line: int
    to: str
    error: str


def normalize_number(raw: str) -> str | None:
    """``raw`` as E.164 with separators stripped, or None when it is not a number."""
    number = _SEPARATORS.sub("", raw)
    return number if _E164.fullmatch(number) else None


def _zone_error(zone: str | None) -> str | None:
    if zone is None:
        return None
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {zone!r}"
    return None


def check_contacts(rows: Iterable[tuple[int, ContactIn]]) -> tuple[list[ContactIn], list[RowError]]:
    """Keep the good ``(line, contact)`` rows (numbers normalised, ``line`` set), report the bad."""
    good: list[ContactIn] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for line, contact in rows:
        number = normalize_number(contact.to)
        if number is None:
            errors.append(RowError(line=line, to=contact.to, error="not an E.164 number (+ and country code)"))
            continue
        if number in seen:
            errors.append(RowError(line=line, to=contact.to, error=f"duplicate of line {seen[number]}"))
            continue
        zone_error = _zone_error(contact.timezone)
        if zone_error is not None:
            errors.append(RowError(line=line, to=contact.to, error=zone_error))
            continue
        seen[number] = line
        good.append(contact.model_copy(update={"to": number, "line": line}))
    return good, errors


def check_contact_list(contacts: Iterable[ContactIn]) -> tuple[list[ContactIn], list[RowError]]:
    """A JSON contact list checked like a CSV file; a row's line is its index + 1."""
    return check_contacts((i + 1, c) for i, c in enumerate(contacts))


def parse_contacts(items: Iterable[Mapping[str, Any]]) -> tuple[list[ContactIn], list[RowError]]:
    """A JSON contact list as the API received it (plain objects, so that one malformed row
    is reported with its line, index + 1, instead of refusing the whole request)."""
    errors: list[RowError] = []

    def rows() -> Iterable[tuple[int, ContactIn]]:
        for i, item in enumerate(items):
            try:
                yield i + 1, ContactIn.model_validate({k: v for k, v in item.items() if k != "line"})
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in first["loc"])
                to = item.get("to")
                errors.append(
                    RowError(line=i + 1, to=to if isinstance(to, str) else "", error=f"{where}: {first['msg']}")
                )

    good, bad = check_contacts(rows())
    return good, sorted(errors + bad, key=lambda e: e.line)


def parse_contacts_csv(text: str) -> tuple[list[ContactIn], list[RowError]]:
    """A CSV upload: a header with a ``to`` column and any others. ``timezone`` sets the
    contact's zone; every other non-empty field goes into its context. Blank lines are skipped.
    Raises ``ValueError`` when the file has no header or no ``to`` column."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    header: list[str] | None = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [cell.strip().lower() for cell in row]
            break
    if header is None:
        raise ValueError("the CSV file is empty")
    if "to" not in header:
        raise ValueError("the CSV header needs a 'to' column")
    errors: list[RowError] = []

    def rows() -> Iterable[tuple[int, ContactIn]]:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                raw_to = row[header.index("to")].strip() if header.index("to") < len(row) else ""
                errors.append(RowError(line=line, to=raw_to, error="more fields than the header has columns"))
                continue
            fields = {name: cell.strip() for name, cell in zip(header, row, strict=False) if name}
            to = fields.pop("to", "")
            zone = fields.pop("timezone", "") or None
            context = {name: value for name, value in fields.items() if value}
            if not to:
                errors.append(RowError(line=line, to="", error="no number in the 'to' column"))
                continue
            yield line, ContactIn(to=to, context=context, timezone=zone)

    good, bad = check_contacts(rows())
    return good, sorted(errors + bad, key=lambda e: e.line)
