"""open_store(): URL scheme registry and SQLite path parsing (no database is opened)."""
import pytest

from trtllm_gateway.store import BACKENDS, StoreError, open_store
from trtllm_gateway.store.sqlite import SQLiteStore


@pytest.mark.parametrize("url, path", [
    ("sqlite:///relative/store.db", "relative/store.db"),
    ("sqlite:////abs/store.db", "/abs/store.db"),
    ("SQLITE:////abs/store.db", "/abs/store.db"),
    ("sqlite://:memory:", ":memory:"),
    ("/plain/abs.db", "/plain/abs.db"),
    ("plain.db", "plain.db"),
])
def test_sqlite_urls(url, path):
    store = open_store(url)
    assert isinstance(store, SQLiteStore) and store.path == path


def test_options_reach_the_backend():
    assert open_store("x.db", max_history_depth=7).max_history_depth == 7


@pytest.mark.parametrize("url, message", [
    ("", "empty"),
    ("sqlite://", "no path"),
    ("redis://localhost", "unsupported store URL scheme 'redis'"),
])
def test_bad_urls_give_clear_errors(url, message):
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_registry_is_a_dict_of_schemes():
    assert set(BACKENDS) == {"sqlite", "postgresql", "postgres"}
