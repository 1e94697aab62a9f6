"""Which tenants keep their data in a schema of their own: those ``EXAMPLE_SCHEMA_TENANTS`` names
(``globex``, say); every other tenant's data stays in the shared tables."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Table

from fastapi_tenancy import TENANT_SCHEMA, Isolation, Strategy

from .models import metadata

__all__ = ["PLACED_TABLES", "isolation_for"]

PLACED_TABLES: list[Table] = [t for t in metadata.sorted_tables if t.schema == TENANT_SCHEMA]
"""The tables each tenant keeps in its own place: projects, tasks, private notes."""


def isolation_for(schema_tenants: Collection[str]) -> Isolation:
    """The app's isolation: a schema of its own (``tenant_<slug>``) for each of
    ``schema_tenants``, the shared tables for the others."""
    chosen = frozenset(schema_tenants)

    def choose(key: Any, record: Any) -> Strategy | None:
        return Strategy.SCHEMA if key in chosen else None

    return Isolation(choose=choose)
