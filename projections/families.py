"""The read models' names and code versions, in a module that imports nothing: start-up checks
a database's read models against them (adapters/schema.py `versions`, adapters/current_read.py)
without loading SQLAlchemy or the projections. A read model's class keeps its own `version`;
tests/test_projections.py checks that this table says the same, in projections/runner.py's order."""

from __future__ import annotations

VERSIONS: dict[str, int] = {"plan_state": 2, "upcoming_invoice": 3, "invoices": 6, "journal": 2, "audit_trail": 3,
                            "entitlements": 2, "notices": 4}
"""Family -> code version, in the order of projections/runner.py ALL."""
REGISTRY = "rm_registry"
"""Which table set (tag) of each read model is live (projections/registry.py)."""


def tracking_table(family: str, tag: str) -> str:
    """The library's tracking table of a read model's `tag` tables: its projection name (rm_<family>_<tag>)
    plus `_tracking`."""
    return f"rm_{family}_{tag}_tracking"
