"""SQLite-only behaviour of the response store: migrations, file handling, purge batching.

The backend-neutral contract lives in test_store.py; these cover what only SQLite has.
"""
import sqlite3
import threading

import pytest

from tests.integration.test_store import make_record
from trtllm_gateway.store import StoreError, open_store
from trtllm_gateway.store import sqlite as sqlite_backend


async def test_sqlite_refuses_a_database_from_a_newer_gateway(tmp_path):
    path = tmp_path / "newer.db"
    async with open_store(str(path)):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")
    with pytest.raises(StoreError, match="newer than this gateway"):
        await open_store(str(path)).open()


async def test_sqlite_creates_missing_directories_and_uses_wal(tmp_path):
    path = tmp_path / "a" / "b" / "store.db"
    async with open_store(f"sqlite:///{path}") as s:
        await s.save(make_record("resp_w"))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sqlite_waits_for_another_processs_write_lock_to_switch_a_new_file_to_wal(tmp_path):
    """Gateway workers opening one new file at once: while one holds the write lock (it
    migrates), SQLite refuses another's switch to WAL at once, busy_timeout or not; the open
    must wait for the lock instead of failing the worker (and with it the gateway)."""
    path = tmp_path / "new.db"
    locked, release = threading.Event(), threading.Event()

    def other_process() -> None:  # a connection of its own, as another process would have
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("CREATE TABLE t (x)")  # a rollback-journal file, as a new one is
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(10)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=other_process)
    holder.start()
    try:
        assert locked.wait(10)
        threading.Timer(0.3, release.set).start()
        async with open_store(str(path)) as s:
            assert release.is_set()  # the open waited for the lock
            await s.save(make_record("resp_wal"))
    finally:
        release.set()
        holder.join()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sqlite_a_lock_held_past_the_busy_timeout_still_fails_the_open(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="database is locked"):
            await open_store(str(path)).open()
    finally:
        holder.execute("COMMIT")
        holder.close()


async def test_sqlite_unopenable_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError):
        await open_store(str(blocker / "store.db")).open()


async def test_sqlite_in_memory_store_works():
    async with open_store("sqlite://:memory:") as s:
        await s.save(make_record("resp_m"))
        assert await s.get("resp_m", "t1") == make_record("resp_m")


async def test_sqlite_purge_runs_in_batches(tmp_path, monkeypatch):
    from trtllm_gateway.store import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "PURGE_BATCH", 2)
    async with open_store(str(tmp_path / "p.db")) as s:
        for i in range(5):
            await s.save(make_record(f"resp_b{i}", created_at=i))
        assert await s.purge_older_than(4) == 4
        assert [await s.get(f"resp_b{i}", "t1") is None for i in range(5)] == [True] * 4 + [False]


async def test_sqlite_a_version_3_database_gets_the_item_id_index(tmp_path):
    """A file written before migration 4 opens with its data and gains the index alone."""
    path = tmp_path / "v3.db"
    async with open_store(str(path)) as s:
        await s.save(make_record("resp_old"))
    with sqlite3.connect(path) as conn:  # as a gateway of migration 3 left it
        conn.execute("DROP INDEX conversation_items_by_item_id")
        conn.execute("DELETE FROM schema_migrations WHERE version = 4")
    async with open_store(str(path)) as s:
        assert await s.get("resp_old", "t1") == make_record("resp_old")
    with sqlite3.connect(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert "conversation_items_by_item_id" in indexes and versions == [1, 2, 3, 4]
