"""HTTP route handlers, one module per resource; each handler only wires parsing, the
domain call and the reply (the work lives in ``generation.py``, ``translate.py``, the store)."""
