"""Versioned schema migrations of the store backends that keep them as a module here.

Each module defines ``MIGRATIONS: dict[int, tuple[str, ...]]`` (version -> statements, applied
in order, each version once, recorded in the ``schema_migrations`` table) and applies them
at store open. Kept as Python, not ``.sql`` files, so they ship inside any wheel without
package-data configuration.
"""
