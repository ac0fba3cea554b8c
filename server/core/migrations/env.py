"""Alembic environment: runs migrations synchronously on the app's database.

The app's URL names an async driver (``sqlite+aiosqlite``, ``postgresql+psycopg``,
``postgresql+asyncpg``); migrations use the same database through a sync driver, so an
upgrade never starts an event loop of its own and can run in any worker thread (the app
calls it with ``asyncio.to_thread``; ``langgraph dev`` flags file reads in any running
loop, even another thread's).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from dialgraph.server.core.models import Base

target_metadata = Base.metadata

SYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite+pysqlite", "postgresql+asyncpg": "postgresql+psycopg"}


def sync_url(url: str) -> str:
    """``url`` with its async driver swapped for the sync one of the same database."""
    parsed = make_url(url)
    driver = SYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False) if driver else url


def _run_online(url: str) -> None:
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    _run_online(context.config.get_main_option("sqlalchemy.url") or "")
