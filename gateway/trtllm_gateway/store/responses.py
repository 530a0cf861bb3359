"""Stored responses and their items, in SQL (protocol: ``base.ResponseRecords``).

A mixin of ``sql.SQLStore``, whose transactions it uses. ``save`` is one upsert of the
response row (``ON CONFLICT (id) DO UPDATE ... WHERE`` the tenant matches), then its items
replaced: in PostgreSQL the upsert row-locks the id, so concurrent saves of one id from any
replica serialise and their items never mix; in SQLite the single writer does the same.
``history`` walks ``previous_response_id`` in one recursive query, bounded by
``max_history_depth`` (long or cyclic chains), then reads every item of the chain at once.
``find_items`` reads items by ``item_id`` (indexed) joined to their response for the
tenant, up to :data:`FIND_BATCH` ids per query (one query for any list a request can hold
at the default limits), then the ids still missing among the tenant's conversation items,
all in one read transaction.
``purge_older_than`` deletes in batches claimed ``FOR UPDATE SKIP LOCKED``, so replicas
purging at once neither block each other nor count a row twice.
"""
from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Integer, bindparam, delete, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from . import codec
from .base import ResponseRecords
from .codec import KIND_INPUT, storable
from .records import HistoryTooDeep, ItemPage, StoredResponse, StoreError, check_page_args
from .schema import RESPONSE_DEPENDENTS, conversations, items, responses
from .schema import conversation_items as citems
from .transactions import SQLBase

# (order, cursor) -> how item positions compare with the cursor's position
_CURSOR_SIDE = {("asc", "after"): operator.gt, ("asc", "before"): operator.lt,
                ("desc", "after"): operator.lt, ("desc", "before"): operator.gt}
_REVERSED = {"asc": "desc", "desc": "asc"}
# what a replace changes (not id or tenant)
_REPLACED = ("created_at", "status", "previous_response_id", "schema_version", "payload")
# ids per find_items query: bound parameters stay far below SQLite's (32766) and PostgreSQL's (65535)
FIND_BATCH = 10_000


def _own(response_id: Any, tenant: Any):
    return (responses.c.id == response_id) & (responses.c.tenant == tenant)


# The rows of the responses ``:ids`` (an expanding list), built once like the statements below.
_ITEMS_OF = (select(items.c.response_id, items.c.kind, items.c.item_id, items.c.position, items.c.payload)
             .where(items.c.response_id.in_(bindparam("ids", expanding=True)))
             .order_by(items.c.response_id, items.c.kind, items.c.position))
_GET = select(responses).where(_own(bindparam("rid"), bindparam("tenant")))


def _found(ids: list[str], tenant: str):
    """The rows carrying ``ids`` in ``tenant``'s responses, in preference order: output items
    before input items ('output' > 'input'), then the oldest response, then position."""
    return (select(items.c.item_id, items.c.response_id, items.c.kind, items.c.payload,
                   responses.c.schema_version)
            .join(responses, responses.c.id == items.c.response_id)
            .where(responses.c.tenant == tenant, items.c.item_id.in_(ids))
            .order_by(items.c.kind.desc(), responses.c.created_at, responses.c.id, items.c.position))


def _in_conversations(ids: list[str], tenant: str):
    """The conversation items carrying ``ids`` in ``tenant``'s conversations, oldest
    conversation first, then position (an id is unique within one conversation only)."""
    return (select(citems.c.item_id, citems.c.payload, citems.c.conversation_id)
            .join(conversations, conversations.c.id == citems.c.conversation_id)
            .where(conversations.c.tenant == tenant, citems.c.item_id.in_(ids))
            .order_by(conversations.c.created_at, conversations.c.id, citems.c.position))


def _chain_statement():
    """The chain of ``:rid`` in ``:tenant``'s responses, oldest first: at most ``:depth + 1``
    rows. Built once (a recursive CTE's cache key cost more to build per read than the read)."""
    first = select(responses.c.id, responses.c.previous_response_id.label("prev"),
                   literal(0, Integer).label("depth")).where(_own(bindparam("rid"), bindparam("tenant")))
    chain = first.cte("chain", recursive=True)
    step = (select(responses.c.id, responses.c.previous_response_id, chain.c.depth + 1)
            .join(chain, responses.c.id == chain.c.prev)
            .where(responses.c.tenant == bindparam("tenant"), chain.c.depth < bindparam("depth")))
    chain = chain.union_all(step)
    return select(responses).join(chain, responses.c.id == chain.c.id).order_by(chain.c.depth.desc())


_CHAIN = _chain_statement()


@functools.cache
def _upsert(dialect_insert: Callable[..., Any], if_absent: bool) -> Any:
    """The save's upsert in a dialect, built once and run with the row as parameters
    (building it per save, with its ``excluded`` alias and cache key, cost more than running it)."""
    upsert = dialect_insert(responses)
    if if_absent:
        return upsert.on_conflict_do_nothing(index_elements=[responses.c.id])
    return upsert.on_conflict_do_update(
        index_elements=[responses.c.id], set_={c: upsert.excluded[c] for c in _REPLACED},
        where=responses.c.tenant == upsert.excluded.tenant)


_DELETE_ITEMS = delete(items).where(items.c.response_id == bindparam("response_id"))
_INSERT_ITEMS = insert(items)


async def put_record(conn: AsyncConnection, dialect_insert: Callable[..., Any], enc: codec.EncodedRecord,
                     *, if_absent: bool = False) -> bool:
    """The body of ``save``, inside any write transaction. ``if_absent``: only a new id,
    returning whether it was."""
    if (await conn.execute(_upsert(dialect_insert, if_absent), enc.row)).rowcount != 1:
        if if_absent:
            return False
        raise StoreError(f"response id {enc.row['id']!r} already belongs to another tenant")
    await conn.execute(_DELETE_ITEMS, {"response_id": enc.row["id"]})
    if enc.items:
        await conn.execute(_INSERT_ITEMS, enc.items)
    return True


class SQLResponses(SQLBase, ResponseRecords):
    async def save(self, record: StoredResponse) -> None:
        enc = await self._prepared(codec.encode_record, record)
        await self._write(lambda conn: put_record(conn, self.insert, enc()))

    async def get(self, response_id: str, tenant: str) -> StoredResponse | None:
        if not storable(response_id, tenant):
            return None

        async def body(conn: AsyncConnection):
            row = (await conn.execute(_GET, {"rid": response_id, "tenant": tenant})).first()
            return None if row is None else ([row], (await conn.execute(_ITEMS_OF, {"ids": [response_id]})).all())

        return await self._read_then(body, lambda found: None if found is None else codec.decode_chain(*found)[0])

    async def delete(self, response_id: str, tenant: str) -> bool:
        if not storable(response_id, tenant):
            return False

        async def body(conn: AsyncConnection) -> bool:
            if (await conn.execute(delete(responses).where(_own(response_id, tenant)))).rowcount == 0:
                return False
            for column in RESPONSE_DEPENDENTS:
                await conn.execute(delete(column.table).where(column == response_id))
            return True

        return await self._write(body)

    async def purge_older_than(self, ts: int) -> int:
        codec.check_int(ts, "purge_older_than's timestamp")
        batch = self._purge_batch()

        async def one_batch(conn: AsyncConnection) -> int:
            ids = list((await conn.execute(
                select(responses.c.id).where(responses.c.created_at < ts).limit(batch)
                .with_for_update(skip_locked=True))).scalars())
            if not ids:
                return 0
            for column in RESPONSE_DEPENDENTS:
                await conn.execute(delete(column.table).where(column.in_(ids)))
            return (await conn.execute(delete(responses).where(responses.c.id.in_(ids)))).rowcount

        total = 0
        while True:
            n = await self._write(one_batch)
            total += n
            if n < batch:  # also when the rest is locked by another purger: its run counts them
                return total

    async def history(self, response_id: str, tenant: str) -> list[dict] | None:
        if not storable(response_id, tenant):
            return None
        depth = self.max_history_depth

        async def body(conn: AsyncConnection):
            rows = (await conn.execute(_CHAIN, {"rid": response_id, "tenant": tenant, "depth": depth})).all()
            if not rows or rows[0].previous_response_id is not None:
                return rows, []  # missing (or too deep: decided below)
            return rows, (await conn.execute(_ITEMS_OF, {"ids": [r.id for r in rows]})).all()

        def window(result: tuple[list, list]) -> list[dict] | None:
            rows, found = result
            if len(rows) > depth:
                raise HistoryTooDeep(f"{response_id}: previous_response_id chain is longer than {depth} "
                                     "responses (or loops)")
            if not rows or rows[0].previous_response_id is not None:
                return None
            records = codec.decode_chain(rows, found)
            return [item for rec in records for item in rec.input_items + rec.response.get("output", [])]

        return await self._read_then(body, window)

    async def find_items(self, item_ids: Sequence[str], tenant: str) -> dict[str, dict]:
        wanted = list(dict.fromkeys(i for i in item_ids if storable(i)))  # others no row holds
        if not wanted or not storable(tenant):
            return {}

        async def batched(conn: AsyncConnection, query: Callable[[list[str], str], Any], ids: list[str]) -> list:
            rows: list = []
            for start in range(0, len(ids), FIND_BATCH):
                rows.extend((await conn.execute(query(ids[start:start + FIND_BATCH], tenant))).all())
            return rows

        async def body(conn: AsyncConnection) -> tuple[list, list]:
            rows = await batched(conn, _found, wanted)
            rest = list(set(wanted) - {row.item_id for row in rows})
            return rows, await batched(conn, _in_conversations, rest)

        rows, in_conversations = await self._read(body)
        if not rows and not in_conversations:
            return {}
        return await asyncio.to_thread(codec.decode_found, rows, in_conversations)

    async def list_input_items(self, response_id: str, tenant: str, *, after: str | None = None,
                               before: str | None = None, limit: int = 20,
                               order: str = "desc") -> ItemPage | None:
        check_page_args(limit, order)
        if not storable(response_id, tenant):
            return None
        # "before" alone: the page next to the cursor, read walking away from it, then reversed
        walk, reverse = (_REVERSED[order], True) if before and not after else (order, False)
        cursors = [(name, c) for name, c in (("after", after), ("before", before)) if c is not None]

        async def body(conn: AsyncConnection):
            version = (await conn.execute(
                select(responses.c.schema_version).where(_own(response_id, tenant)))).scalar()
            if version is None:
                return None
            codec.check_version(version, response_id)
            where = [items.c.response_id == response_id, items.c.kind == KIND_INPUT]
            for name, cursor in cursors:
                position = None if not storable(cursor) else (await conn.execute(
                    select(items.c.position).where(*where[:2], items.c.item_id == cursor))).scalar()
                if position is None:
                    return []  # unknown cursor: empty page
                where.append(_CURSOR_SIDE[(order, name)](items.c.position, position))
            column = items.c.position.asc() if walk == "asc" else items.c.position.desc()
            return (await conn.execute(
                select(items.c.item_id, items.c.payload).where(*where).order_by(column).limit(limit + 1))).all()

        rows = await self._read(body)
        if rows is None:
            return None
        page = [tuple(r) for r in rows[:limit]]
        if reverse:
            page.reverse()
        return ItemPage.of(await asyncio.to_thread(codec.decode_items, page, response_id), len(rows) > limit)
