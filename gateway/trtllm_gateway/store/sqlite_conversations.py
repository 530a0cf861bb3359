"""Conversations and idempotency keys of the SQLite store (protocol in ``store/base.py``).

Tables (:data:`CONVERSATIONS_MIGRATION`, rows described in ``conv_codec.py``):
``conversations``, ``conversation_items`` and ``idempotency_keys``. Every write runs in one
``BEGIN IMMEDIATE`` transaction of ``SQLiteStore._write`` (one writer at a time, across
processes too), so an append reads ``next_position`` and moves it on with no other append
in between, and a key claim is a check-then-insert nobody can interleave. Reads run in the
reader connection's snapshot. SQLite enforces no foreign keys here: deleting a
conversation deletes its items explicitly.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from . import conv_codec
from .base import DuplicateItemId, IdempotencyRecord, ItemPage, StoredConversation, StoreError, check_page_args

if TYPE_CHECKING:
    import aiosqlite

CONVERSATIONS_MIGRATION: tuple[str, ...] = (
    """CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        next_position INTEGER NOT NULL,
        metadata TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX conversations_updated_at ON conversations(updated_at)",
    """CREATE TABLE conversation_items (
        conversation_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        item_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (conversation_id, position)
    ) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX conversation_items_item_id ON conversation_items(conversation_id, item_id)",
    """CREATE TABLE idempotency_keys (
        tenant TEXT NOT NULL,
        key TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('running', 'done')),
        response TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX idempotency_keys_created_at ON idempotency_keys(created_at)",
)

_CONV_COLS = "id, tenant, created_at, metadata"
_OWNED = "SELECT 1 FROM conversations WHERE id = ? AND tenant = ?"
# (order, cursor) -> comparison of positions against the cursor's; order -> SQL
_AFTER = {"asc": ">", "desc": "<"}


def _ok(*keys: str) -> bool:
    """False for keys no row can have (NUL, lone surrogates: sqlite3 cannot even bind them)."""
    return all(conv_codec.plain_key(k) or k == "" for k in keys)
_SQL_ORDER = {"asc": "ASC", "desc": "DESC"}


async def _insert_items(conn: "aiosqlite.Connection", conversation_id: str, first: int,
                        rows: list[tuple[str, str]]) -> None:
    if not rows:
        return
    ids = [item_id for item_id, _ in rows]
    marks = ",".join("?" * len(ids))
    taken = await conn.execute_fetchall(
        f"SELECT item_id FROM conversation_items WHERE conversation_id = ? AND item_id IN ({marks})",
        (conversation_id, *ids))
    if taken:
        raise DuplicateItemId(taken[0][0])
    await conn.executemany(
        "INSERT INTO conversation_items (conversation_id, position, item_id, payload) VALUES (?, ?, ?, ?)",
        [(conversation_id, first + n, item_id, payload) for n, (item_id, payload) in enumerate(rows)])


class SQLiteConversations:
    """Mixin of SQLiteStore: uses its ``_read``/``_write`` transactions."""

    async def create_conversation(self, conversation: StoredConversation, items: list[dict]) -> None:
        metadata = conv_codec.check_conversation(conversation)
        rows = await asyncio.to_thread(conv_codec.encode_items, items, conversation.id)

        async def body(conn: "aiosqlite.Connection") -> None:
            if await conn.execute_fetchall("SELECT 1 FROM conversations WHERE id = ?", (conversation.id,)):
                raise StoreError(f"conversation id {conversation.id!r} already exists")
            await conn.execute(
                "INSERT INTO conversations (id, tenant, created_at, updated_at, next_position, metadata) "
                "VALUES (?, ?, ?, ?, ?, ?)", (conversation.id, conversation.tenant, conversation.created_at,
                                               conversation.created_at, len(rows), metadata))
            await _insert_items(conn, conversation.id, 0, rows)

        await self._write(body)

    async def get_conversation(self, conversation_id: str, tenant: str) -> StoredConversation | None:
        if not _ok(conversation_id, tenant):
            return None
        rows = await self._read(lambda conn: conn.execute_fetchall(
            f"SELECT {_CONV_COLS} FROM conversations WHERE id = ? AND tenant = ?", (conversation_id, tenant)))
        return conv_codec.decode_conversation(rows[0]) if rows else None

    async def update_conversation(self, conversation_id: str, tenant: str, metadata: dict,
                                  now: int) -> StoredConversation | None:
        encoded = conv_codec.encode_metadata(metadata, conversation_id)
        if not _ok(conversation_id, tenant):
            return None

        async def body(conn: "aiosqlite.Connection"):
            await conn.execute("UPDATE conversations SET metadata = ?, updated_at = ? WHERE id = ? AND tenant = ?",
                               (encoded, now, conversation_id, tenant))
            return await conn.execute_fetchall(
                f"SELECT {_CONV_COLS} FROM conversations WHERE id = ? AND tenant = ?", (conversation_id, tenant))

        rows = await self._write(body)
        return conv_codec.decode_conversation(rows[0]) if rows else None

    async def delete_conversation(self, conversation_id: str, tenant: str) -> bool:
        if not _ok(conversation_id, tenant):
            return False

        async def body(conn: "aiosqlite.Connection") -> bool:
            cur = await conn.execute("DELETE FROM conversations WHERE id = ? AND tenant = ?",
                                     (conversation_id, tenant))
            if cur.rowcount == 0:
                return False
            await conn.execute("DELETE FROM conversation_items WHERE conversation_id = ?", (conversation_id,))
            return True

        return await self._write(body)

    async def append_conversation_items(self, conversation_id: str, tenant: str, items: list[dict],
                                        now: int) -> bool:
        rows = await asyncio.to_thread(conv_codec.encode_items, items, conversation_id)
        if not _ok(conversation_id, tenant):
            return False

        async def body(conn: "aiosqlite.Connection") -> bool:
            found = await conn.execute_fetchall(
                "SELECT next_position FROM conversations WHERE id = ? AND tenant = ?", (conversation_id, tenant))
            if not found:
                return False
            await _insert_items(conn, conversation_id, found[0][0], rows)
            await conn.execute("UPDATE conversations SET next_position = ?, updated_at = ? WHERE id = ?",
                               (found[0][0] + len(rows), now, conversation_id))
            return True

        return await self._write(body)

    async def list_conversation_items(self, conversation_id: str, tenant: str, *, after: str | None = None,
                                      limit: int = 20, order: str = "desc") -> ItemPage | None:
        check_page_args(limit, order)
        if not _ok(conversation_id, tenant):
            return None

        async def body(conn: "aiosqlite.Connection"):
            if not await conn.execute_fetchall(_OWNED, (conversation_id, tenant)):
                return None
            where, args = "conversation_id = ?", [conversation_id]
            if after is not None:
                pos = _ok(after) and await conn.execute_fetchall(
                    "SELECT position FROM conversation_items WHERE conversation_id = ? AND item_id = ?",
                    (conversation_id, after))
                if not pos:
                    return []  # unknown cursor: empty page
                where += f" AND position {_AFTER[order]} ?"
                args.append(pos[0][0])
            return await conn.execute_fetchall(
                f"SELECT item_id, payload FROM conversation_items WHERE {where} "
                f"ORDER BY position {_SQL_ORDER[order]} LIMIT ?", (*args, limit + 1))

        rows = await self._read(body)
        if rows is None:
            return None
        data = await asyncio.to_thread(conv_codec.decode_items, list(rows[:limit]), conversation_id)
        return ItemPage(data=data, first_id=data[0]["id"] if data else None,
                        last_id=data[-1]["id"] if data else None, has_more=len(rows) > limit)

    async def conversation_items(self, conversation_id: str, tenant: str) -> list[dict] | None:
        if not _ok(conversation_id, tenant):
            return None

        async def body(conn: "aiosqlite.Connection"):
            if not await conn.execute_fetchall(_OWNED, (conversation_id, tenant)):
                return None
            return await conn.execute_fetchall(
                "SELECT item_id, payload FROM conversation_items WHERE conversation_id = ? ORDER BY position",
                (conversation_id,))

        rows = await self._read(body)
        if rows is None:
            return None
        return await asyncio.to_thread(conv_codec.decode_items, rows, conversation_id)

    async def get_conversation_item(self, conversation_id: str, item_id: str, tenant: str) -> dict | None:
        if not _ok(conversation_id, tenant, item_id):
            return None
        rows = await self._read(lambda conn: conn.execute_fetchall(
            "SELECT i.item_id, i.payload FROM conversation_items i JOIN conversations c "
            "ON c.id = i.conversation_id WHERE c.id = ? AND c.tenant = ? AND i.item_id = ?",
            (conversation_id, tenant, item_id)))
        return conv_codec.decode_items(rows, conversation_id)[0] if rows else None

    async def delete_conversation_item(self, conversation_id: str, item_id: str, tenant: str) -> bool | None:
        if not _ok(conversation_id, tenant):
            return None

        async def body(conn: "aiosqlite.Connection") -> bool | None:
            if not await conn.execute_fetchall(_OWNED, (conversation_id, tenant)):
                return None
            if not _ok(item_id):
                return False
            cur = await conn.execute("DELETE FROM conversation_items WHERE conversation_id = ? AND item_id = ?",
                                     (conversation_id, item_id))
            return cur.rowcount > 0

        return await self._write(body)

    async def claim_idempotency_key(self, tenant: str, key: str, body_hash: str, now: int,
                                    stale_before: int) -> IdempotencyRecord | None:
        if not _ok(tenant, key, body_hash):
            raise StoreError("idempotency keys may not contain NUL characters or lone surrogates")

        async def body(conn: "aiosqlite.Connection") -> IdempotencyRecord | None:
            rows = await conn.execute_fetchall(
                "SELECT state, body_hash, response, created_at FROM idempotency_keys WHERE tenant = ? AND key = ?",
                (tenant, key))
            if rows and not (rows[0][0] == "running" and rows[0][3] < stale_before):
                return conv_codec.decode_idempotency(rows[0], key)
            await conn.execute(
                "INSERT OR REPLACE INTO idempotency_keys (tenant, key, body_hash, state, response, created_at) "
                "VALUES (?, ?, ?, 'running', NULL, ?)", (tenant, key, body_hash, now))
            return None

        return await self._write(body)

    async def finish_idempotency_key(self, tenant: str, key: str, response: dict) -> None:
        payload = await asyncio.to_thread(conv_codec.dumps, response, f"idempotency key {key!r} response")
        await self._write(lambda conn: conn.execute(
            "UPDATE idempotency_keys SET state = 'done', response = ? WHERE tenant = ? AND key = ?",
            (payload, tenant, key)))

    async def release_idempotency_key(self, tenant: str, key: str) -> None:
        await self._write(lambda conn: conn.execute(
            "DELETE FROM idempotency_keys WHERE tenant = ? AND key = ? AND state = 'running'", (tenant, key)))

    async def purge_conversations_older_than(self, ts: int) -> int:
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise StoreError(f"purge_conversations_older_than needs an int timestamp, got {ts!r}")

        async def body(conn: "aiosqlite.Connection") -> int:
            await conn.execute("DELETE FROM conversation_items WHERE conversation_id IN "
                               "(SELECT id FROM conversations WHERE updated_at < ?)", (ts,))
            convs = await conn.execute("DELETE FROM conversations WHERE updated_at < ?", (ts,))
            keys = await conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (ts,))
            return convs.rowcount + keys.rowcount

        return await self._write(body)
