"""PostgreSQL backend of the response store (see ``store/base.py`` for the protocol).

URLs: ``postgresql://user:pass@host:port/db?...`` or ``postgres://...`` (libpq DSN syntax,
parsed by asyncpg; unknown query parameters become server settings).

Layout (migration 1) is the SQLite backend's, row for row, encoded by ``codec.py``:
``responses`` (payload JSON without its output items, kept as TEXT so key order and the
exact bytes survive; ``jsonb`` would reorder keys), ``items`` (one row per input or output
item, ``ON DELETE CASCADE`` from its response) and ``schema_migrations``.

Migrations (``store/migrations/postgres.py``) map a version to its statements. ``open()``
applies the missing ones in one transaction that first takes a ``pg_advisory_xact_lock``,
so gateway replicas starting at once queue on the lock and the later ones find the work
done; DDL is transactional, so a failed migration leaves nothing behind. A database
migrated by a newer gateway is refused rather than misread.

Concurrency: a pool of connections (``min_size``/``max_size``) shared by all requests.
Writes run at READ COMMITTED; ``save`` upserts the response row first, which row-locks the
id, so concurrent saves of one id from any replica serialise and the items never mix.
Reads that touch several statements run in a REPEATABLE READ read-only transaction (one
snapshot). Every transaction runs in a shielded task: a cancelled caller cannot interrupt
it half-way, so a save either completes or leaves the previous state. ``purge_older_than``
deletes in small batches claimed with ``FOR UPDATE SKIP LOCKED``, so replicas purging at
the same time neither block each other nor count a row twice.

Migration 2: a ``background_jobs`` table that replicas claim work from with ``FOR UPDATE
SKIP LOCKED`` (leases recover a crashed replica's jobs) and a ``stream_events`` table of
persisted SSE events replayed by ``starting_after``; both cascade-delete with their
response. The methods are in ``postgres_jobs.py``, the layout in
``store/migrations/postgres.py``.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from . import codec
from .base import (
    MAX_HISTORY_DEPTH,
    HistoryTooDeep,
    InvalidRecord,
    ItemPage,
    ResponseStore,
    StoreError,
    StoredResponse,
    check_page_args,
)
from .migrations.postgres import apply_migrations
from .postgres_conversations import PostgresConversations
from .postgres_jobs import PostgresJobs

PURGE_BATCH = 500
CLOSE_TIMEOUT_S = 10.0
CONNECTION_RETRIES = 1  # per transaction, after the connection was lost
INT64 = range(-(2**63), 2**63)

_RESPONSE_COLS = "id, tenant, created_at, status, previous_response_id, schema_version, payload"

_UPSERT = f"""
INSERT INTO responses ({_RESPONSE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET
    created_at = EXCLUDED.created_at, status = EXCLUDED.status,
    previous_response_id = EXCLUDED.previous_response_id,
    schema_version = EXCLUDED.schema_version, payload = EXCLUDED.payload
WHERE responses.tenant = EXCLUDED.tenant
"""

_INSERT_NEW = f"""
INSERT INTO responses ({_RESPONSE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO NOTHING
"""

# One round trip for all of a response's items.
_INSERT_ITEMS = """
INSERT INTO items (response_id, kind, position, item_id, payload)
SELECT $1, t.kind, t.position, t.item_id, t.payload
FROM unnest($2::text[], $3::int[], $4::text[], $5::text[]) AS t(kind, position, item_id, payload)
"""

# Walks previous_response_id from the newest response; depth bounds long or cyclic chains.
_CHAIN = f"""
WITH RECURSIVE chain (id, prev, depth) AS (
    SELECT id, previous_response_id, 0 FROM responses WHERE id = $1 AND tenant = $2
    UNION ALL
    SELECT r.id, r.previous_response_id, chain.depth + 1
    FROM responses r JOIN chain ON r.id = chain.prev
    WHERE r.tenant = $2 AND chain.depth < $3
)
SELECT {", ".join("r." + c.strip() for c in _RESPONSE_COLS.split(","))}
FROM chain JOIN responses r ON r.id = chain.id ORDER BY chain.depth DESC
"""

_ITEMS_OF = """
SELECT response_id, kind, item_id, position, payload FROM items
WHERE response_id = ANY($1::text[]) ORDER BY response_id, kind, position
"""

_PURGE = """
DELETE FROM responses WHERE id IN (
    SELECT id FROM responses WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED
)
"""

# (order, cursor) -> comparison of item positions against the cursor's position
_CURSOR_SIDE = {("asc", "after"): ">", ("asc", "before"): "<",
                ("desc", "after"): "<", ("desc", "before"): ">"}
_SQL_ORDER = {"asc": "ASC", "desc": "DESC"}
_REVERSED = {"asc": "desc", "desc": "asc"}

# Transaction kinds: write (default READ COMMITTED) or a read-only snapshot.
_TXN = {"write": {}, "read": {"isolation": "repeatable_read", "readonly": True}}

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
_CONNECTION_LOST = (asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError,
                    asyncpg.CannotConnectNowError, ConnectionError)


class PostgresStore(PostgresConversations, PostgresJobs, ResponseStore):
    """A response store on a PostgreSQL database, through an asyncpg connection pool."""

    def __init__(self, url: str, *, max_history_depth: int = MAX_HISTORY_DEPTH,
                 min_size: int = 1, max_size: int = 10, connect_timeout: float = 10.0,
                 command_timeout: float | None = 60.0, statement_cache_size: int = 100):
        # statement_cache_size=0 is needed behind PgBouncer in transaction mode.
        self.url = url
        self.max_history_depth = max_history_depth
        self._pool_options = dict(
            min_size=min_size, max_size=max_size, timeout=connect_timeout,
            command_timeout=command_timeout, statement_cache_size=statement_cache_size,
        )
        self._pool: asyncpg.Pool | None = None

    # -- lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        where = redact(self.url)
        try:
            pool = await asyncpg.create_pool(self.url, **self._pool_options)
        except (*_DRIVER_ERRORS, ValueError) as exc:  # ValueError: a malformed DSN
            raise StoreError(f"cannot open PostgreSQL store {where}: {_describe(exc)}") from None
        self._pool = pool
        try:
            await self._run("write", lambda conn: apply_migrations(conn, redact(self.url)))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:  # waits for in-flight (shielded) transactions to finish and release
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
        except (asyncio.TimeoutError, *_DRIVER_ERRORS):
            pool.terminate()

    # -- transactions ------------------------------------------------------------
    async def _run(self, kind: str, body: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        pool = self._pool
        if pool is None:
            raise StoreError("response store is not open")

        async def run() -> Any:
            async with _pg_errors():
                for attempt in range(CONNECTION_RETRIES + 1):
                    try:
                        async with pool.acquire() as conn, conn.transaction(**_TXN[kind]):
                            return await body(conn)
                    except _CONNECTION_LOST:
                        # A pooled connection the server dropped (restart, failover,
                        # pg_terminate_backend): acquire() reconnects. Re-running is safe as
                        # every body is idempotent in effect (save writes a whole state);
                        # only a delete whose COMMIT reply was lost then reports False.
                        if attempt == CONNECTION_RETRIES:
                            raise

        task = asyncio.ensure_future(run())
        task.add_done_callback(_retrieve)  # an abandoned (caller-cancelled) task logs nothing
        return await asyncio.shield(task)

    # -- writes --------------------------------------------------------------------
    async def save(self, record: StoredResponse) -> None:
        enc = await self._encoded(record)
        await self._run("write", lambda conn: self._write_record(conn, record, enc))

    @staticmethod
    async def _encoded(record: StoredResponse) -> codec.EncodedRecord:
        return await asyncio.to_thread(_encode, record)

    @staticmethod
    async def _write_record(conn: asyncpg.Connection, record: StoredResponse,
                            enc: codec.EncodedRecord, *, if_absent: bool = False) -> None:
        """The body of ``save`` (``if_absent``: only when the id is new), for use inside
        another write transaction too."""
        items = [(codec.KIND_INPUT, *r) for r in enc.inputs] + [
            (codec.KIND_OUTPUT, *r) for r in enc.outputs]
        status = await conn.execute(_INSERT_NEW if if_absent else _UPSERT, record.id, record.tenant,
                                    record.created_at, record.status, record.previous_response_id,
                                    record.schema_version, enc.payload)
        if _count(status) != 1:
            if if_absent:
                return
            raise StoreError(f"response id {record.id!r} already belongs to another tenant")
        await conn.execute("DELETE FROM items WHERE response_id = $1", record.id)
        if items:
            kinds, positions, item_ids, payloads = map(list, zip(*items))
            await conn.execute(_INSERT_ITEMS, record.id, kinds, positions, item_ids, payloads)

    async def delete(self, response_id: str, tenant: str) -> bool:
        if not _lookupable(response_id, tenant):
            return False

        async def body(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(  # items go with it (ON DELETE CASCADE)
                "DELETE FROM responses WHERE id = $1 AND tenant = $2", response_id, tenant)
            return _count(status) > 0

        return await self._run("write", body)

    async def purge_older_than(self, ts: int) -> int:
        if isinstance(ts, bool) or not isinstance(ts, int) or ts not in INT64:
            raise StoreError(f"purge_older_than needs an int timestamp, got {ts!r}")

        async def batch(conn: asyncpg.Connection) -> int:
            return _count(await conn.execute(_PURGE, ts, PURGE_BATCH))

        total = 0
        while True:  # small transactions, so requests are not held up behind one huge purge
            n = await self._run("write", batch)
            total += n
            if n < PURGE_BATCH:  # also when the rest is locked by another purger: next run
                return total

    # -- reads ---------------------------------------------------------------------
    async def get(self, response_id: str, tenant: str) -> StoredResponse | None:
        if not _lookupable(response_id, tenant):
            return None

        async def body(conn: asyncpg.Connection):
            row = await conn.fetchrow(
                f"SELECT {_RESPONSE_COLS} FROM responses WHERE id = $1 AND tenant = $2",
                response_id, tenant)
            if row is None:
                return None
            return codec.ResponseRow(*row), await conn.fetch(_ITEMS_OF, [response_id])

        found = await self._run("read", body)
        if found is None:
            return None
        return (await asyncio.to_thread(codec.decode_chain, [found[0]], found[1]))[0]

    async def history(self, response_id: str, tenant: str) -> list[dict] | None:
        if not _lookupable(response_id, tenant):
            return None
        limit = self.max_history_depth

        async def body(conn: asyncpg.Connection):
            rows = [codec.ResponseRow(*r) for r in await conn.fetch(
                _CHAIN, response_id, tenant, limit)]
            if not rows or rows[0].previous_response_id is not None:
                return rows, []  # missing (or too deep: decided below)
            return rows, await conn.fetch(_ITEMS_OF, [r.id for r in rows])

        rows, items = await self._run("read", body)
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
        if not _lookupable(response_id, tenant):
            return None
        walk_order, reverse = (_REVERSED[order], True) if before and not after else (order, False)
        cursors = [(name, c) for name, c in (("after", after), ("before", before)) if c is not None]

        async def body(conn: asyncpg.Connection):
            version = await conn.fetchval(
                "SELECT schema_version FROM responses WHERE id = $1 AND tenant = $2",
                response_id, tenant)
            if version is None:
                return None
            codec.check_version(version, response_id)
            where, args = ["response_id = $1", "kind = 'input'"], [response_id]
            for name, cursor in cursors:
                pos = None if not _lookupable(cursor) else await conn.fetchval(
                    "SELECT position FROM items WHERE response_id = $1 AND kind = 'input' "
                    "AND item_id = $2", response_id, cursor)
                if pos is None:
                    return []  # unknown cursor: empty page
                args.append(pos)
                where.append(f"position {_CURSOR_SIDE[(order, name)]} ${len(args)}")
            args.append(limit + 1)
            return await conn.fetch(
                f"SELECT item_id, payload FROM items WHERE {' AND '.join(where)} "
                f"ORDER BY position {_SQL_ORDER[walk_order]} LIMIT ${len(args)}", *args)

        rows = await self._run("read", body)
        if rows is None:
            return None
        has_more = len(rows) > limit
        rows = [tuple(r) for r in rows[:limit]]
        if reverse:
            rows.reverse()
        data = await asyncio.to_thread(codec.decode_items, rows, response_id)
        return ItemPage(data=data, first_id=data[0]["id"] if data else None,
                        last_id=data[-1]["id"] if data else None, has_more=has_more)


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


def _encode(record: StoredResponse) -> codec.EncodedRecord:
    """codec.encode_record plus what PostgreSQL cannot hold but the codec allows: NUL in
    text columns, out-of-range ints. Runs in a thread. Raises InvalidRecord."""
    enc = codec.encode_record(record)
    if record.created_at not in INT64:
        raise InvalidRecord(f"{record.id!r}: created_at {record.created_at} is out of range")
    keys = [record.id, record.tenant, record.previous_response_id or ""]
    keys += [item_id or "" for _, item_id, _ in enc.inputs + enc.outputs]
    if any("\x00" in k for k in keys):
        raise InvalidRecord(f"{record.id!r}: ids and tenant may not contain NUL characters")
    return enc


def _lookupable(*keys: str) -> bool:
    """False for ids no row can have (NUL, lone surrogates), which PostgreSQL would reject."""
    return codec.encodable(*keys) and all("\x00" not in k for k in keys)


def _count(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 1`` or ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


@contextlib.asynccontextmanager
async def _pg_errors() -> AsyncIterator[None]:
    """Driver errors become StoreError, so callers handle one exception family."""
    try:
        yield
    except _DRIVER_ERRORS as exc:
        raise StoreError(f"PostgreSQL store error: {_describe(exc)}") from exc
