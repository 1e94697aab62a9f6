"""Alembic operations that turn the tenant wall on and off, for migrations.

Alembic is an optional extra (``pip install "fastapi-tenancy-kit[alembic]"``); importing this
module registers two operations on Alembic's ``op``::

    import fastapi_tenancy.postgres.alembic  # noqa: F401  (once, in env.py or the migration)


    def upgrade() -> None:
        op.create_table("project", ...)
        op.enable_tenant_rls("project")
        op.enable_tenant_rls("template", global_read=True)


    def downgrade() -> None:
        op.disable_tenant_rls("template")
        op.disable_tenant_rls("project")
        op.drop_table("project")

They run exactly the statements of :func:`~fastapi_tenancy.postgres.apply_rls`, so a database
migrated with them and one set up with ``apply_rls`` are the same; ``--sql`` (offline) mode
prints them. Migrations run as the tables' owner, never as the application's role.

Imported in ``env.py``, it also makes ``alembic revision --autogenerate`` write these operations
for new and dropped tenant tables (see :mod:`fastapi_tenancy.postgres.autogenerate`).

On a Citus coordinator, ``op.distribute_tables(tenant_tables={"projects": "tenant_id"},
reference_tables=["plans"])`` distributes tables in the order Citus needs, and
``op.undistribute_tables([...])`` brings them back (see
:mod:`fastapi_tenancy.postgres.citus`); both read what Citus holds, so they run online only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alembic.operations import MigrateOperation, Operations
from sqlalchemy.types import TypeEngine

from ..exceptions import TenancyMisuse
from ..hierarchy import TenantReads
from .citus import distribute_tables, undistribute_tables
from .policies import (
    PolicyCondition,
    ScopeColumn,
    TenantTable,
    disable_statements,
    enable_statements,
)

__all__ = [
    "DisableTenantRLSOp",
    "DistributeTablesOp",
    "EnableTenantRLSOp",
    "UndistributeTablesOp",
]


class _TenantRLSOp(MigrateOperation):
    def __init__(
        self,
        table_name: str,
        *,
        schema: str | None = None,
        tenant_column: str = "tenant_id",
        global_read: bool = False,
        tenant_type: TypeEngine[Any] | None = None,
        admin_roles: Sequence[str] = (),
        shared_rows: bool = False,
        row_scopes: Mapping[str, str] | None = None,
        row_scope_types: Mapping[str, TypeEngine[Any]] | None = None,
        row_scope_public: Mapping[str, str] | None = None,
        tenant_reads: TenantReads = "own",
        row_policies: Mapping[str, str] | None = None,
    ) -> None:
        types = row_scope_types or {}
        public = row_scope_public or {}
        self.table = TenantTable(
            name=table_name,
            schema=schema,
            tenant_column=tenant_column,
            global_read=global_read,
            tenant_type=tenant_type,
            admin_roles=tuple(admin_roles),
            shared_rows=shared_rows,
            row_scopes=tuple(
                ScopeColumn(scope, column, types.get(scope), public.get(scope))
                for scope, column in sorted((row_scopes or {}).items())
            ),
            tenant_reads=tenant_reads,
            row_policies=tuple(
                PolicyCondition(name, condition)
                for name, condition in sorted((row_policies or {}).items())
            ),
        )

    def _diff_tuple(self, name: str) -> tuple[Any, ...]:
        return (name, self.table.schema, self.table.name)

    def _options(self) -> dict[str, Any]:
        t = self.table
        return {
            "schema": t.schema,
            "tenant_column": t.tenant_column,
            "global_read": t.global_read,
            "tenant_type": t.tenant_type,
            "admin_roles": t.admin_roles,
            "shared_rows": t.shared_rows,
            "row_scopes": {s.scope: s.column for s in t.row_scopes},
            "row_scope_types": {
                s.scope: s.column_type for s in t.row_scopes if s.column_type is not None
            },
            "row_scope_public": {
                s.scope: s.public_column for s in t.row_scopes if s.public_column is not None
            },
            "tenant_reads": t.tenant_reads,
            "row_policies": {p.name: p.condition for p in t.row_policies},
        }


@Operations.register_operation("enable_tenant_rls")
class EnableTenantRLSOp(_TenantRLSOp):
    """``op.enable_tenant_rls(table)``: row-level security and the kit's policies on a table."""

    previous: TenantTable | None = None
    """The wall this one replaces, if the table had one: what :meth:`reverse` restores."""

    @classmethod
    def enable_tenant_rls(
        cls,
        operations: Operations,
        table_name: str,
        *,
        schema: str | None = None,
        tenant_column: str = "tenant_id",
        global_read: bool = False,
        tenant_type: TypeEngine[Any] | None = None,
        admin_roles: Sequence[str] = (),
        shared_rows: bool = False,
        row_scopes: Mapping[str, str] | None = None,
        row_scope_types: Mapping[str, TypeEngine[Any]] | None = None,
        row_scope_public: Mapping[str, str] | None = None,
        tenant_reads: TenantReads = "own",
        row_policies: Mapping[str, str] | None = None,
    ) -> None:
        """Enable and force row-level security on ``table_name`` with the tenant policies.

        ``global_read=True`` for a model declared ``__global_access__``; ``tenant_type`` when
        the tenant column is not a string type; ``admin_roles`` for roles that get a policy
        admitting every row; ``shared_rows=True`` for a model declared ``__shared_rows__``
        (every tenant reads the rows with a NULL tenant); ``row_scopes`` (``{"owner":
        "owner_id"}``) gives each row scope its restrictive policy, the setting cast to
        ``row_scope_types[scope]`` when that column is not a string type;
        ``row_scope_public`` (``{"owner": "published"}``) names the boolean column of a scope's
        public rows, read by every session of the tenant and written only within the scope;
        ``tenant_reads`` (``"ancestors"``, ``"descendants"``) for a model whose tenants read
        their family's rows; ``row_policies`` (``{"live": "archived = false"}``) gives each
        named row policy its restrictive policy, the SQL as ``rls_statements()`` prints it.
        Idempotent.
        """
        operations.invoke(
            cls(
                table_name,
                schema=schema,
                tenant_column=tenant_column,
                global_read=global_read,
                tenant_type=tenant_type,
                admin_roles=admin_roles,
                shared_rows=shared_rows,
                row_scopes=row_scopes,
                row_scope_types=row_scope_types,
                row_scope_public=row_scope_public,
                tenant_reads=tenant_reads,
                row_policies=row_policies,
            )
        )

    def reverse(self) -> EnableTenantRLSOp | DisableTenantRLSOp:
        """The operation that undoes this one: the previous wall again, or none."""
        if self.previous is not None:
            previous = EnableTenantRLSOp(self.previous.name)
            previous.table = self.previous
            return previous
        return DisableTenantRLSOp(self.table.name, **self._options())

    def to_diff_tuple(self) -> tuple[Any, ...]:
        """``("enable_tenant_rls", schema, table)``, for ``alembic check``."""
        return self._diff_tuple("enable_tenant_rls")


@Operations.register_operation("disable_tenant_rls")
class DisableTenantRLSOp(_TenantRLSOp):
    """``op.disable_tenant_rls(table)``: drop the kit's policies and turn row-level security
    off."""

    @classmethod
    def disable_tenant_rls(
        cls,
        operations: Operations,
        table_name: str,
        *,
        schema: str | None = None,
        tenant_column: str = "tenant_id",
        row_scopes: Mapping[str, str] | None = None,
        row_policies: Mapping[str, str] | None = None,
    ) -> None:
        """Drop the kit's policies from ``table_name`` (the restrictive ones of ``row_scopes``
        and ``row_policies`` too, those of public rows included) and disable row-level
        security."""
        operations.invoke(
            cls(
                table_name,
                schema=schema,
                tenant_column=tenant_column,
                row_scopes=row_scopes,
                row_policies=row_policies,
            )
        )

    def reverse(self) -> EnableTenantRLSOp:
        """The operation that undoes this one, with the options this one carries (the defaults,
        unless autogenerate read them from the database)."""
        return EnableTenantRLSOp(self.table.name, **self._options())

    def to_diff_tuple(self) -> tuple[Any, ...]:
        """``("disable_tenant_rls", schema, table)``, for ``alembic check``."""
        return self._diff_tuple("disable_tenant_rls")


@Operations.implementation_for(EnableTenantRLSOp)
def _enable(operations: Operations, operation: EnableTenantRLSOp) -> None:
    for statement in enable_statements(operation.table):
        operations.execute(statement)


@Operations.implementation_for(DisableTenantRLSOp)
def _disable(operations: Operations, operation: DisableTenantRLSOp) -> None:
    for statement in disable_statements(operation.table):
        operations.execute(statement)


@Operations.register_operation("distribute_tables")
class DistributeTablesOp(MigrateOperation):
    """``op.distribute_tables(tenant_tables={"projects": "tenant_id"}, reference_tables=[...])``:
    Citus distributes the tenant tables on their tenant column, colocated, and replicates the
    reference tables, in the order it needs (see :mod:`fastapi_tenancy.postgres.citus`)."""

    def __init__(
        self,
        tenant_tables: Mapping[str, str],
        reference_tables: Sequence[str] = (),
        *,
        shard_count: int | None = None,
    ) -> None:
        self.tenant_tables = dict(tenant_tables)
        self.reference_tables = list(reference_tables)
        self.shard_count = shard_count

    @classmethod
    def distribute_tables(
        cls,
        operations: Operations,
        tenant_tables: Mapping[str, str],
        reference_tables: Sequence[str] = (),
        *,
        shard_count: int | None = None,
    ) -> None:
        """Distribute ``tenant_tables`` (name: tenant column) and replicate
        ``reference_tables`` on a Citus coordinator; tables Citus holds already are left as
        they are. Needs a live connection (not ``--sql``): what is left to do, and the foreign
        keys to drop and add back around it, are read from the database."""
        operations.invoke(cls(tenant_tables, reference_tables, shard_count=shard_count))

    def reverse(self) -> UndistributeTablesOp:
        """The operation that undoes this one: every table back on the coordinator."""
        return UndistributeTablesOp([*self.tenant_tables, *self.reference_tables])


@Operations.register_operation("undistribute_tables")
class UndistributeTablesOp(MigrateOperation):
    """``op.undistribute_tables(["projects", ...])``: Citus turns the tables back into plain
    tables on the coordinator (with the tables linked to them by foreign keys)."""

    def __init__(self, tables: Sequence[str]) -> None:
        self.tables = list(tables)

    @classmethod
    def undistribute_tables(cls, operations: Operations, tables: Sequence[str]) -> None:
        """Undistribute each of ``tables`` that Citus still holds (``undistribute_table``,
        cascading through foreign keys); a plain table is left alone."""
        operations.invoke(cls(tables))

    def reverse(self) -> DistributeTablesOp:
        """Not derivable (which were tenant tables, on which column): write it by hand."""
        raise NotImplementedError("write op.distribute_tables(...) with the tables' columns")


def _live_connection(operations: Operations, name: str) -> Any:
    if operations.migration_context.as_sql:
        raise TenancyMisuse(
            f"op.{name} reads what Citus holds from the database; run it online, not with --sql"
        )
    return operations.get_bind()


@Operations.implementation_for(DistributeTablesOp)
def _distribute(operations: Operations, operation: DistributeTablesOp) -> None:
    distribute_tables(
        _live_connection(operations, "distribute_tables"),
        operation.tenant_tables,
        operation.reference_tables,
        shard_count=operation.shard_count,
    )


@Operations.implementation_for(UndistributeTablesOp)
def _undistribute(operations: Operations, operation: UndistributeTablesOp) -> None:
    undistribute_tables(_live_connection(operations, "undistribute_tables"), operation.tables)


# The autogenerate comparator and renderers of these operations (registered on import).
from . import autogenerate as _autogenerate  # noqa: E402, F401
