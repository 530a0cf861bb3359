"""Conversations and idempotency keys of the PostgreSQL store (protocol in ``store/base.py``).

Tables (:data:`CONVERSATIONS_MIGRATION`, rows described in ``conv_codec.py``):
``conversations``, ``conversation_items`` (``ON DELETE CASCADE`` from their conversation)
and ``idempotency_keys``.

Concurrency across replicas:

* an append moves the conversation's ``next_position`` on with ``UPDATE ... RETURNING``,
  which row-locks the conversation until commit, so concurrent appends to one conversation
  serialise and their positions never collide or interleave;
* a key claim is ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <stale running claim>``: one
  statement, so of two replicas claiming one key exactly one gets it; the loser reads the
  winner's row.

Ids that no row can hold (NUL, lone surrogates) are answered as absent, never sent.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from . import conv_codec
from .base import DuplicateItemId, IdempotencyRecord, ItemPage, StoredConversation, StoreError, check_page_args

if TYPE_CHECKING:
    import asyncpg

CONVERSATIONS_MIGRATION: tuple[str, ...] = (
    """CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        next_position INTEGER NOT NULL,
        metadata TEXT NOT NULL
    )""",
    "CREATE INDEX conversations_updated_at ON conversations (updated_at)",
    """CREATE TABLE conversation_items (
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        item_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (conversation_id, position),
        UNIQUE (conversation_id, item_id)
    )""",
    """CREATE TABLE idempotency_keys (
        tenant TEXT NOT NULL,
        key TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('running', 'done')),
        response TEXT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (tenant, key)
    )""",
    "CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at)",
)

_CONV_COLS = "id, tenant, created_at, metadata"
_OWNED = "SELECT 1 FROM conversations WHERE id = $1 AND tenant = $2"
_AFTER = {"asc": ">", "desc": "<"}
_SQL_ORDER = {"asc": "ASC", "desc": "DESC"}

_CLAIM = """
INSERT INTO idempotency_keys (tenant, key, body_hash, state, response, created_at)
VALUES ($1, $2, $3, 'running', NULL, $4)
ON CONFLICT (tenant, key) DO UPDATE SET body_hash = EXCLUDED.body_hash, state = 'running',
    response = NULL, created_at = EXCLUDED.created_at
WHERE idempotency_keys.state = 'running' AND idempotency_keys.created_at < $5
RETURNING 1
"""


def _ok(*keys: str) -> bool:
    return all(conv_codec.plain_key(k) or k == "" for k in keys)


async def _insert_items(conn: "asyncpg.Connection", conversation_id: str, first: int,
                        rows: list[tuple[str, str]]) -> None:
    if not rows:
        return
    ids = [item_id for item_id, _ in rows]
    taken = await conn.fetchval("SELECT item_id FROM conversation_items WHERE conversation_id = $1 "
                                "AND item_id = ANY($2::text[]) LIMIT 1", conversation_id, ids)
    if taken is not None:
        raise DuplicateItemId(taken)
    await conn.execute(
        "INSERT INTO conversation_items (conversation_id, position, item_id, payload) "
        "SELECT $1, $2 + t.n - 1, t.item_id, t.payload "
        "FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS t(item_id, payload, n)",
        conversation_id, first, ids, [payload for _, payload in rows])


class PostgresConversations:
    """Mixin of PostgresStore: uses its ``_run`` transactions."""

    async def create_conversation(self, conversation: StoredConversation, items: list[dict]) -> None:
        metadata = conv_codec.check_conversation(conversation)
        rows = await asyncio.to_thread(conv_codec.encode_items, items, conversation.id)

        async def body(conn: "asyncpg.Connection") -> None:
            status = await conn.execute(
                "INSERT INTO conversations (id, tenant, created_at, updated_at, next_position, metadata) "
                "VALUES ($1, $2, $3, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                conversation.id, conversation.tenant, conversation.created_at, len(rows), metadata)
            if status.endswith(" 0"):
                raise StoreError(f"conversation id {conversation.id!r} already exists")
            await _insert_items(conn, conversation.id, 0, rows)

        await self._run("write", body)

    async def get_conversation(self, conversation_id: str, tenant: str) -> StoredConversation | None:
        if not _ok(conversation_id, tenant):
            return None
        row = await self._run("read", lambda conn: conn.fetchrow(
            f"SELECT {_CONV_COLS} FROM conversations WHERE id = $1 AND tenant = $2", conversation_id, tenant))
        return conv_codec.decode_conversation(tuple(row)) if row is not None else None

    async def update_conversation(self, conversation_id: str, tenant: str, metadata: dict,
                                  now: int) -> StoredConversation | None:
        encoded = conv_codec.encode_metadata(metadata, conversation_id)
        if not _ok(conversation_id, tenant):
            return None
        row = await self._run("write", lambda conn: conn.fetchrow(
            f"UPDATE conversations SET metadata = $3, updated_at = $4 WHERE id = $1 AND tenant = $2 "
            f"RETURNING {_CONV_COLS}", conversation_id, tenant, encoded, now))
        return conv_codec.decode_conversation(tuple(row)) if row is not None else None

    async def delete_conversation(self, conversation_id: str, tenant: str) -> bool:
        if not _ok(conversation_id, tenant):
            return False
        status = await self._run("write", lambda conn: conn.execute(  # items go by the cascade
            "DELETE FROM conversations WHERE id = $1 AND tenant = $2", conversation_id, tenant))
        return not status.endswith(" 0")

    async def append_conversation_items(self, conversation_id: str, tenant: str, items: list[dict],
                                        now: int) -> bool:
        rows = await asyncio.to_thread(conv_codec.encode_items, items, conversation_id)
        if not _ok(conversation_id, tenant):
            return False

        async def body(conn: "asyncpg.Connection") -> bool:
            end = await conn.fetchval(  # row-locks the conversation: appends serialise here
                "UPDATE conversations SET next_position = next_position + $3, updated_at = $4 "
                "WHERE id = $1 AND tenant = $2 RETURNING next_position",
                conversation_id, tenant, len(rows), now)
            if end is None:
                return False
            await _insert_items(conn, conversation_id, end - len(rows), rows)
            return True

        return await self._run("write", body)

    async def list_conversation_items(self, conversation_id: str, tenant: str, *, after: str | None = None,
                                      limit: int = 20, order: str = "desc") -> ItemPage | None:
        check_page_args(limit, order)
        if not _ok(conversation_id, tenant):
            return None

        async def body(conn: "asyncpg.Connection"):
            if await conn.fetchval(_OWNED, conversation_id, tenant) is None:
                return None
            where, args = "conversation_id = $1", [conversation_id]
            if after is not None:
                pos = None if not _ok(after) else await conn.fetchval(
                    "SELECT position FROM conversation_items WHERE conversation_id = $1 AND item_id = $2",
                    conversation_id, after)
                if pos is None:
                    return []  # unknown cursor: empty page
                args.append(pos)
                where += f" AND position {_AFTER[order]} $2"
            args.append(limit + 1)
            return await conn.fetch(
                f"SELECT item_id, payload FROM conversation_items WHERE {where} "
                f"ORDER BY position {_SQL_ORDER[order]} LIMIT ${len(args)}", *args)

        rows = await self._run("read", body)
        if rows is None:
            return None
        data = await asyncio.to_thread(conv_codec.decode_items, [tuple(r) for r in rows[:limit]],
                                       conversation_id)
        return ItemPage(data=data, first_id=data[0]["id"] if data else None,
                        last_id=data[-1]["id"] if data else None, has_more=len(rows) > limit)

    async def conversation_items(self, conversation_id: str, tenant: str) -> list[dict] | None:
        if not _ok(conversation_id, tenant):
            return None

        async def body(conn: "asyncpg.Connection"):
            if await conn.fetchval(_OWNED, conversation_id, tenant) is None:
                return None
            return await conn.fetch("SELECT item_id, payload FROM conversation_items "
                                    "WHERE conversation_id = $1 ORDER BY position", conversation_id)

        rows = await self._run("read", body)
        if rows is None:
            return None
        return await asyncio.to_thread(conv_codec.decode_items, [tuple(r) for r in rows],
                                       conversation_id)

    async def get_conversation_item(self, conversation_id: str, item_id: str, tenant: str) -> dict | None:
        if not _ok(conversation_id, tenant, item_id):
            return None
        row = await self._run("read", lambda conn: conn.fetchrow(
            "SELECT i.item_id, i.payload FROM conversation_items i JOIN conversations c "
            "ON c.id = i.conversation_id WHERE c.id = $1 AND c.tenant = $2 AND i.item_id = $3",
            conversation_id, tenant, item_id))
        return conv_codec.decode_items([tuple(row)], conversation_id)[0] if row is not None else None

    async def delete_conversation_item(self, conversation_id: str, item_id: str, tenant: str) -> bool | None:
        if not _ok(conversation_id, tenant):
            return None

        async def body(conn: "asyncpg.Connection") -> bool | None:
            if await conn.fetchval(_OWNED, conversation_id, tenant) is None:
                return None
            if not _ok(item_id):
                return False
            status = await conn.execute("DELETE FROM conversation_items WHERE conversation_id = $1 "
                                        "AND item_id = $2", conversation_id, item_id)
            return not status.endswith(" 0")

        return await self._run("write", body)

    async def claim_idempotency_key(self, tenant: str, key: str, body_hash: str, now: int,
                                    stale_before: int) -> IdempotencyRecord | None:
        if not _ok(tenant, key, body_hash):
            raise StoreError("idempotency keys may not contain NUL characters")

        async def body(conn: "asyncpg.Connection") -> IdempotencyRecord | None:
            if await conn.fetchval(_CLAIM, tenant, key, body_hash, now, stale_before) is not None:
                return None
            row = await conn.fetchrow("SELECT state, body_hash, response, created_at FROM idempotency_keys "
                                      "WHERE tenant = $1 AND key = $2", tenant, key)
            return conv_codec.decode_idempotency(tuple(row), key)

        return await self._run("write", body)

    async def finish_idempotency_key(self, tenant: str, key: str, response: dict) -> None:
        payload = await asyncio.to_thread(conv_codec.dumps, response, f"idempotency key {key!r} response")
        await self._run("write", lambda conn: conn.execute(
            "UPDATE idempotency_keys SET state = 'done', response = $3 WHERE tenant = $1 AND key = $2",
            tenant, key, payload))

    async def release_idempotency_key(self, tenant: str, key: str) -> None:
        await self._run("write", lambda conn: conn.execute(
            "DELETE FROM idempotency_keys WHERE tenant = $1 AND key = $2 AND state = 'running'", tenant, key))

    async def purge_conversations_older_than(self, ts: int) -> int:
        if isinstance(ts, bool) or not isinstance(ts, int) or not -(2**63) <= ts < 2**63:
            raise StoreError(f"purge_conversations_older_than needs an int timestamp, got {ts!r}")

        async def body(conn: "asyncpg.Connection") -> int:
            convs = await conn.execute("DELETE FROM conversations WHERE updated_at < $1", ts)
            keys = await conn.execute("DELETE FROM idempotency_keys WHERE created_at < $1", ts)
            return int(convs.rsplit(" ", 1)[-1]) + int(keys.rsplit(" ", 1)[-1])

        return await self._run("write", body)
