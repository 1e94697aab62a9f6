"""Keys the database enforces per tenant, on every database the kit supports.

A plain foreign key ``task.project_id -> project.id`` lets a task point at another tenant's
project: the database checks only that the id exists, and it checks that as the table owner,
past any row-level security. A tenant-aware foreign key includes the tenant on both sides::

    FOREIGN KEY (tenant_id, project_id) REFERENCES project (tenant_id, id)

so no row can name another tenant's row, whatever SQL wrote it. The parent needs a unique key
on ``(tenant_id, id)`` for the reference to point at (``tenant_unique("id")``)::

    class Project(TenantScoped, table=True):
        __table_args__ = (tenant_unique("id"),)
        id: int | None = Field(default=None, primary_key=True)


    class Task(TenantScoped, table=True):
        __table_args__ = (tenant_foreign_key("project_id", "project.id"),)
        id: int | None = Field(default=None, primary_key=True)
        project_id: int | None = None
        project: Project | None = Relationship(
            sa_relationship_kwargs={"foreign_keys": "[Task.project_id]"}
        )

Tell the relationship that only ``project_id`` is its foreign key (as above, on both sides):
otherwise un-linking a task would set its ``tenant_id`` to NULL along with ``project_id``.
Keys that lead with the tenant are also what a distributed PostgreSQL (Citus, with ``tenant_id``
as the distribution column) needs for foreign keys between distributed tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, ForeignKeyConstraint

__all__ = ["tenant_foreign_key"]


def _reference(target: str | Column[Any], tenant_column: str) -> tuple[Any, Any]:
    if isinstance(target, Column):
        table = target.table
        if tenant_column not in table.c:
            raise ValueError(f"{table.name} has no tenant column {tenant_column!r}")
        return table.c[tenant_column], target
    parts = target.split(".")
    if len(parts) < 2:
        raise ValueError(f"refer to columns as 'table.column', not {target!r}")
    return ".".join([*parts[:-1], tenant_column]), target


def tenant_foreign_key(
    columns: str | Sequence[str],
    refcolumns: str | Column[Any] | Sequence[str | Column[Any]],
    *,
    tenant_column: str = "tenant_id",
    ref_tenant_column: str | None = None,
    name: str | None = None,
    ondelete: str | None = None,
    onupdate: str | None = None,
    **kwargs: Any,
) -> ForeignKeyConstraint:
    """A foreign key that includes the tenant on both sides, for ``__table_args__``.

    ``tenant_foreign_key("project_id", "project.id")`` is ``FOREIGN KEY (tenant_id,
    project_id) REFERENCES project (tenant_id, id)``. ``columns`` and ``refcolumns`` may be
    sequences for composite keys; ``refcolumns`` may be ``Column`` objects. Pass
    ``tenant_column`` / ``ref_tenant_column`` when a table stores the tenant under another
    column name. ``ondelete="SET NULL"`` would null the tenant too: use ``CASCADE`` or
    ``RESTRICT``, or on PostgreSQL 15 and later ``"SET NULL (project_id)"``. Other keyword
    arguments go to ``ForeignKeyConstraint``.
    """
    local = [columns] if isinstance(columns, str) else list(columns)
    remote = [refcolumns] if isinstance(refcolumns, (str, Column)) else list(refcolumns)
    if not local or len(local) != len(remote):
        raise ValueError("tenant_foreign_key() needs as many columns as referenced columns")
    ref_tenant = ref_tenant_column or tenant_column
    tenant_target, _ = _reference(remote[0], ref_tenant)
    targets = [_reference(target, ref_tenant)[1] for target in remote]
    return ForeignKeyConstraint(
        [tenant_column, *local],
        [tenant_target, *targets],
        name=name,
        ondelete=ondelete,
        onupdate=onupdate,
        **kwargs,
    )
