"""Physical isolation: each tenant's rows in the shared tables, a schema of its own, or a
database of its own, chosen per tenant (see :class:`Isolation`)."""

from __future__ import annotations

from . import ddl  # noqa: F401  (SQLite's foreign keys of placed tables)
from .engines import EngineCache
from .placement import TENANT_SCHEMA, Isolation, Placement, Strategy, stored_schema

__all__ = ["TENANT_SCHEMA", "EngineCache", "Isolation", "Placement", "Strategy", "stored_schema"]
