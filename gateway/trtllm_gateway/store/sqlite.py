"""SQLite backend of the response store: what SQLite does differently (the rest: ``sql.py``).

URLs: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``sqlite://:memory:`` or a plain
path (``store/__init__.py``). The file's directory is created if missing.

Connections (SQLAlchemy's sync pysqlite engine, each transaction run whole on a thread of
its engine's pool, so the event loop never waits on disk and a transaction costs one thread
hand-off, not one per statement as over aiosqlite: about half the CPU of a save or a get):
one writer, whose transactions begin ``BEGIN IMMEDIATE`` (SQLite's write
lock, taken up front: one writer at a time across processes on the same file, the
single-host equivalent of PostgreSQL's row locks and ``SKIP LOCKED``), and a few readers,
whose ``BEGIN`` reads one snapshot of the WAL file while the writer commits. Writers in this
process queue for the writer connection; ``busy_timeout`` covers other processes holding the
lock. ``synchronous = NORMAL`` in WAL survives process crashes; a power cut may lose the last
commits. ``:memory:`` is private to its connection, so there the writer serves reads too.
Migrations run under the writer's ``BEGIN IMMEDIATE``, so two processes opening one file
cannot both apply one. Processes opening one new file at once (a gateway's ``--workers``)
race to switch it to WAL: SQLite answers that switch "database is locked" at once, without
waiting ``busy_timeout``, while another connection holds the file's write lock, so the switch
is retried until ``busy_timeout`` (:func:`_wal`).
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import QueuePool

from .migrations import statements
from .records import MAX_HISTORY_DEPTH, StoreError
from .sql import SQLStore
from .transactions import Body

BUSY_TIMEOUT_S = 10.0
PURGE_BATCH = 500
READERS = 4
WAL_RETRY_S = (0.005, 0.1)  # first and longest wait between tries of the switch to WAL


class SQLiteStore(SQLStore):
    """One writer connection plus a few reader connections on a WAL-mode SQLite file."""

    kind = "SQLite"
    insert = staticmethod(sqlite.insert)
    migrations = statements(sqlite.dialect())
    driver_errors = (sqlite3.Error,)
    bodies_off_loop = True  # ThreadEngine runs each transaction body on its thread

    def __init__(self, path: str, *, max_history_depth: int = MAX_HISTORY_DEPTH):
        super().__init__(repr(path), max_history_depth)
        self.path = path

    async def _connect(self) -> tuple[ThreadEngine, ThreadEngine]:
        if self.path == ":memory:":
            writer = ThreadEngine(self.path, "BEGIN IMMEDIATE", 1)
            return writer, writer
        await asyncio.to_thread(_ensure_parent, self.path)
        return ThreadEngine(self.path, "BEGIN IMMEDIATE", 1), ThreadEngine(self.path, "BEGIN", READERS)

    async def _attempt(self, engine: ThreadEngine, body: Body) -> Any:
        return await engine.run(body)

    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        """Nothing to take: the writer's BEGIN IMMEDIATE already holds the file's write lock."""

    def _purge_batch(self) -> int:
        return PURGE_BATCH  # read at each purge: tests shrink it


class ThreadEngine:
    """A sync SQLite engine whose transactions run whole on its own threads, one per
    connection. A body is written against ``AsyncConnection`` like PostgreSQL's; here its
    connection answers at once, so the coroutine runs to its end in one step on the thread
    (:func:`_drive`): a body may await only its connection."""

    def __init__(self, path: str, begin: str, connections: int) -> None:
        self.sync_engine = _engine(path, begin, connections)
        self._threads = ThreadPoolExecutor(connections, thread_name_prefix="sqlite")
        self._closed = False

    async def run(self, body: Body) -> Any:
        if self._closed:  # a transaction started after close() (the pool takes no more work)
            raise StoreError("response store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._transaction, body)

    def _transaction(self, body: Body) -> Any:
        with self.sync_engine.begin() as conn:
            return _drive(body(cast(AsyncConnection, _Immediate(conn))))

    async def dispose(self) -> None:
        """In-flight transactions finish first, then the connections close."""
        self._closed = True
        await asyncio.to_thread(self._threads.shutdown, wait=True)
        self.sync_engine.dispose()


class _Immediate:
    """The part of ``AsyncConnection`` the store's bodies use, over a sync connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._conn.execute(*args, **kwargs)

    async def exec_driver_sql(self, *args: Any, **kwargs: Any) -> Any:
        return self._conn.exec_driver_sql(*args, **kwargs)

    async def run_sync(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(self._conn, *args, **kwargs)


def _drive(coro: Any) -> Any:
    """The result of a coroutine that never suspends (its awaits all answer at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a SQLite transaction body awaited something other than its connection")


def _engine(path: str, begin: str, connections: int) -> Engine:
    engine = create_engine(
        URL.create("sqlite", database=path),
        # isolation_level=None: sqlite3 issues no BEGIN of its own; on_begin below does.
        # check_same_thread=False: a connection serves whichever of its engine's threads
        # takes it from the pool (one at a time).
        connect_args={"timeout": BUSY_TIMEOUT_S, "isolation_level": None, "check_same_thread": False},
        # A fixed set of connections, kept open (":memory:" lives as long as its one
        # connection); a transaction waits for a free one as long as it takes.
        poolclass=QueuePool, pool_size=connections, max_overflow=0, pool_timeout=None,
    )

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        _wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection) -> None:
        connection.exec_driver_sql(begin)

    return engine


def _wal(cursor: sqlite3.Cursor) -> None:
    """``journal_mode = WAL`` (kept in the file). The switch needs the file to itself, and
    SQLite refuses it at once, without its busy handler, while another connection holds the
    write lock (another process migrating the same new file): so wait and retry, as the busy
    handler would, until ``BUSY_TIMEOUT_S``. Runs on an engine thread, never on the event loop."""
    deadline, wait = time.monotonic() + BUSY_TIMEOUT_S, WAL_RETRY_S[0]
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(wait)
        wait = min(wait * 2, WAL_RETRY_S[1])


def _ensure_parent(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the directory of SQLite store {path!r}: {exc}") from None
