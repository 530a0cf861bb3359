"""SQLite backend of the response store (see ``store/base.py`` for the protocol).

Layout (migration 1): ``responses`` (one row per response, payload JSON without its output
items), ``items`` (one row per input or output item, keyed by response, kind and
position) and ``schema_migrations`` (versions applied). Migrations in :data:`MIGRATIONS`
run at ``open()`` inside a ``BEGIN IMMEDIATE`` transaction, so two gateway processes
opening the same file cannot both apply one. Migration 2 adds ``background_jobs`` and
``stream_events`` (``sqlite_jobs.py``: jobs claimed under ``BEGIN IMMEDIATE``, the
single-writer equivalent of PostgreSQL's ``SKIP LOCKED``).

Concurrency: aiosqlite runs every query on the connection's own thread, so the event loop
never waits on disk. WAL mode lets a reader connection take snapshots while the writer
connection commits; writes are serialised by an asyncio lock and ``BEGIN IMMEDIATE``,
and ``busy_timeout`` covers other processes holding the file. Each transaction runs in a
shielded task: a cancelled caller cannot leave the shared connection mid-transaction.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import aiosqlite

from . import codec
from .base import (
    MAX_HISTORY_DEPTH,
    HistoryTooDeep,
    ItemPage,
    ResponseStore,
    StoreError,
    StoredResponse,
    check_page_args,
)
from .sqlite_conversations import CONVERSATIONS_MIGRATION, SQLiteConversations
from .sqlite_jobs import JOBS_MIGRATION, SQLiteJobs

BUSY_TIMEOUT_MS = 10_000
PURGE_BATCH = 500

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            status TEXT NOT NULL,
            previous_response_id TEXT,
            schema_version INTEGER NOT NULL,
            payload TEXT NOT NULL
        )""",
        "CREATE INDEX responses_created_at ON responses(created_at)",
        """CREATE TABLE items (
            response_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('input', 'output')),
            position INTEGER NOT NULL,
            item_id TEXT,
            payload TEXT NOT NULL,
            PRIMARY KEY (response_id, kind, position)
        ) WITHOUT ROWID""",
        # cursor look-ups now; item_reference resolution by id later
        "CREATE INDEX items_item_id ON items(item_id)",
    ),
    2: JOBS_MIGRATION,  # background_jobs + stream_events (sqlite_jobs.py)
    3: CONVERSATIONS_MIGRATION,  # conversations, idempotency keys (sqlite_conversations.py)
}
# Rows keyed by response_id that go with their response (SQLite enforces no foreign keys).
DEPENDENT_TABLES = ("items", "background_jobs", "stream_events")

_RESPONSE_COLS = "id, tenant, created_at, status, previous_response_id, schema_version, payload"

_UPSERT = f"""
INSERT INTO responses ({_RESPONSE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET
    created_at = excluded.created_at, status = excluded.status,
    previous_response_id = excluded.previous_response_id,
    schema_version = excluded.schema_version, payload = excluded.payload
WHERE responses.tenant = excluded.tenant
"""

_INSERT_NEW = f"""
INSERT INTO responses ({_RESPONSE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO NOTHING
"""

# Walks previous_response_id from the newest response; depth bounds long or cyclic chains.
_CHAIN = f"""
WITH RECURSIVE chain(id, prev, depth) AS (
    SELECT id, previous_response_id, 0 FROM responses WHERE id = ? AND tenant = ?
    UNION ALL
    SELECT r.id, r.previous_response_id, chain.depth + 1
    FROM responses r JOIN chain ON r.id = chain.prev
    WHERE r.tenant = ? AND chain.depth < ?
)
SELECT {", ".join("r." + c.strip() for c in _RESPONSE_COLS.split(","))}
FROM chain JOIN responses r ON r.id = chain.id ORDER BY chain.depth DESC
"""

_ITEMS_OF = """
SELECT response_id, kind, item_id, position, payload FROM items
WHERE response_id IN (SELECT value FROM json_each(?)) ORDER BY response_id, kind, position
"""

# (order, cursor) -> comparison of item positions against the cursor's position
_CURSOR_SIDE = {("asc", "after"): ">", ("asc", "before"): "<",
                ("desc", "after"): "<", ("desc", "before"): ">"}
_SQL_ORDER = {"asc": "ASC", "desc": "DESC"}
_REVERSED = {"asc": "desc", "desc": "asc"}


def _row(values: Any) -> codec.ResponseRow:
    return codec.ResponseRow(*values)


class SQLiteStore(SQLiteConversations, SQLiteJobs, ResponseStore):
    """One writer connection plus one reader connection on a WAL-mode SQLite file."""

    def __init__(self, path: str, *, max_history_depth: int = MAX_HISTORY_DEPTH):
        self.path = path
        self.max_history_depth = max_history_depth
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._wlock = asyncio.Lock()
        self._rlock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        if self._w is not None:
            return
        memory = self.path == ":memory:"
        if not memory:
            await asyncio.to_thread(_ensure_parent, self.path)
        try:
            self._w = await self._connect()
            await self._migrate()
            # ":memory:" is private to its connection: the writer serves reads too.
            self._r = self._w if memory else await self._connect()
        except BaseException:
            await self.close()
            raise
        if memory:
            self._rlock = self._wlock

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)  # we issue BEGIN
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path!r}: {exc}") from None
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL survives process crashes; a power cut may lose the last commits.
            await conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            await conn.close()
            raise StoreError(f"cannot open SQLite store {self.path!r}: {exc}") from None
        return conn

    async def _migrate(self) -> None:
        await self._w.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
        await self._write(self._apply_migrations)

    async def _apply_migrations(self, conn: aiosqlite.Connection) -> None:
        applied = {v for (v,) in await conn.execute_fetchall("SELECT version FROM schema_migrations")}
        newest = max(MIGRATIONS)
        if applied and max(applied) > newest:
            raise StoreError(
                f"SQLite store {self.path!r} has schema migration {max(applied)}, newer than "
                f"this gateway knows ({newest}); upgrade the gateway"
            )
        for version in sorted(set(MIGRATIONS) - applied):
            for statement in MIGRATIONS[version]:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (version, int(time.time())),
            )

    async def close(self) -> None:
        conns = {id(c): c for c in (self._r, self._w) if c is not None}
        self._w = self._r = None
        for conn in conns.values():
            await conn.close()

    # -- transactions ------------------------------------------------------------
    async def _write(self, body: Callable[[aiosqlite.Connection], Awaitable[Any]]) -> Any:
        return await self._txn(self._w, self._wlock, "BEGIN IMMEDIATE", body)

    async def _read(self, body: Callable[[aiosqlite.Connection], Awaitable[Any]]) -> Any:
        return await self._txn(self._r, self._rlock, "BEGIN", body)

    async def _txn(self, conn, lock, begin: str, body) -> Any:
        if conn is None:
            raise StoreError("response store is not open")

        async def run() -> Any:
            async with lock, _sqlite_errors():
                await conn.execute(begin)
                try:
                    result = await body(conn)
                    await conn.execute("COMMIT")
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
                return result

        task = asyncio.ensure_future(run())
        task.add_done_callback(_retrieve)  # an abandoned (caller-cancelled) task logs nothing
        return await asyncio.shield(task)

    # -- writes --------------------------------------------------------------------
    async def save(self, record: StoredResponse) -> None:
        enc = await self._encoded(record)
        await self._write(lambda conn: self._write_record(conn, record, enc))

    @staticmethod
    async def _encoded(record: StoredResponse) -> codec.EncodedRecord:
        return await asyncio.to_thread(codec.encode_record, record)

    @staticmethod
    async def _write_record(conn: aiosqlite.Connection, record: StoredResponse,
                            enc: codec.EncodedRecord, *, if_absent: bool = False) -> None:
        """The body of ``save`` (``if_absent``: only when the id is new), for use inside
        another write transaction too."""
        cur = await conn.execute(_INSERT_NEW if if_absent else _UPSERT, (
            record.id, record.tenant, record.created_at, record.status,
            record.previous_response_id, record.schema_version, enc.payload,
        ))
        if cur.rowcount != 1:
            if if_absent:
                return
            raise StoreError(f"response id {record.id!r} already belongs to another tenant")
        await conn.execute("DELETE FROM items WHERE response_id = ?", (record.id,))
        await conn.executemany(
            "INSERT INTO items (response_id, kind, position, item_id, payload) "
            "VALUES (?, ?, ?, ?, ?)",
            [(record.id, codec.KIND_INPUT, *r) for r in enc.inputs]
            + [(record.id, codec.KIND_OUTPUT, *r) for r in enc.outputs],
        )

    async def delete(self, response_id: str, tenant: str) -> bool:
        if not codec.encodable(response_id, tenant):  # sqlite3 cannot even bind it
            return False
        async def body(conn: aiosqlite.Connection) -> bool:
            cur = await conn.execute(
                "DELETE FROM responses WHERE id = ? AND tenant = ?", (response_id, tenant)
            )
            if cur.rowcount == 0:
                return False
            for table in DEPENDENT_TABLES:  # no foreign keys here: delete what hangs off it
                await conn.execute(f"DELETE FROM {table} WHERE response_id = ?", (response_id,))
            return True

        return await self._write(body)

    async def purge_older_than(self, ts: int) -> int:
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise StoreError(f"purge_older_than needs an int timestamp, got {ts!r}")

        async def batch(conn: aiosqlite.Connection) -> int:
            rows = await conn.execute_fetchall(
                "SELECT id FROM responses WHERE created_at < ? LIMIT ?", (ts, PURGE_BATCH)
            )
            ids = json.dumps([r[0] for r in rows])
            for table in DEPENDENT_TABLES:
                await conn.execute(
                    f"DELETE FROM {table} WHERE response_id IN (SELECT value FROM json_each(?))",
                    (ids,))
            await conn.execute(
                "DELETE FROM responses WHERE id IN (SELECT value FROM json_each(?))", (ids,)
            )
            return len(rows)

        total = 0
        while True:  # small transactions, so requests are not held up behind one huge purge
            n = await self._write(batch)
            total += n
            if n < PURGE_BATCH:
                return total

    # -- reads ---------------------------------------------------------------------
    async def get(self, response_id: str, tenant: str) -> StoredResponse | None:
        if not codec.encodable(response_id, tenant):  # sqlite3 cannot even bind it
            return None
        async def body(conn: aiosqlite.Connection):
            rows = await conn.execute_fetchall(
                f"SELECT {_RESPONSE_COLS} FROM responses WHERE id = ? AND tenant = ?",
                (response_id, tenant),
            )
            if not rows:
                return None
            items = await conn.execute_fetchall(_ITEMS_OF, (json.dumps([response_id]),))
            return _row(rows[0]), items

        found = await self._read(body)
        if found is None:
            return None
        return (await asyncio.to_thread(codec.decode_chain, [found[0]], found[1]))[0]

    async def history(self, response_id: str, tenant: str) -> list[dict] | None:
        if not codec.encodable(response_id, tenant):  # sqlite3 cannot even bind it
            return None
        limit = self.max_history_depth

        async def body(conn: aiosqlite.Connection):
            rows = [_row(r) for r in await conn.execute_fetchall(
                _CHAIN, (response_id, tenant, tenant, limit))]
            if not rows or rows[0].previous_response_id is not None:
                return rows, []  # missing (or too deep: decided below)
            ids = json.dumps([r.id for r in rows])
            return rows, await conn.execute_fetchall(_ITEMS_OF, (ids,))

        rows, items = await self._read(body)
        if len(rows) > limit:
            raise HistoryTooDeep(
                f"{response_id}: previous_response_id chain is longer than {limit} "
                "responses (or loops)"
            )
        if not rows or rows[0].previous_response_id is not None:
            return None
        records = await asyncio.to_thread(codec.decode_chain, rows, items)
        return [item for rec in records for item in rec.input_items + rec.response.get("output", [])]

    async def list_input_items(
        self, response_id: str, tenant: str, *, after: str | None = None,
        before: str | None = None, limit: int = 20, order: str = "desc",
    ) -> ItemPage | None:
        check_page_args(limit, order)
        if not codec.encodable(response_id, tenant):  # sqlite3 cannot even bind it
            return None
        walk_order, reverse = (_REVERSED[order], True) if before and not after else (order, False)

        async def body(conn: aiosqlite.Connection):
            rows = await conn.execute_fetchall(
                "SELECT schema_version FROM responses WHERE id = ? AND tenant = ?",
                (response_id, tenant),
            )
            if not rows:
                return None
            codec.check_version(rows[0][0], response_id)
            where, args = ["response_id = ?", "kind = 'input'"], [response_id]
            for name, cursor in (("after", after), ("before", before)):
                if cursor is None:
                    continue
                if not codec.encodable(cursor):
                    return []  # no item can have this id: empty page, as for an unknown one
                pos = await conn.execute_fetchall(
                    "SELECT position FROM items WHERE item_id = ? AND response_id = ? "
                    "AND kind = 'input'", (cursor, response_id))
                if not pos:
                    return []  # unknown cursor: empty page
                where.append(f"position {_CURSOR_SIDE[(order, name)]} ?")
                args.append(pos[0][0])
            return await conn.execute_fetchall(
                f"SELECT item_id, payload FROM items WHERE {' AND '.join(where)} "
                f"ORDER BY position {_SQL_ORDER[walk_order]} LIMIT ?", (*args, limit + 1))

        rows = await self._read(body)
        if rows is None:
            return None
        has_more = len(rows) > limit
        rows = list(rows[:limit])
        if reverse:
            rows.reverse()
        data = await asyncio.to_thread(codec.decode_items, rows, response_id)
        return ItemPage(data=data, first_id=data[0]["id"] if data else None,
                        last_id=data[-1]["id"] if data else None, has_more=has_more)


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


def _ensure_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the directory of SQLite store {path!r}: {exc}") from None


@contextlib.asynccontextmanager
async def _sqlite_errors() -> AsyncIterator[None]:
    """Driver errors become StoreError, so callers handle one exception family."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite store error: {exc}") from exc
