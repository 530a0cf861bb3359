"""Idempotency keys, in SQL (protocol: ``base.IdempotencyKeys``; table: ``schema.py``).

A mixin of ``sql.SQLStore``. A claim is one statement, ``INSERT ... ON CONFLICT (tenant,
key) DO UPDATE ... WHERE <a running claim older than stale_before> RETURNING``: of two
replicas claiming one key exactly one gets it, and the loser reads the winner's row in the
same transaction. Retention of keys is ``purge_conversations_older_than``'s.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from . import codec
from .base import IdempotencyKeys
from .codec import storable
from .records import IdempotencyRecord, StoreError
from .schema import idempotency_keys as keys
from .transactions import SQLBase

_KEY = keys.c["key"]
# Built once and run with parameters (see ``responses._upsert``); the claim is per dialect.
# The key's parameters are not named after its columns: in an UPDATE those names are the SET's.
_THE = (keys.c.tenant == bindparam("of_tenant")) & (_KEY == bindparam("of_key"))
_HELD = select(keys.c.state, keys.c.body_hash, keys.c.response, keys.c.created_at).where(_THE)
_FINISH = update(keys).where(_THE).values(state="done", response=bindparam("response"))
_RELEASE = delete(keys).where(_THE, keys.c.state == "running")


@functools.cache
def _claim(dialect_insert: Callable[..., Any]) -> Any:
    """A new key's row, or a stale running claim's row taken over (``:stale_before``)."""
    claim = dialect_insert(keys)
    return claim.on_conflict_do_update(
        index_elements=[keys.c.tenant, _KEY],
        set_=dict(body_hash=claim.excluded.body_hash, state="running", response=None,
                  created_at=claim.excluded.created_at),
        where=(keys.c.state == "running") & (keys.c.created_at < bindparam("stale_before")),
    ).returning(_KEY)


class SQLIdempotency(SQLBase, IdempotencyKeys):
    async def claim_idempotency_key(self, tenant: str, key: str, body_hash: str, now: int,
                                    stale_before: int) -> IdempotencyRecord | None:
        if not storable(tenant, key, body_hash):
            raise StoreError("idempotency keys may not contain NUL characters or lone surrogates")
        row = {"tenant": tenant, "key": key, "body_hash": body_hash, "state": "running", "response": None,
               "created_at": now}
        the = {"of_tenant": tenant, "of_key": key}

        async def body(conn: AsyncConnection) -> IdempotencyRecord | None:
            if (await conn.execute(_claim(self.insert), {**row, "stale_before": stale_before})).first() is not None:
                return None
            return codec.decode_idempotency((await conn.execute(_HELD, the)).one(), key)

        return await self._write(body)

    async def finish_idempotency_key(self, tenant: str, key: str, response: dict) -> None:
        if not storable(tenant, key):  # never claimed: no row can have it
            return
        payload = await self._prepared(codec.dumps, response, f"idempotency key {key!r} response")
        await self._write(lambda conn: conn.execute(_FINISH, {"of_tenant": tenant, "of_key": key,
                                                                     "response": payload()}))

    async def release_idempotency_key(self, tenant: str, key: str) -> None:
        if not storable(tenant, key):
            return
        await self._write(lambda conn: conn.execute(_RELEASE, {"of_tenant": tenant, "of_key": key}))
