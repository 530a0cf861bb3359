"""PostgreSQL backend of the response store: what PostgreSQL does differently (the rest: ``sql.py``).

URLs: ``postgresql://user:pass@host:port/db?...`` or ``postgres://...``, in libpq DSN syntax
as asyncpg reads it (every connection is made by ``asyncpg.connect(url)``, so multi-host
DSNs, ``sslmode`` and server settings as query parameters all work as asyncpg documents).

Connections: a pool of up to ``max_size`` shared by all requests (``statement_cache_size=0``
is needed behind PgBouncer in transaction mode). Writes run at READ COMMITTED, with the row
locks ``sql.py`` describes; reads that touch several statements run in one REPEATABLE READ
READ ONLY transaction (one snapshot). Migrations are serialised across replicas by an
advisory lock (``migrations/postgres.py``). Foreign keys cascade deletes here, but the store
deletes dependent rows itself, as it must in SQLite. Errors name the database with its
password masked.
"""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .migrations import postgres as pg_migrations
from .records import MAX_HISTORY_DEPTH
from .sql import SQLStore

PURGE_BATCH = 500


class PostgresStore(SQLStore):
    """A response store on a PostgreSQL database, through a pool of asyncpg connections."""

    kind = "PostgreSQL"
    insert = staticmethod(postgresql.insert)
    migrations = pg_migrations.MIGRATIONS
    driver_errors = (asyncpg.PostgresError, asyncpg.InterfaceError)

    def __init__(self, url: str, *, max_history_depth: int = MAX_HISTORY_DEPTH, max_size: int = 10,
                 connect_timeout: float = 10.0, command_timeout: float | None = 60.0,
                 statement_cache_size: int = 100):
        super().__init__(redact(url), max_history_depth)
        self.url = url
        self._connect_options = dict(timeout=connect_timeout, command_timeout=command_timeout,
                                     statement_cache_size=statement_cache_size)
        self._max_size = max_size

    async def _connect(self) -> tuple[AsyncEngine, AsyncEngine]:
        engine = create_async_engine(
            "postgresql+asyncpg://",  # the connections come from async_creator, with the DSN as is
            async_creator=lambda: asyncpg.connect(self.url, **self._connect_options),
            pool_size=self._max_size, max_overflow=0, pool_timeout=None,
            # SQLAlchemy's own cache of prepared statements, on top of asyncpg's
            connect_args={"prepared_statement_cache_size": self._connect_options["statement_cache_size"]},
        )
        return engine, engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)

    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        await pg_migrations.lock(conn)

    def _purge_batch(self) -> int:
        return PURGE_BATCH  # read at each purge: tests shrink it


def redact(url: str) -> str:
    """The URL with its password masked, for error messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable URL>"
