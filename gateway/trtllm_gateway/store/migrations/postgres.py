"""PostgreSQL's migrations: the DDL of ``schema.py`` for PostgreSQL, and the lock that
serialises replicas migrating one database (protocol in ``migrations/__init__.py``).

Replicas starting at once queue on ``pg_advisory_xact_lock(MIGRATION_LOCK)``, taken first in
the migrating transaction and released by its commit; the later ones find the work done.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, func, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from . import statements

# pg_advisory_xact_lock key serialising migrations: any fixed int64 (locks are per database).
MIGRATION_LOCK = 0x7472_746C_6C6D_0001

MIGRATIONS = statements(postgresql.dialect())


async def lock(conn: AsyncConnection) -> None:
    await conn.execute(select(func.pg_advisory_xact_lock(literal(MIGRATION_LOCK, BigInteger))))
