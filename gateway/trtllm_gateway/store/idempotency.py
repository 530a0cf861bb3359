"""Idempotency keys, in SQL (protocol: ``base.IdempotencyKeys``; table: ``schema.py``).

A mixin of ``sql.SQLStore``. A claim is one statement, ``INSERT ... ON CONFLICT (tenant,
key) DO UPDATE ... WHERE <a running claim older than stale_before> RETURNING``: of two
replicas claiming one key exactly one gets it, and the loser reads the winner's row in the
same transaction. Retention of keys is ``purge_conversations_older_than``'s.
"""
from __future__ import annotations

import asyncio

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from . import codec
from .base import IdempotencyKeys
from .codec import storable
from .records import IdempotencyRecord, StoreError
from .schema import idempotency_keys as keys
from .transactions import SQLBase

_KEY = keys.c["key"]


def _the(tenant: str, key: str):
    return (keys.c.tenant == tenant) & (_KEY == key)


class SQLIdempotency(SQLBase, IdempotencyKeys):
    async def claim_idempotency_key(self, tenant: str, key: str, body_hash: str, now: int,
                                    stale_before: int) -> IdempotencyRecord | None:
        if not storable(tenant, key, body_hash):
            raise StoreError("idempotency keys may not contain NUL characters or lone surrogates")
        claim = self.insert(keys).values(tenant=tenant, key=key, body_hash=body_hash, state="running",
                                         response=None, created_at=now)
        claim = claim.on_conflict_do_update(
            index_elements=[keys.c.tenant, _KEY],
            set_=dict(body_hash=claim.excluded.body_hash, state="running", response=None,
                      created_at=claim.excluded.created_at),
            where=(keys.c.state == "running") & (keys.c.created_at < stale_before),
        ).returning(_KEY)
        held = select(keys.c.state, keys.c.body_hash, keys.c.response, keys.c.created_at).where(_the(tenant, key))

        async def body(conn: AsyncConnection) -> IdempotencyRecord | None:
            if (await conn.execute(claim)).first() is not None:
                return None
            return codec.decode_idempotency((await conn.execute(held)).one(), key)

        return await self._write(body)

    async def finish_idempotency_key(self, tenant: str, key: str, response: dict) -> None:
        if not storable(tenant, key):  # never claimed: no row can have it
            return
        payload = await asyncio.to_thread(codec.dumps, response, f"idempotency key {key!r} response")
        await self._count(update(keys).where(_the(tenant, key)).values(state="done", response=payload))

    async def release_idempotency_key(self, tenant: str, key: str) -> None:
        if not storable(tenant, key):
            return
        await self._count(delete(keys).where(_the(tenant, key), keys.c.state == "running"))
