"""Fixtures shared by modules of this tier, taken from the module that owns them.

The store contract fixtures (``backend``, ``store``: every backend on a real database) live in
test_store.py; the scripted background stack (``bg``) in test_background.py. Naming them here
lets test_store_jobs.py, test_store_validation.py and test_resume.py request them without
importing fixture functions into their own namespace.
"""
from tests.integration.test_background import bg as bg
from tests.integration.test_store import backend as backend
from tests.integration.test_store import store as store


def pytest_collection_modifyitems(config, items):
    """Marks `model` every test that runs the real default model through the session's
    `cpu_engine` (directly or through the service and gateway fixtures built on it): seconds per
    test on a 2-core machine. `make test-fast` leaves them out; `make test` runs them. A module
    that starts its own CpuEngine marks itself."""
    for item in items:
        if "cpu_engine" in getattr(item, "fixturenames", ()):
            item.add_marker("model")
