"""Conversations and their items, in SQL (protocol: ``base.ConversationRecords``).

A mixin of ``sql.SQLStore``, whose transactions it uses. An append moves the
conversation's ``next_position`` on with one ``UPDATE ... RETURNING``, which row-locks the
conversation in PostgreSQL (and runs alone under SQLite's single writer) until commit, so
concurrent appends to one conversation serialise and their positions never collide or
interleave. Deleting a conversation deletes its items in the same transaction.
"""
from __future__ import annotations

import asyncio

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from . import codec
from .base import ConversationRecords
from .codec import storable
from .records import DuplicateItemId, ItemPage, StoredConversation, StoreError, check_page_args
from .schema import conversation_items as citems
from .schema import conversations as convs
from .schema import idempotency_keys
from .transactions import SQLBase

_CONV = (convs.c.id, convs.c.tenant, convs.c.created_at, convs.c.metadata)
_ITEM = (citems.c.item_id, citems.c.payload)


def _own(conversation_id: str, tenant: str):
    return (convs.c.id == conversation_id) & (convs.c.tenant == tenant)


def _exists(conversation_id: str, tenant: str):
    return select(convs.c.id).where(_own(conversation_id, tenant))


async def _insert_items(conn: AsyncConnection, conversation_id: str, first: int,
                        rows: list[tuple[str, str]]) -> None:
    if not rows:
        return
    taken = (await conn.execute(select(citems.c.item_id).where(
        citems.c.conversation_id == conversation_id, citems.c.item_id.in_([i for i, _ in rows])))).first()
    if taken is not None:
        raise DuplicateItemId(taken.item_id)
    await conn.execute(insert(citems), [dict(conversation_id=conversation_id, position=first + n, item_id=item_id,
                                             payload=payload) for n, (item_id, payload) in enumerate(rows)])


class SQLConversations(SQLBase, ConversationRecords):
    async def create_conversation(self, conversation: StoredConversation, items: list[dict]) -> None:
        metadata = codec.check_conversation(conversation)
        rows = await asyncio.to_thread(codec.encode_items, items, conversation.id)
        new = self.insert(convs).values(
            id=conversation.id, tenant=conversation.tenant, created_at=conversation.created_at,
            updated_at=conversation.created_at, next_position=len(rows), metadata=metadata,
        ).on_conflict_do_nothing(index_elements=[convs.c.id])

        async def body(conn: AsyncConnection) -> None:
            if (await conn.execute(new)).rowcount != 1:
                raise StoreError(f"conversation id {conversation.id!r} already exists")
            await _insert_items(conn, conversation.id, 0, rows)

        await self._write(body)

    async def get_conversation(self, conversation_id: str, tenant: str) -> StoredConversation | None:
        if not storable(conversation_id, tenant):
            return None
        rows = await self._rows(select(*_CONV).where(_own(conversation_id, tenant)))
        return codec.decode_conversation(rows[0]) if rows else None

    async def update_conversation(self, conversation_id: str, tenant: str, metadata: dict,
                                  now: int) -> StoredConversation | None:
        encoded = codec.encode_metadata(metadata, conversation_id)
        if not storable(conversation_id, tenant):
            return None
        rows = await self._rows(update(convs).where(_own(conversation_id, tenant))
                                .values(metadata=encoded, updated_at=now).returning(*_CONV), write=True)
        return codec.decode_conversation(rows[0]) if rows else None

    async def delete_conversation(self, conversation_id: str, tenant: str) -> bool:
        if not storable(conversation_id, tenant):
            return False

        async def body(conn: AsyncConnection) -> bool:
            if (await conn.execute(delete(convs).where(_own(conversation_id, tenant)))).rowcount == 0:
                return False
            await conn.execute(delete(citems).where(citems.c.conversation_id == conversation_id))
            return True

        return await self._write(body)

    async def append_conversation_items(self, conversation_id: str, tenant: str, items: list[dict],
                                        now: int) -> bool:
        rows = await asyncio.to_thread(codec.encode_items, items, conversation_id)
        if not storable(conversation_id, tenant):
            return False
        advance = (update(convs).where(_own(conversation_id, tenant))
                   .values(next_position=convs.c.next_position + len(rows), updated_at=now)
                   .returning(convs.c.next_position))

        async def body(conn: AsyncConnection) -> bool:
            end = (await conn.execute(advance)).scalar()
            if end is None:
                return False
            await _insert_items(conn, conversation_id, end - len(rows), rows)
            return True

        return await self._write(body)

    async def list_conversation_items(self, conversation_id: str, tenant: str, *, after: str | None = None,
                                      limit: int = 20, order: str = "desc") -> ItemPage | None:
        check_page_args(limit, order)
        if not storable(conversation_id, tenant):
            return None
        mine = citems.c.conversation_id == conversation_id

        async def body(conn: AsyncConnection):
            if (await conn.execute(_exists(conversation_id, tenant))).first() is None:
                return None
            where = [mine]
            if after is not None:
                position = None if not storable(after) else (await conn.execute(
                    select(citems.c.position).where(mine, citems.c.item_id == after))).scalar()
                if position is None:
                    return []  # unknown cursor: empty page
                where.append(citems.c.position > position if order == "asc" else citems.c.position < position)
            column = citems.c.position.asc() if order == "asc" else citems.c.position.desc()
            return (await conn.execute(select(*_ITEM).where(*where).order_by(column).limit(limit + 1))).all()

        rows = await self._read(body)
        if rows is None:
            return None
        data = await asyncio.to_thread(codec.decode_items, rows[:limit], conversation_id)
        return ItemPage.of(data, len(rows) > limit)

    async def conversation_items(self, conversation_id: str, tenant: str) -> list[dict] | None:
        if not storable(conversation_id, tenant):
            return None

        async def body(conn: AsyncConnection):
            if (await conn.execute(_exists(conversation_id, tenant))).first() is None:
                return None
            return (await conn.execute(select(*_ITEM).where(citems.c.conversation_id == conversation_id)
                                       .order_by(citems.c.position))).all()

        rows = await self._read(body)
        return None if rows is None else await asyncio.to_thread(codec.decode_items, rows, conversation_id)

    async def get_conversation_item(self, conversation_id: str, item_id: str, tenant: str) -> dict | None:
        if not storable(conversation_id, tenant, item_id):
            return None
        rows = await self._rows(select(*_ITEM).join(convs, convs.c.id == citems.c.conversation_id)
                                .where(_own(conversation_id, tenant), citems.c.item_id == item_id))
        return codec.decode_items(rows, conversation_id)[0] if rows else None

    async def delete_conversation_item(self, conversation_id: str, item_id: str, tenant: str) -> bool | None:
        if not storable(conversation_id, tenant):
            return None

        async def body(conn: AsyncConnection) -> bool | None:
            if (await conn.execute(_exists(conversation_id, tenant))).first() is None:
                return None
            if not storable(item_id):
                return False
            return (await conn.execute(delete(citems).where(
                citems.c.conversation_id == conversation_id, citems.c.item_id == item_id))).rowcount > 0

        return await self._write(body)

    async def purge_conversations_older_than(self, ts: int) -> int:
        codec.check_int(ts, "purge_conversations_older_than's timestamp")

        async def body(conn: AsyncConnection) -> int:
            idle = select(convs.c.id).where(convs.c.updated_at < ts)
            await conn.execute(delete(citems).where(citems.c.conversation_id.in_(idle)))
            gone = (await conn.execute(delete(convs).where(convs.c.updated_at < ts))).rowcount
            keys = await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.created_at < ts))
            return gone + keys.rowcount

        return await self._write(body)
