"""Every value of every table of a database, and a search for numbers in them (privacy tests).

``dump_database(url)`` reads SQLite (the app's file and the checkpoints' beside it) or
PostgreSQL (its own connection, not the app's) and yields ``(table, column, text)`` for every non-null value: bytes (checkpoint blobs) are
searched as bytes decoded latin-1 *and*, when they are msgpack, as the strings inside;
JSON columns as their JSON text.

``leaks(text, numbers)`` is deliberately independent of ``server/core/redaction.py`` (a
redactor must not be checked by itself): digit words become digits ("double four" too),
separators between digits go, and any 12-digit window of a number found is a leak.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import ormsgpack
import psycopg
from sqlalchemy.engine import make_url

from dialgraph.graphs.sqlite_files import sqlite_checkpoint_file

_WORDS = {
    "zero": "0",
    "oh": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_WORD = re.compile(r"\b(?:(double|triple)\s+)?(" + "|".join(_WORDS) + r")\b", re.I)


def digits_view(text: str) -> str:
    """``text`` with spoken digits as digits and the separators between digits removed."""

    def word(m: re.Match[str]) -> str:
        times = {"double": 2, "triple": 3}.get((m.group(1) or "").lower(), 1)
        return _WORDS[m.group(2).lower()] * times

    text = _WORD.sub(word, text)
    return re.sub(r"(?<=\d)[\s\-.,/_]+(?=\d)", "", text)


def leaks(text: str, numbers: Iterable[str], window: int = 12) -> list[str]:
    """The numbers of which ``text`` holds a ``window``-digit run (after ``digits_view``)."""
    view = digits_view(text)
    found = []
    for number in numbers:
        if any(number[i : i + window] in view for i in range(len(number) - window + 1)):
            found.append(number)
    return found


def _unpack(data: bytes) -> Any:
    """msgpack with LangGraph's extension types opened too (each holds msgpack)."""

    def ext(_code: int, inner: bytes) -> Any:
        try:
            return _unpack(inner)
        except (ormsgpack.MsgpackDecodeError, ValueError, TypeError):
            return inner

    return ormsgpack.unpackb(data, ext_hook=ext, option=ormsgpack.OPT_NON_STR_KEYS)


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, bytes):
        yield obj.decode("latin-1")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _strings(v)
    elif obj is not None:
        yield str(obj)


def value_texts(value: Any) -> list[str]:
    """What a stored value says, every way it can be read."""
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        texts = [value.decode("latin-1")]
        try:
            texts += list(_strings(_unpack(value)))
        except (ormsgpack.MsgpackDecodeError, ValueError, TypeError):
            pass
        return texts
    if isinstance(value, dict | list):
        return [json.dumps(value, ensure_ascii=False)]
    return [str(value)]


def _sqlite_dump(path: str) -> list[tuple[str, str, Any]]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = []
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cur.description]
            for row in cur.fetchall():
                out += [(table, c, v) for c, v in zip(columns, row, strict=True) if v is not None]
        return out
    finally:
        conn.close()


async def _postgres_dump(dsn: str) -> list[tuple[str, str, Any]]:
    out = []
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [r[0] for r in await cur.fetchall()]
        for table in tables:
            cur = await conn.execute(f'SELECT * FROM "{table}"')
            columns = [d.name for d in cur.description or ()]
            for row in await cur.fetchall():
                out += [(table, c, v) for c, v in zip(columns, row, strict=True) if v is not None]
    return out


async def dump_database(url: str) -> list[tuple[str, str, str]]:
    """``(table, column, text)`` for every way every stored value reads (see the module docstring)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        rows = []
        for path in _sqlite_files(url):
            rows += await asyncio.to_thread(_sqlite_dump, path)
    else:
        dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        rows = await _postgres_dump(dsn)
    return [(table, column, text) for table, column, value in rows for text in value_texts(value)]


def _sqlite_files(url: str) -> list[str]:
    """The app's SQLite file and the checkpoints' beside it, those that exist."""
    app_file = make_url(url).database or ""
    return [path for path in dict.fromkeys((app_file, sqlite_checkpoint_file(app_file))) if os.path.exists(path)]


async def table_names(url: str) -> set[str]:
    """Every table of the database (empty ones too): both SQLite files, or PostgreSQL's public schema."""
    if make_url(url).get_backend_name() == "sqlite":

        def names(path: str) -> set[str]:
            conn = sqlite3.connect(path)
            try:
                return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                conn.close()

        return {name for path in _sqlite_files(url) for name in await asyncio.to_thread(names, path)}
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in await cur.fetchall()}


async def tables_of(url: str) -> set[str]:
    return {table for table, _, _ in await dump_database(url)}
