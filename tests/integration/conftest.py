"""Fixtures shared by modules of this tier, taken from the module that owns them.

The store contract fixtures (``backend``, ``store``: every backend on a real database) live in
test_store.py; the scripted background stack (``bg``) in test_background.py. Naming them here
lets test_store_jobs.py, test_store_validation.py and test_resume.py request them without
importing fixture functions into their own namespace.
"""
from tests.integration.test_background import bg as bg
from tests.integration.test_store import backend as backend
from tests.integration.test_store import store as store
