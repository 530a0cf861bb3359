"""Engines, transactions and lifecycle of the SQL store, under every query mixin.

:class:`SQLBase` holds the (writer, reader) engines a backend makes and runs every query in
one of two transaction kinds (see ``sql.py``): :meth:`SQLBase._write` and
:meth:`SQLBase._read`. Each transaction runs in a shielded task: a cancelled caller cannot
interrupt it half-way, so a write either completes or leaves the previous state. Driver
errors become StoreError. A transaction whose connection turns out to be gone (a server
restart, failover) runs once more on a new one: every body is idempotent in effect (a save
writes a whole state; only a delete whose COMMIT reply was lost then reports False).
``open()`` applies the migrations (``migrations/``) in one write transaction.
"""
from __future__ import annotations

import abc
import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Executable, Row
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from . import migrations
from .records import StoreError

T = TypeVar("T")

CONNECTION_RETRIES = 1  # per transaction, after its connection was found lost

Body = Callable[[AsyncConnection], Awaitable[Any]]


class SQLBase(abc.ABC):
    """One database; a backend supplies the class attributes and the abstract hooks."""

    kind: str                                   # "SQLite" | "PostgreSQL", in messages
    insert: Callable[..., Any]                  # the dialect's insert(), with ON CONFLICT
    migrations: dict[int, tuple[str, ...]]      # version -> DDL, in this dialect
    driver_errors: tuple[type[BaseException], ...] = ()
    #: Transaction bodies run off the event loop (SQLite: whole, on the store's thread).
    bodies_off_loop = False

    def __init__(self, where: str, max_history_depth: int):
        self.where = where                      # the database, for messages (no password)
        self.max_history_depth = max_history_depth
        # (writer, reader): AsyncEngines, or what a backend that overrides _attempt keeps
        self._engines: tuple[Any, Any] | None = None

    @abc.abstractmethod
    async def _connect(self) -> tuple[Any, Any]:
        """The (writer, reader) engines; connections open on first use."""

    @abc.abstractmethod
    def _purge_batch(self) -> int:
        """Rows per purge transaction (small, so requests are not held up behind a purge)."""

    @abc.abstractmethod
    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        """Serialise processes migrating one database at once (called first in the
        migrating write transaction)."""

    # -- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        if self._engines is not None:
            return
        try:
            self._engines = await self._connect()
            await self._txn(True, self._migrate, failure=f"cannot open {self.kind} store {self.where}")
        except BaseException:
            await self.close()
            raise

    async def _migrate(self, conn: AsyncConnection) -> None:
        await self._lock_migrations(conn)
        await migrations.apply(conn, self.migrations, f"{self.kind} store {self.where}")

    async def close(self) -> None:
        engines, self._engines = self._engines, None
        for engine in {id(e.sync_engine.pool): e for e in engines or ()}.values():
            await engine.dispose()  # in-flight (shielded) transactions finish first, then close

    async def _attempt(self, engine: Any, body: Body) -> Any:
        """One try of a transaction: ``body`` on a connection of ``engine`` (the writer or
        the reader), committed when it returns (a backend may run it elsewhere: ``sqlite.py``)."""
        async with engine.begin() as conn:
            return await body(conn)

    async def _prepared(self, fn: Callable[..., T], *args: Any) -> Callable[[], T]:
        """``fn(*args)`` (encoding a record: CPU work the loop must not do) as a thunk for a
        transaction body: where bodies run off the loop it runs there (one thread hand-off
        per write instead of two), else it is computed now in a worker thread."""
        if self.bodies_off_loop:
            return functools.partial(fn, *args)
        value = await asyncio.to_thread(fn, *args)
        return lambda: value

    async def _read_then(self, body: Body, after: Callable[[Any], T]) -> T:
        """``after(body's result)`` (decoding rows: CPU work the loop must not do): inside the
        read transaction where bodies run off the loop, else in a worker thread after it."""
        if self.bodies_off_loop:
            async def inside(conn: AsyncConnection) -> T:
                return after(await body(conn))
            return await self._read(inside)
        return await asyncio.to_thread(after, await self._read(body))

    # -- transactions --------------------------------------------------------------------
    async def _write(self, body: Body) -> Any:
        return await self._txn(True, body)

    async def _read(self, body: Body) -> Any:
        return await self._txn(False, body)

    async def _rows(self, statement: Executable, *, write: bool = False, params: dict | None = None) -> list[Row]:
        """All rows of one statement (with ``params`` for its bind parameters), in its own transaction."""
        async def body(conn: AsyncConnection) -> list[Row]:
            return list((await conn.execute(statement, params)).all())

        return await self._txn(write, body)

    async def _count(self, statement: Executable) -> int:
        """Rows changed by one write statement, in its own transaction."""
        async def body(conn: AsyncConnection) -> int:
            return (await conn.execute(statement)).rowcount

        return await self._txn(True, body)

    async def _txn(self, write: bool, body: Body, *, failure: str | None = None) -> Any:
        if self._engines is None:
            raise StoreError("response store is not open")
        # Picked now, not when the task runs: a close() in between must not pull it away.
        engine = self._engines[0 if write else 1]
        # ValueError only while opening: a malformed URL surfaces at the first connect.
        errors = (SQLAlchemyError, OSError, *self.driver_errors, *((ValueError,) if failure else ()))

        async def run() -> Any:
            for attempt in range(CONNECTION_RETRIES + 1):
                try:
                    return await self._attempt(engine, body)
                except StoreError:
                    raise
                except errors as exc:
                    lost = isinstance(exc, DBAPIError) and exc.connection_invalidated
                    if not (lost and attempt < CONNECTION_RETRIES):
                        raise StoreError(f"{failure or f'{self.kind} store error'}: {describe(exc)}") from exc

        task = asyncio.ensure_future(run())
        task.add_done_callback(_retrieve)  # an abandoned (caller-cancelled) task logs nothing
        return await asyncio.shield(task)


def describe(exc: BaseException) -> str:
    """The driver's own error, as "Type: message" (SQLAlchemy wraps it, asyncpg's twice)."""
    while isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if exc.__cause__ is not None and type(exc).__module__.startswith("sqlalchemy"):
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()
