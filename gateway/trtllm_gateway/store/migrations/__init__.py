"""Versioned schema migrations, applied at store open, the same way in every backend.

Protocol: ``schema_migrations(version, applied_at)`` lists the versions applied. ``open()``
runs :func:`apply` in one write transaction, which the backend first serialises against
other processes opening the same database (SQLite: ``BEGIN IMMEDIATE`` holds the file's
write lock; PostgreSQL: ``pg_advisory_xact_lock``, ``postgres.py``). It creates that table
if needed, applies every missing version in order and records it; the later openers find
nothing to do. DDL is transactional in both, so a failed migration leaves nothing behind. A
database carrying a version newer than this gateway knows is refused rather than misread.

:func:`statements` compiles each version's DDL from ``schema.py`` for a dialect. A later
change to an existing table is a new version of its own statements (ALTER ...), and the
table's first ``CREATE`` must stay as it was: write that one out here as text then, since
the declaration in ``schema.py`` will describe the table as it is after every migration.
A new index on an existing table needs no text: it names its version in its ``info``
(``Index(..., info={"migration": 4})``) and is created by that version alone.
"""
from __future__ import annotations

import time

from sqlalchemy import Dialect, ForeignKeyConstraint, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, CreateTable, ExecutableDDLElement

from ..records import StoreError
from ..schema import metadata, schema_migrations


def statements(dialect: Dialect) -> dict[int, tuple[str, ...]]:
    """version -> its DDL in ``dialect``, in the order to run it."""
    # SQLite files have never had foreign keys (schema.py): leave them out there.
    fks: list[ForeignKeyConstraint] | None = None if dialect.name == "postgresql" else []
    out: dict[int, list[str]] = {}
    for table in metadata.sorted_tables:  # a table after those it references
        if "migration" not in table.info:
            continue
        created = table.info["migration"]
        table_ddl = CreateTable(table, include_foreign_key_constraints=fks)
        ddl: list[tuple[int, ExecutableDDLElement]] = [(created, table_ddl)]
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            # an index added later names its own migration (``info``); the others come with the table
            ddl.append((index.info["migration"] if "migration" in index.info else created, CreateIndex(index)))
        for version, element in ddl:
            out.setdefault(version, []).append(str(element.compile(dialect=dialect)).strip())
    return {version: tuple(out[version]) for version in sorted(out)}


async def apply(conn: AsyncConnection, migrations: dict[int, tuple[str, ...]], where: str) -> None:
    """Apply the missing ``migrations`` inside the caller's (serialised) write transaction;
    ``where`` names the store in errors."""
    await conn.run_sync(schema_migrations.create, checkfirst=True)
    applied = set((await conn.execute(select(schema_migrations.c.version))).scalars())
    newest = max(migrations)
    if applied and max(applied) > newest:
        raise StoreError(f"{where} has schema migration {max(applied)}, newer than this gateway "
                         f"knows ({newest}); upgrade the gateway")
    for version in sorted(set(migrations) - applied):
        for statement in migrations[version]:
            await conn.exec_driver_sql(statement)
        await conn.execute(insert(schema_migrations).values(version=version, applied_at=int(time.time())))
