"""Where the SQLite checkpointer keeps its tables: a file of its own beside the app's.

SQLite has one writer per file. In the app's file every checkpoint insert waited out the
app's transactions (call events, call rows, heard text), which under load hold the write
lock across several trips of the event loop while SQLite's busy handler sleeps in steps of
up to 100 ms. At 250 whole calls (``bench.load_whole``, which prints the checkpoint writes'
time from ``/metrics``) writes took mean 3.1-4.5 ms, p99 <= 50-100 ms in the app's file and
mean 3.1 ms, p99 <= 25 ms apart; on a loaded box the difference reached the callers.

``sqlite_checkpoint_file`` names the file; ``adopt_app_checkpoints`` moves the tables an
earlier version left in the app's file (``graphs/checkpoint.py`` calls it on open).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def sqlite_checkpoint_file(database: str) -> str:
    """The SQLite file the checkpoints are kept in, beside the app's ``database``
    (``data/dialgraph.db`` -> ``data/dialgraph-checkpoints.db``); an in-memory or URI
    database is used as it is."""
    if database in ("", ":memory:") or database.startswith("file:"):
        return database
    path = Path(database)
    return str(path.with_name(f"{path.stem}-checkpoints{path.suffix}"))


def adopt_app_checkpoints(db: sqlite3.Connection, app_file: str) -> int:
    """Move the checkpoint tables an earlier version kept in ``app_file`` into ``db`` (the
    checkpoints' own file, set up): the columns both have, rows already here kept, then the
    old table dropped, one table a transaction (a crash between two only repeats the copy).
    Returns the rows moved."""
    if not Path(app_file).exists():
        return 0
    db.execute("ATTACH DATABASE ? AS app", (app_file,))
    try:
        found = "SELECT name FROM app.sqlite_master WHERE type = 'table' AND name IN ('checkpoints', 'writes')"
        moved = 0
        for (table,) in db.execute(found).fetchall():
            theirs = {row[1] for row in db.execute(f"PRAGMA app.table_info({table})")}
            columns = ", ".join(row[1] for row in db.execute(f"PRAGMA main.table_info({table})") if row[1] in theirs)
            db.execute("BEGIN IMMEDIATE")
            try:
                moved += db.execute(
                    f"INSERT OR IGNORE INTO main.{table} ({columns}) SELECT {columns} FROM app.{table}"
                ).rowcount
                db.execute(f"DROP TABLE app.{table}")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return moved
    finally:
        db.execute("DETACH DATABASE app")
