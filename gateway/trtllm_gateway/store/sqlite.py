"""SQLite backend of the response store: what SQLite does differently (the rest: ``sql.py``).

URLs: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``sqlite://:memory:`` or a plain
path (``store/__init__.py``). The file's directory is created if missing.

Connections (aiosqlite: each runs its queries on its own thread, so the event loop never
waits on disk): one writer, whose transactions begin ``BEGIN IMMEDIATE`` (SQLite's write
lock, taken up front: one writer at a time across processes on the same file, the
single-host equivalent of PostgreSQL's row locks and ``SKIP LOCKED``), and a few readers,
whose ``BEGIN`` reads one snapshot of the WAL file while the writer commits. Writers in this
process queue for the writer connection; ``busy_timeout`` covers other processes holding the
lock. ``synchronous = NORMAL`` in WAL survives process crashes; a power cut may lose the last
commits. ``:memory:`` is private to its connection, so there the writer serves reads too.
Migrations run under the writer's ``BEGIN IMMEDIATE``, so two processes opening one file
cannot both apply one.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3

from sqlalchemy import URL, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from .base import MAX_HISTORY_DEPTH, StoreError
from .migrations import statements
from .sql import SQLStore

BUSY_TIMEOUT_S = 10.0
PURGE_BATCH = 500
READERS = 4
PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL")


class SQLiteStore(SQLStore):
    """One writer connection plus a few reader connections on a WAL-mode SQLite file."""

    kind = "SQLite"
    insert = staticmethod(sqlite.insert)
    migrations = statements(sqlite.dialect())
    driver_errors = (sqlite3.Error,)

    def __init__(self, path: str, *, max_history_depth: int = MAX_HISTORY_DEPTH):
        super().__init__(repr(path), max_history_depth)
        self.path = path

    async def _connect(self) -> tuple[AsyncEngine, AsyncEngine]:
        if self.path == ":memory:":
            writer = _engine(self.path, "BEGIN IMMEDIATE", 1)
            return writer, writer
        await asyncio.to_thread(_ensure_parent, self.path)
        return _engine(self.path, "BEGIN IMMEDIATE", 1), _engine(self.path, "BEGIN", READERS)

    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        """Nothing to take: the writer's BEGIN IMMEDIATE already holds the file's write lock."""

    def _purge_batch(self) -> int:
        return PURGE_BATCH  # read at each purge: tests shrink it


def _engine(path: str, begin: str, connections: int) -> AsyncEngine:
    engine = create_async_engine(
        URL.create("sqlite+aiosqlite", database=path),
        # isolation_level=None: sqlite3 issues no BEGIN of its own; on_begin below does.
        connect_args={"timeout": BUSY_TIMEOUT_S, "isolation_level": None},
        # A fixed set of connections, kept open (":memory:" lives as long as its one
        # connection); a transaction waits for a free one as long as it takes.
        poolclass=AsyncAdaptedQueuePool, pool_size=connections, max_overflow=0, pool_timeout=None,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection) -> None:
        connection.exec_driver_sql(begin)

    return engine


def _ensure_parent(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the directory of SQLite store {path!r}: {exc}") from None
