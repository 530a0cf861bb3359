"""PostgreSQL-only behaviour of the response store: several replicas on one database.

The backend-neutral contract (both backends) lives in test_store.py. These run against a
real server from tests/fixtures/postgres.py, each on its own new database, and cover what
only a shared server has: replicas racing to migrate and to write, the advisory lock,
server restarts, purges from several replicas, connection errors.
"""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.fixtures.postgres import _free_port
from tests.integration.test_store import make_record
from trtllm_gateway.store import InvalidRecord, StoreError, open_store
from trtllm_gateway.store import postgres as pg_backend
from trtllm_gateway.store.migrations import postgres as pg_migrations

# Also listed in tests/conftest.py; naming it here too lets this module run on its own.

async def fetch(dsn: str, sql: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def test_both_url_schemes_select_the_postgres_backend(fresh_postgres_dsn):
    rest = fresh_postgres_dsn.split("://", 1)[1]
    for scheme in ("postgresql", "postgres", "PostgreSQL"):
        async with open_store(f"{scheme}://{rest}") as s:
            assert isinstance(s, pg_backend.PostgresStore)
            await s.save(make_record(f"resp_{scheme}"))
            assert await s.get(f"resp_{scheme}", "t1") == make_record(f"resp_{scheme}")


async def test_replicas_opening_at_once_migrate_exactly_once(fresh_postgres_dsn):
    stores = [open_store(fresh_postgres_dsn) for _ in range(6)]
    try:
        await asyncio.gather(*(s.open() for s in stores))  # all race to migrate a fresh db
        for i, s in enumerate(stores):
            await s.save(make_record(f"resp_m{i}"))
        assert [await stores[0].get(f"resp_m{i}", "t1") for i in range(6)] == [
            make_record(f"resp_m{i}") for i in range(6)]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    every = [(v,) for v in sorted(pg_migrations.MIGRATIONS)]
    applied = "SELECT version FROM schema_migrations ORDER BY version"
    assert await fetch(fresh_postgres_dsn, applied) == every
    async with open_store(fresh_postgres_dsn):  # and a later start changes nothing
        pass
    assert await fetch(fresh_postgres_dsn, applied) == every


async def test_open_waits_for_another_replica_migrating(fresh_postgres_dsn):
    # Another replica holds the migration lock and is half-way through migration 1.
    other = await asyncpg.connect(fresh_postgres_dsn)
    try:
        txn = other.transaction()
        await txn.start()
        await other.execute("SELECT pg_advisory_xact_lock($1)", pg_migrations.MIGRATION_LOCK)
        await other.execute("CREATE TABLE schema_migrations "
                            "(version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
        for statement in pg_migrations.MIGRATIONS[1]:
            await other.execute(statement)
        await other.execute("INSERT INTO schema_migrations VALUES (1, 0)")

        store = open_store(fresh_postgres_dsn)
        opening = asyncio.ensure_future(store.open())
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        while (await other.fetchval(waiting)) == 0:  # until open() queues on the lock
            assert not opening.done(), opening.exception()
            await asyncio.sleep(0.02)
        await txn.commit()
        await opening  # it found migration 1 applied: re-running it would fail
        try:
            await store.save(make_record("resp_after"))
            assert (await store.get("resp_after", "t1")).id == "resp_after"
        finally:
            await store.close()
    finally:
        await other.close()


async def test_concurrent_replaces_of_one_id_from_two_replicas_never_mix(fresh_postgres_dsn):
    async with open_store(fresh_postgres_dsn) as a, open_store(fresh_postgres_dsn) as b:
        ids = [f"resp_race{i}" for i in range(40)]
        versions = {
            rid: (make_record(rid, n_inputs=3, status="in_progress", outputs=[]),
                  make_record(rid, n_inputs=5))
            for rid in ids
        }
        for _ in range(3):  # both replicas replace every id at the same time, repeatedly
            await asyncio.gather(*(s.save(versions[rid][k]) for rid in ids
                                   for k, s in ((0, a), (1, b))))
            for rid in ids:
                got = await a.get(rid, "t1")
                assert got in versions[rid]  # one writer's whole state, never a blend
                page = await b.list_input_items(rid, "t1", order="asc", limit=100)
                assert page.data == got.input_items


async def test_store_survives_a_server_restart(postgres_server, fresh_postgres_dsn):
    rec = make_record("resp_durable")
    async with open_store(fresh_postgres_dsn) as s:
        await s.save(rec)
        postgres_server.restart()  # the pool's connections are cut under it
        assert await s.get("resp_durable", "t1") == rec
        await s.save(make_record("resp_after_restart"))
    async with open_store(fresh_postgres_dsn) as s:  # a new replica, after the restart
        assert await s.get("resp_durable", "t1") == rec
        assert await s.get("resp_after_restart", "t1") == make_record("resp_after_restart")


async def test_refuses_a_database_from_a_newer_gateway(fresh_postgres_dsn):
    async with open_store(fresh_postgres_dsn):
        pass
    await fetch(fresh_postgres_dsn, "INSERT INTO schema_migrations VALUES (99, 0)")
    with pytest.raises(StoreError, match="newer than this gateway"):
        await open_store(fresh_postgres_dsn).open()


async def test_delete_and_purge_remove_items_too(fresh_postgres_dsn):
    async with open_store(fresh_postgres_dsn) as s:
        for i in range(3):
            await s.save(make_record(f"resp_i{i}", created_at=100 * i))
        assert await s.delete("resp_i2", "t1")
        assert await s.purge_older_than(100) == 1
    left = await fetch(fresh_postgres_dsn, "SELECT DISTINCT response_id FROM items")
    assert left == [("resp_i1",)]


async def test_replicas_purging_at_once_count_each_row_once(fresh_postgres_dsn, monkeypatch):
    monkeypatch.setattr(pg_backend, "PURGE_BATCH", 3)
    async with open_store(fresh_postgres_dsn) as a, open_store(fresh_postgres_dsn) as b:
        for i in range(40):
            await a.save(make_record(f"resp_old{i}", created_at=i))
        await a.save(make_record("resp_new", created_at=1000))
        counts = await asyncio.gather(a.purge_older_than(500), b.purge_older_than(500))
        rest = await a.purge_older_than(500)  # rows a racing purger skipped while locked
        assert sum(counts) + rest == 40
        assert await fetch(fresh_postgres_dsn, "SELECT id FROM responses") == [("resp_new",)]


async def test_unreachable_server_is_a_clear_error_without_the_password():
    url = f"postgresql://gw:s3cret@127.0.0.1:{_free_port()}/nodb"
    with pytest.raises(StoreError, match="cannot open PostgreSQL store") as err:
        await open_store(url, connect_timeout=5).open()
    assert "s3cret" not in str(err.value) and "***" in str(err.value)


@pytest.mark.parametrize("url", ["postgresql://127.0.0.1:notaport/db", "postgres://[::1/db"])
async def test_malformed_url_is_a_clear_error(url):
    with pytest.raises(StoreError, match="cannot open PostgreSQL store"):
        await open_store(url, connect_timeout=5).open()


async def test_missing_database_is_a_clear_error(postgres_server):
    with pytest.raises(StoreError, match="does not exist"):
        await open_store(postgres_server.dsn("no_such_database")).open()


async def test_text_postgres_cannot_hold_is_refused_or_not_found(fresh_postgres_dsn):
    async with open_store(fresh_postgres_dsn) as s:
        await s.save(make_record("resp_ok"))
        # NUL here; lone surrogates for both backends in test_store.py
        assert await s.get("resp\x00ok", "t1") is None
        assert await s.get("resp_ok", "t\x00") is None
        assert await s.history("resp\x00", "t1") is None
        assert await s.delete("resp\x00", "t1") is False
        assert (await s.list_input_items("resp_ok", "t1", after="x\x00")).data == []
        nul = make_record("resp_nul")
        nul.input_items[0]["id"] = "in\x00"
        surrogate = make_record("resp_sur")
        surrogate.response["metadata"] = {"k": "\ud800"}
        for bad in (make_record("resp\x00nul"), nul, surrogate,
                    make_record("resp_big", created_at=2**63)):
            with pytest.raises(InvalidRecord):
                await s.save(bad)
        assert await fetch(fresh_postgres_dsn, "SELECT id FROM responses") == [("resp_ok",)]
