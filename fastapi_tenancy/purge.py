"""Delete every row of one tenant: every tenant model, children before parents, in batches.

The deletes run in a session scoped to the purged tenant, so the wall proves each of them (a
bug here cannot reach another tenant's rows), and with row-level security on, the policies
hold them too. Tables come from the mapped tenant models whose table exists in the database,
sorted so that a row is deleted before the rows it references. A purge runs in one transaction
(all or nothing), or commits each batch (``resumable=True``): interrupted, it leaves a tenant
that a second purge finishes, since the tenant's record is deleted last.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, delete, func, inspect, update
from sqlalchemy.orm import Mapper
from sqlalchemy.schema import sort_tables
from sqlmodel import select

from .checks import _registry_mappers
from .models import is_tenant_model

__all__ = ["PurgeReport", "PurgeStep", "log_purge", "purge_plan"]

audit_logger = logging.getLogger("fastapi_tenancy.audit")


@dataclass
class PurgeReport:
    """What a purge deleted (or, with ``dry_run``, would delete): rows per table, in order."""

    tenant: Any
    dry_run: bool
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every row counted, the tenant's record aside."""
        return sum(self.rows.values())


@dataclass(frozen=True)
class PurgeStep:
    """One tenant model to empty: its class, tenant column and single primary key (if any)."""

    model: type[Any]
    table: Table

    def count(self, key: Any) -> Any:
        return select(func.count()).select_from(self.model).where(self._own(key))

    def batch(self, key: Any, size: int) -> Any:
        """The primary keys of up to ``size`` of the tenant's rows, or ``None`` when the table
        has no single-column primary key (then :meth:`delete_all` takes them at once)."""
        primary = list(self.table.primary_key.columns)
        if len(primary) != 1:
            return None
        column = getattr(self.model, primary[0].key)
        return select(column).where(self._own(key)).order_by(column).limit(size)

    def delete_batch(self, key: Any, ids: list[Any]) -> Any:
        column = getattr(self.model, next(iter(self.table.primary_key.columns)).key)
        return delete(self.model).where(self._own(key), column.in_(ids))

    def delete_all(self, key: Any) -> Any:
        return delete(self.model).where(self._own(key))

    def move(self, key: Any, new_key: Any) -> Any:
        """Give every row of tenant ``key`` the tenant ``new_key`` (in ``mutable_tenant()``)."""
        column = self.model.tenant_column()
        return update(self.model).where(self._own(key)).values({column.key: new_key})

    def _own(self, key: Any) -> Any:
        # Explicit, beside the session's scoping: shared rows (a NULL tenant) are read by a
        # tenant session but must never be counted or picked as the tenant's own.
        return self.model.tenant_column() == key


def purge_plan(connection: Connection) -> list[PurgeStep]:
    """The tenant models whose table exists where ``connection`` points, each before the
    tables it references (so before its parents). A table of the tenant schema placeholder
    counts when its shared tables' copy exists: a tenant's own place has the same tables
    (:func:`~fastapi_tenancy.isolation.storage.create_storage`)."""
    existing = set(inspect(connection).get_table_names())
    by_table: dict[Table, type[Any]] = {}
    for mapper in _registry_mappers(None):
        table = mapper.local_table
        if (
            is_tenant_model(mapper.class_)
            and isinstance(table, Table)
            and table.name in existing
            and table not in by_table
            and _maps_whole_table(mapper)
        ):
            by_table[table] = mapper.class_
    ordered = sort_tables(by_table)
    return [PurgeStep(by_table[table], table) for table in reversed(ordered)]


def _maps_whole_table(mapper: Mapper[Any]) -> bool:
    """A mapper of a plain table (not a subclass sharing its parent's table)."""
    return mapper.inherits is None or mapper.local_table is not mapper.inherits.local_table


def log_purge(report: PurgeReport) -> None:
    audit_logger.warning(
        "%s tenant %s: %s rows (%s)",
        "dry run of purging" if report.dry_run else "purged",
        report.tenant,
        report.total,
        ", ".join(f"{table} {count}" for table, count in report.rows.items()) or "no tables",
    )
