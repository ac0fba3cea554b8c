"""The do-not-call store: numbers that must not be called, and why.

Two sources share one table (``server.core.models.DoNotCall``, primary key (number, source)):

- ``ncpr``: India's national do-not-disturb registry (NCPR), imported from the scrub file a
  telemarketer downloads: one number a line, optionally with the subscriber's preference
  categories. ``categories`` is ``"0"`` for fully blocked (also what a line without
  categories means), else a comma list such as ``"1,2,7"``.
- ``opt_out``: the business's own list: people who said "stop calling me" or pressed the
  flow's opt-out digit during a call (``tools.opt_out``), or were added by an admin.

A person erased on request (``dialgraph data erase``, ``server/privacy/erasure.py``) stays
on the lists as a keyed hash of the number (``number_hash``: ``h:`` + 30 hex digits of
HMAC-SHA256, so it fits the ``number`` column) instead of the number itself: whoever checks
a number also checks its hash (``lookup(..., hash_key=...)``, ``server/outbound/compliance.py``),
so an erased person who opted out is still never called.

Everything here works the same on SQLite and PostgreSQL (an ``INSERT ... ON CONFLICT``
upsert in batches). Numbers are E.164; a 10-digit Indian mobile number (or one written with
a leading 0 or 91) becomes ``+91...``.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import itertools
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import DoNotCall, OutboundAudit, utcnow

OPT_OUT = "opt_out"
NCPR = "ncpr"
SOURCES = (NCPR, OPT_OUT)
FULLY_BLOCKED = "0"
BATCH = 1000

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
HASH_PREFIX = "h:"  # a stored number starting so is a keyed hash of an erased person's number
_HASH_HEX = 30  # "h:" + 30 hex digits = 32 characters, the width of DoNotCall.number
_CATEGORY_SPLIT = re.compile(r"[|;#,\s]+")
_CATEGORY = re.compile(r"^\d{1,2}$")


class InvalidNumber(ValueError):
    """Not a phone number we can store (E.164, or a 10-digit Indian number)."""


def normalise_number(text: str, *, default_country: str = "91") -> str | None:
    """``text`` as E.164, or None. ``+`` numbers keep their country; bare 10-digit numbers
    (and ``0`` + 10 digits, ``91`` + 10 digits) are Indian: the NCPR file writes them so."""
    raw = text.strip()
    digits = re.sub(r"[\s().-]", "", raw)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if digits.startswith("+"):
        return digits if _E164.match(digits) else None
    if not digits.isdigit():
        return None
    if len(digits) == 10 and digits[0] in "6789":
        return f"+{default_country}{digits}"
    if len(digits) == 11 and digits.startswith("0") and digits[1] in "6789":
        return f"+{default_country}{digits[1:]}"
    if len(digits) == 12 and digits.startswith(default_country) and digits[2] in "6789":
        return f"+{digits}"
    return None


def number_hash(number: str, key: bytes) -> str:
    """The keyed hash that stands for ``number`` (E.164) once its person is erased:
    ``h:`` + the first 120 bits of HMAC-SHA256(key, number), in hex. Without the key it
    cannot be tested against guessed numbers; a new key makes old hashes match nothing."""
    if not key:
        raise ValueError("number_hash needs a non-empty key")
    digest = hmac.new(key, number.encode("utf-8"), hashlib.sha256).hexdigest()
    return HASH_PREFIX + digest[:_HASH_HEX]


def _require(number: str) -> str:
    e164 = normalise_number(number)
    if e164 is None:
        raise InvalidNumber("not an E.164 phone number")  # the number itself stays out of messages
    return e164


def parse_categories(text: str | None) -> str:
    """NCPR preference categories as stored: ``"0"`` (fully blocked, or none given), else
    the distinct category numbers in order, comma-separated. ValueError when unreadable."""
    parts = [p for p in _CATEGORY_SPLIT.split((text or "").strip().strip('"')) if p]
    if not parts:
        return FULLY_BLOCKED
    if not all(_CATEGORY.match(p) for p in parts):
        raise ValueError("categories must be numbers like 1|2|7")
    numbers = sorted({int(p) for p in parts})
    if 0 in numbers:
        return FULLY_BLOCKED
    return ",".join(str(n) for n in numbers)


def _insert(db: Database) -> Any:
    return (sqlite.insert if db.is_sqlite else postgresql.insert)(DoNotCall)


async def add_opt_out(
    db: Database,
    number: str,
    *,
    reason: str = "caller asked",
    call_sid: str | None = None,
    audit_rule: str | None = None,
) -> None:
    """Put ``number`` on the business's own opt-out list. Idempotent: a number already on
    it keeps its first entry. With ``audit_rule`` (e.g. ``opt_out.spoken``) an
    ``outbound_audit`` row (decision ``opted_out``, reason ``caller_request``; what they said
    stays in the list's ``reason``) is written in the same transaction."""
    e164 = _require(number)
    row = {
        "number": e164,
        "source": OPT_OUT,
        "categories": None,
        "reason": (reason or "caller asked")[:128],
        "call_sid": call_sid,
        "added_at": utcnow(),
    }
    stmt = _insert(db).values(row).on_conflict_do_nothing(index_elements=["number", "source"])
    async with db.sessionmaker() as s, s.begin():
        await s.execute(stmt)
        if audit_rule:
            s.add(
                OutboundAudit(
                    decision="opted_out",
                    reason="caller_request",
                    rule=audit_rule[:64],
                    to_number=e164,
                    call_sid=call_sid,
                )
            )


async def remove(db: Database, number: str, source: str | None = None, *, hash_key: bytes | None = None) -> int:
    """Take ``number`` off the lists (only ``source``'s when given); the rows removed. With
    ``hash_key`` its entries kept as a hash (an erased person's) go too."""
    e164 = _require(number)
    keys = [e164, number_hash(e164, hash_key)] if hash_key else [e164]
    stmt = delete(DoNotCall).where(DoNotCall.number.in_(keys))
    if source is not None:
        stmt = stmt.where(DoNotCall.source == source)
    async with db.sessionmaker() as s, s.begin():
        result = await s.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)


async def lookup(db: Database, number: str, *, hash_key: bytes | None = None) -> list[DoNotCall]:
    """The entries for ``number`` (both sources, ``ncpr`` first); empty when it may be called
    as far as these lists go, or when it is not a phone number. With ``hash_key`` the
    entries kept as its hash (an erased person's) count too."""
    e164 = normalise_number(number)
    if e164 is None:
        return []
    keys = [e164, number_hash(e164, hash_key)] if hash_key else [e164]
    async with db.sessionmaker() as s:
        rows = await s.scalars(
            select(DoNotCall).where(DoNotCall.number.in_(keys)).order_by(DoNotCall.source, DoNotCall.number)
        )
        return list(rows)


# --- the registry file ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LineError:
    line: int  # 1-based line number in the file
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What an import did: lines read, distinct numbers written (new or updated), lines
    that repeated a number already in the file, and the lines skipped with why."""

    lines: int = 0
    imported: int = 0
    duplicates: int = 0
    errors: list[LineError] = field(default_factory=list)


def parse_line(text: str) -> tuple[str, str] | None:
    """One registry line as (E.164 number, categories); None for a blank line. ValueError
    (with a reason to report) for a line that is not a number with optional categories.

    Accepted: ``9876543210``, ``+919876543210``, ``9876543210,1|2|7``, ``9876543210,"1,2,7"``,
    ``9876543210<TAB>1;2``, ``9876543210,0`` (fully blocked)."""
    line = text.strip().lstrip("\ufeff")
    if not line:
        return None
    fields = next(csv.reader([line]))
    if len(fields) == 1 and "\t" in line:
        fields = line.split("\t")
    fields = [f.strip() for f in fields]
    number = normalise_number(fields[0])
    if number is None:
        raise ValueError("not a phone number")
    rest = " ".join(f for f in fields[1:] if f)
    try:
        categories = parse_categories(rest)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return number, categories


def _is_header(text: str) -> bool:
    return not any(ch.isdigit() for ch in text) and bool(text.strip())


async def _batches(source: Iterable[str] | Path, size: int) -> AsyncIterator[list[str]]:
    """Lines in batches; a file is read in a worker thread, a batch at a time."""
    if isinstance(source, Path):
        handle: TextIO = await asyncio.to_thread(source.open, encoding="utf-8-sig", newline="")
        try:
            while batch := await asyncio.to_thread(lambda: list(itertools.islice(handle, size))):
                yield batch
        finally:
            await asyncio.to_thread(handle.close)
        return
    it: Iterator[str] = iter(source)
    while batch := list(itertools.islice(it, size)):
        yield batch


async def import_registry(
    db: Database, lines: Iterable[str] | Path, *, source: str = NCPR, batch: int = BATCH
) -> ImportReport:
    """Load a do-not-disturb registry file (a path, or its lines) into the store under
    ``source``: upserts in batches of ``batch`` (a number already there takes the file's
    categories), a header line skipped, bad lines reported by line number and skipped;
    the good ones are kept either way."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}")
    report = ImportReport()
    seen: set[str] = set()
    async for chunk in _batches(lines, batch):
        rows: dict[str, dict[str, Any]] = {}
        for text in chunk:
            report.lines += 1
            if report.lines == 1 and _is_header(text):
                continue
            try:
                parsed = parse_line(text)
            except ValueError as exc:
                report.errors.append(LineError(report.lines, str(exc)))
                continue
            if parsed is None:
                continue
            number, categories = parsed
            if number in seen:
                report.duplicates += 1
            seen.add(number)
            rows[number] = {
                "number": number,
                "source": source,
                "categories": categories if source == NCPR else None,
                "reason": "registry" if source == NCPR else "imported",
                "call_sid": None,
                "added_at": utcnow(),
            }
        if rows:
            await _upsert(db, list(rows.values()))
    report.imported = len(seen)
    return report


async def _upsert(db: Database, rows: list[dict[str, Any]]) -> None:
    stmt = _insert(db)
    stmt = stmt.on_conflict_do_update(
        index_elements=["number", "source"],
        set_={"categories": stmt.excluded.categories, "added_at": stmt.excluded.added_at},
    )
    async with db.sessionmaker() as s, s.begin():
        await s.execute(stmt, rows)


__all__ = [
    "FULLY_BLOCKED",
    "HASH_PREFIX",
    "NCPR",
    "OPT_OUT",
    "ImportReport",
    "InvalidNumber",
    "LineError",
    "add_opt_out",
    "import_registry",
    "lookup",
    "normalise_number",
    "number_hash",
    "parse_categories",
    "parse_line",
    "remove",
]
