"""The do-not-call store on real SQLite and PostgreSQL: the opt-out list and the NCPR import."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialgraph.server.core.db import Database
from dialgraph.tools.do_not_call import (
    InvalidNumber,
    LineError,
    add_opt_out,
    import_registry,
    lookup,
    normalise_number,
    parse_categories,
    parse_line,
    remove,
)


def test_numbers_are_e164_and_bare_indian_numbers_get_91() -> None:
    assert normalise_number("9876543210") == "+919876543210"
    assert normalise_number("09876543210") == "+919876543210"
    assert normalise_number("919876543210") == "+919876543210"
    assert normalise_number("+91 98765-43210") == "+919876543210"
    assert normalise_number("0044 20 7946 0958") == "+442079460958"
    assert normalise_number("+15551234567") == "+15551234567"
    for bad in ("12345", "5551234567", "98765abc10", "", "+0123456789"):
        assert normalise_number(bad) is None, bad


def test_registry_lines_and_categories() -> None:
    assert parse_line("9876543210") == ("+919876543210", "0")  # no preference given: fully blocked
    assert parse_line("9876543210,1|2|7") == ("+919876543210", "1,2,7")
    assert parse_line('9876543210,"7,2,1"') == ("+919876543210", "1,2,7")
    assert parse_line("9876543210,3;4") == ("+919876543210", "3,4")
    assert parse_line("9876543210,2#5") == ("+919876543210", "2,5")
    assert parse_line("9876543210,1,2") == ("+919876543210", "1,2")  # unquoted commas: still categories
    assert parse_line("9876543210\t0") == ("+919876543210", "0")
    assert parse_line("9876543210,1|0") == ("+919876543210", "0")
    assert parse_line("   ") is None
    assert parse_categories("") == "0"
    with pytest.raises(ValueError, match="not a phone number"):
        parse_line("12345,1")
    with pytest.raises(ValueError, match="categories"):
        parse_line("9876543210,x")


async def test_opt_out_is_idempotent_and_removable(db: Database) -> None:
    await add_opt_out(db, "+15551230000", reason="stop calling me", call_sid="CA1")
    await add_opt_out(db, "+15551230000", reason="again", call_sid="CA2")
    [entry] = await lookup(db, "+15551230000")
    assert (entry.source, entry.reason, entry.call_sid, entry.categories) == ("opt_out", "stop calling me", "CA1", None)
    assert await remove(db, "+15551230000", source="ncpr") == 0
    assert await remove(db, "+15551230000") == 1
    assert await lookup(db, "+15551230000") == []
    assert await remove(db, "+15551230000") == 0
    with pytest.raises(InvalidNumber):
        await add_opt_out(db, "not a number")
    assert await lookup(db, "nonsense") == []


async def test_registry_import_reports_bad_lines_and_upserts(db: Database) -> None:
    lines = [
        "number,categories",  # header
        "9876500001",
        "+919876500002,1|2",
        "",
        "12345",  # line 5: too short
        '09876500003,"3,4"',
        "9876500004,x",  # line 7: bad categories
        "919876500001,5",  # line 8: the number of line 2 again: the later line wins
        "not-a-number",  # line 9
    ]
    report = await import_registry(db, lines, batch=2)  # several batches, one duplicate across them
    assert (report.lines, report.imported, report.duplicates) == (9, 3, 1)
    assert [(e.line, e.reason) for e in report.errors] == [
        (5, "not a phone number"),
        (7, "categories must be numbers like 1|2|7"),
        (9, "not a phone number"),
    ]
    assert [(e.source, e.categories) for e in await lookup(db, "+919876500001")] == [("ncpr", "5")]
    assert [(e.source, e.categories) for e in await lookup(db, "9876500003")] == [("ncpr", "3,4")]

    # a new registry file: the number's preferences change; the opt-out list is its own row
    await add_opt_out(db, "+919876500002", call_sid="CA9")
    again = await import_registry(db, ["9876500002,0"])
    assert again.imported == 1 and again.errors == []
    assert [(e.source, e.categories) for e in await lookup(db, "+919876500002")] == [("ncpr", "0"), ("opt_out", None)]
    assert await remove(db, "+919876500002") == 2


async def test_registry_import_from_a_file_in_batches(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "ncpr.csv"
    rows = ["Phone Number,Preference"] + [f"98{i:08d},{1 + i % 7}" for i in range(2500)] + ["oops"]
    path.write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")
    report = await import_registry(db, path)
    assert (report.lines, report.imported, report.duplicates) == (2502, 2500, 0)
    assert report.errors == [LineError(2502, "not a phone number")]
    [entry] = await lookup(db, "+919800002499")
    assert entry.categories == str(1 + 2499 % 7)


async def test_import_rejects_an_unknown_source(db: Database) -> None:
    with pytest.raises(ValueError, match="source"):
        await import_registry(db, ["9876543210"], source="dnd")
