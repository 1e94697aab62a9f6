"""Citus (distributed PostgreSQL): what it would refuse of a schema, and distributing one.

Citus spreads a table over its workers by one column, its *distribution column*; for tenant
tables that is the tenant column, so each tenant's rows live on one shard and a statement
naming one tenant runs there alone. Shared tables (plans, the tenants table) become *reference
tables*, copied to every worker, which any shard can join with.

:func:`distribution_problems` lists, from a ``MetaData``, what Citus would refuse and the fix
for each, by stable ``code``:

===================================  ===========================================================
``citus_key_without_tenant``         a tenant table whose primary key leaves the tenant out
``citus_unique_without_tenant``      a unique constraint or index of a tenant table without it
``citus_foreign_key_without_tenant`` a foreign key between tenant tables that does not pair
                                     their tenant columns
``citus_reference_to_tenant_table``  a shared table's foreign key to a tenant table (a
                                     reference table cannot point into a distributed one)
``citus_serial_id``                  an autoincrementing key that is not an identity (inserts
                                     routed through a worker fail on a sequence default)
``citus_identity_not_bigint``        an identity column narrower than ``bigint``
``citus_shared_rows``                a ``__shared_rows__`` table: its shared rows' tenant is
                                     NULL, which no distribution column holds
``citus_tenant_types_differ``        tenant columns of different types (tables are colocated
                                     only when their distribution columns share a type)
===================================  ===========================================================

:func:`distribute` (and the Alembic operation ``op.distribute_tables``, see
:mod:`fastapi_tenancy.postgres.alembic`) then does, in one transaction and in the order Citus
needs: drop the foreign keys touching the tables still to distribute, make the shared tables
reference tables, distribute the tenant tables on their tenant column, colocated with each
other, and add the foreign keys back. Done in another order, a reference table linked by a
foreign key to a plain table turns that table into a coordinator-only one. Tables already
distributed are left as they are, so it is safe to run again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Identity, MetaData, Table, UniqueConstraint, text
from sqlalchemy.engine import Connection, Engine

from ..checks import Finding
from ..exceptions import TenancyMisuse
from ..models import TENANT_SHARED_ROWS_INFO_KEY, TENANT_TABLE_INFO_KEY
from .policies import _QUOTE, _literal, _type_name

__all__ = [
    "CitusState",
    "DistributedTable",
    "citus_findings",
    "citus_installed",
    "citus_state",
    "distribute",
    "distribute_tables",
    "distribution_problems",
    "distribution_statements",
    "undistribute_tables",
]


def distribution_problems(metadata: MetaData) -> list[Finding]:
    """What Citus would refuse of ``metadata``'s tables (the tenant tables distributed by
    their tenant column, the others made reference tables), with the fix for each."""
    tenant = {
        table: table.c[name]
        for table in metadata.sorted_tables
        if isinstance(name := table.info.get(TENANT_TABLE_INFO_KEY), str) and name in table.c
    }
    findings: list[Finding] = []
    for table, column in tenant.items():
        findings += _key_problems(table, column)
        findings += _foreign_key_problems(table, column, tenant)
        findings += _counter_problems(table)
        if table.info.get(TENANT_SHARED_ROWS_INFO_KEY):
            findings.append(
                Finding(
                    "citus_shared_rows",
                    table.name,
                    "its shared rows have a NULL tenant, and Citus stores no row without a "
                    "distribution column value",
                    "keep the shared rows in a table of their own without a tenant column (a "
                    "reference table), and the tenants' rows in this one",
                )
            )
    types = {_QUOTE.format_table(t): _type_name(c.type) for t, c in tenant.items()}
    if len(set(types.values())) > 1:
        listed = ", ".join(f"{name} {kind}" for name, kind in sorted(types.items()))
        findings.append(
            Finding(
                "citus_tenant_types_differ",
                "tenant columns",
                f"the tenant columns have different types ({listed}); Citus colocates tables "
                "only when their distribution columns share one",
                "give every tenant column the same type (TenantScoped[...] and tenant_field())",
            )
        )
    for table in metadata.sorted_tables:
        if table in tenant:
            continue
        for foreign_key in table.foreign_key_constraints:
            if foreign_key.referred_table in tenant:
                findings.append(
                    Finding(
                        "citus_reference_to_tenant_table",
                        f"{table.name}.{'/'.join(foreign_key.column_keys)}",
                        f"the shared table {table.name!r} points at the tenant table "
                        f"{foreign_key.referred_table.name!r}; a reference table cannot "
                        "point into a distributed one",
                        "make it a tenant model, or drop the foreign key",
                    )
                )
    return sorted(findings)


def _key_problems(table: Table, tenant_column: Any) -> list[Finding]:
    found = []
    if tenant_column.name not in table.primary_key.columns:
        keys = ", ".join(c.name for c in table.primary_key.columns) or "none"
        found.append(
            Finding(
                "citus_key_without_tenant",
                table.name,
                f"its primary key ({keys}) leaves out the tenant column "
                f"{tenant_column.name!r}, so Citus refuses to distribute it",
                "set __tenant_first_key__ = True on its model: the table's key becomes "
                f"({tenant_column.name}, {keys}), the ORM's stays {keys}",
            )
        )
    uniques = [
        (constraint.name, list(constraint.columns))
        for constraint in table.constraints
        if isinstance(constraint, UniqueConstraint)
    ]
    uniques += [(index.name, list(index.columns)) for index in table.indexes if index.unique]
    for name, columns in uniques:
        if tenant_column not in columns:
            named = ", ".join(c.name for c in columns)
            found.append(
                Finding(
                    "citus_unique_without_tenant",
                    f"{table.name}.{name or named}",
                    f"unique ({named}) without the tenant column: Citus enforces uniqueness "
                    "only within one shard",
                    f"tenant_unique({', '.join(repr(c.name) for c in columns)})",
                )
            )
    return found


def _foreign_key_problems(
    table: Table, tenant_column: Any, tenant: Mapping[Table, Any]
) -> list[Finding]:
    found = []
    for foreign_key in table.foreign_key_constraints:
        target = foreign_key.referred_table
        target_tenant = tenant.get(target)
        if target_tenant is None:
            continue  # to a shared table, which becomes a reference table: fine
        pairs = {(e.parent, e.column) for e in foreign_key.elements}
        if (tenant_column, target_tenant) not in pairs:
            found.append(
                Finding(
                    "citus_foreign_key_without_tenant",
                    f"{table.name}.{'/'.join(foreign_key.column_keys)}",
                    f"the foreign key to {target.name!r} does not pair the tenant columns, "
                    "and Citus keeps foreign keys between distributed tables to one shard",
                    f"tenant_foreign_key({foreign_key.column_keys[0]!r}, "
                    f"'{target.name}.{foreign_key.elements[0].column.name}')",
                )
            )
    return found


def _counter_problems(table: Table) -> list[Finding]:
    found: list[Finding] = []
    counter = table.autoincrement_column
    if counter is not None and not isinstance(counter.identity, Identity):
        found.append(
            Finding(
                "citus_serial_id",
                f"{table.name}.{counter.name}",
                "an autoincrementing key without an identity becomes a SERIAL, whose "
                "sequence default fails on inserts Citus routes through a worker",
                "declare it with identity_key() (a bigint identity)",
            )
        )
    for column in table.columns:
        if isinstance(column.identity, Identity) and not isinstance(column.type, BigInteger):
            found.append(
                Finding(
                    "citus_identity_not_bigint",
                    f"{table.name}.{column.name}",
                    "Citus distributes identity columns of type bigint only",
                    "declare it with identity_key() (a bigint identity)",
                )
            )
    return found


@dataclass(frozen=True)
class DistributedTable:
    """A table Citus knows: ``"distributed"`` on ``column`` in colocation group ``group``, or
    ``"reference"``."""

    kind: str
    column: str | None
    group: int


CitusState = Mapping[str, DistributedTable]
"""The tables Citus distributes already, by their quoted, schema-qualified name."""

_STATE_SQL = text("""
SELECT logicalrelid::regclass::text,
       CASE partmethod WHEN 'n' THEN 'reference' ELSE 'distributed' END,
       column_to_column_name(logicalrelid, partkey),
       colocationid
FROM pg_dist_partition
""")

_FOREIGN_KEYS_SQL = text("""
SELECT c.conname::text, c.conrelid::regclass::text, pg_get_constraintdef(c.oid)
FROM pg_constraint c
WHERE c.contype = 'f'
  AND (c.conrelid::regclass::text = ANY (:tables) OR c.confrelid::regclass::text = ANY (:tables))
ORDER BY 2, 1
""")


def citus_state(connection: Connection) -> dict[str, DistributedTable]:
    """The tables of the database Citus distributes or replicates, by name."""
    return {
        name: DistributedTable(kind, column, group)
        for name, kind, column, group in connection.execute(_STATE_SQL)
    }


def distribution_statements(
    state: CitusState,
    foreign_keys: Sequence[tuple[str, str, str]],
    tenant_tables: Mapping[str, str],
    reference_tables: Sequence[str],
    *,
    shard_count: int | None = None,
) -> list[str]:
    """The statements that distribute ``tenant_tables`` (quoted name: tenant column) and
    replicate ``reference_tables``, given what Citus already holds (``state``) and the
    ``foreign_keys`` (name, table, definition) touching those tables; none when all are done.

    Refuses a tenant table distributed already on another column, or with another group than
    the other tenant tables: moving it is a decision for its owner, not a side effect.
    """
    groups = set()
    for name, column in tenant_tables.items():
        known = state.get(name)
        if known is None:
            continue
        if known.kind != "distributed" or known.column != column:
            raise TenancyMisuse(
                f"{name} is a {known.kind} table of Citus on {known.column!r}, not distributed "
                f"on its tenant column {column!r}; undistribute it first (undistribute_table)"
            )
        groups.add(known.group)
    if len(groups) > 1:
        raise TenancyMisuse(
            "the tenant tables already distributed are not colocated with each other; "
            "colocate them first (alter_distributed_table(..., colocate_with => ...))"
        )
    references = [name for name in reference_tables if name not in state]
    distributed = [name for name in tenant_tables if name not in state]
    if not references and not distributed:
        return []
    anchor = next((name for name in tenant_tables if name in state), None)
    statements = ["SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"]
    statements += [
        f"ALTER TABLE {table} DROP CONSTRAINT {_QUOTE.quote(name)}"
        for name, table, _ in foreign_keys
    ]
    statements += [f"SELECT create_reference_table({_literal(name)})" for name in references]
    for name in distributed:
        arguments = [_literal(name), _literal(tenant_tables[name])]
        if anchor is None:
            arguments.append("colocate_with => 'none'")
            if shard_count is not None:
                arguments.append(f"shard_count => {int(shard_count)}")
            anchor = name
        else:
            arguments.append(f"colocate_with => {_literal(anchor)}")
        statements.append(f"SELECT create_distributed_table({', '.join(arguments)})")
    statements += [
        f"ALTER TABLE {table} ADD CONSTRAINT {_QUOTE.quote(name)} {definition}"
        for name, table, definition in foreign_keys
    ]
    return statements


def undistribute_tables(connection: Connection, tables: Sequence[str]) -> list[str]:
    """Turn each of ``tables`` that Citus still holds back into a plain table, cascading
    through the foreign keys that link it to others (so a table brought back by an earlier one
    is skipped); answers the statements it ran."""
    ran = []
    for name in tables:
        if name in citus_state(connection):
            statement = (
                f"SELECT undistribute_table({_literal(name)}, cascade_via_foreign_keys => true)"
            )
            connection.exec_driver_sql(statement)
            ran.append(statement)
    return ran


def distribute_tables(
    connection: Connection,
    tenant_tables: Mapping[str, str],
    reference_tables: Sequence[str] = (),
    *,
    shard_count: int | None = None,
) -> list[str]:
    """Distribute ``tenant_tables`` (quoted, schema-qualified name: tenant column) colocated
    on their tenant columns and replicate ``reference_tables``, in ``connection``'s
    transaction; answers the statements it ran (none when everything was done already)."""
    state = citus_state(connection)
    todo = [n for n in [*tenant_tables, *reference_tables] if n not in state]
    foreign_keys: list[tuple[str, str, str]] = []
    if todo:
        rows = connection.execute(_FOREIGN_KEYS_SQL, {"tables": todo})
        foreign_keys = [(str(n), str(t), str(d)) for n, t, d in rows]
    statements = distribution_statements(
        state, foreign_keys, tenant_tables, reference_tables, shard_count=shard_count
    )
    for statement in statements:
        connection.exec_driver_sql(statement)
    return statements


def distribute(
    bind: Engine | Connection, metadata: MetaData, *, shard_count: int | None = None
) -> list[str]:
    """Distribute ``metadata``'s tenant tables on their tenant column, colocated, and make its
    other tables reference tables, in one transaction; run it as the tables' owner, after
    creating them. Refuses, before anything is sent, a schema with
    :func:`distribution_problems`. Answers the statements it ran; safe to run again."""
    problems = distribution_problems(metadata)
    if problems:
        listed = "\n".join(str(problem) for problem in problems)
        raise TenancyMisuse(f"Citus would refuse these tables:\n{listed}")
    tenant_tables: dict[str, str] = {}
    reference_tables: list[str] = []
    for table in metadata.sorted_tables:
        column = table.info.get(TENANT_TABLE_INFO_KEY)
        name = _QUOTE.format_table(table)
        if isinstance(column, str):
            tenant_tables[name] = column
        else:
            reference_tables.append(name)
    with _transaction(bind) as connection:
        return distribute_tables(
            connection, tenant_tables, reference_tables, shard_count=shard_count
        )


_INSTALLED_SQL = text(
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')"
)
_PROPAGATION_SQL = text(
    "SELECT COALESCE(current_setting('citus.propagate_set_commands', true), '')"
)


def citus_installed(bind: Engine | Connection) -> bool:
    """Whether ``bind``'s database is PostgreSQL with the ``citus`` extension (a coordinator,
    or a worker)."""
    if bind.dialect.name != "postgresql":
        return False
    with _transaction(bind) as connection:
        return bool(connection.execute(_INSTALLED_SQL).scalar_one())


def citus_findings(
    connection: Connection, tenant_tables: Mapping[str, str], shared_tables: Sequence[str] = ()
) -> list[Finding]:
    """What a live Citus database lacks for the kit, the checker's ``--citus`` mode: the
    extension, the setting propagation the tenant needs (for the connecting role), each tenant
    table (name: tenant column) distributed on its tenant column, all colocated, and each
    shared table a reference table."""
    if not citus_installed(connection):
        return [
            Finding(
                "citus_missing",
                "database",
                "the citus extension is not installed in this database",
                "CREATE EXTENSION citus (on the coordinator), then distribute the tables",
            )
        ]
    findings = []
    propagation = connection.execute(_PROPAGATION_SQL).scalar_one()
    if propagation != "local":
        findings.append(
            Finding(
                "citus_set_propagation",
                "citus.propagate_set_commands",
                f"it is {propagation or 'unset'!r} for this role, so the tenant each "
                "transaction names with SET LOCAL never reaches the workers",
                "connect with -c citus.propagate_set_commands=local, or ALTER ROLE <app> SET "
                "citus.propagate_set_commands = 'local'",
            )
        )
    state = citus_state(connection)
    groups: dict[int, list[str]] = {}
    for name, column in sorted(tenant_tables.items()):
        known = state.get(name)
        if known is None:
            findings.append(
                Finding(
                    "citus_not_distributed",
                    name,
                    "a tenant table Citus does not distribute: it stays on the coordinator",
                    "fastapi_tenancy.postgres.citus.distribute(), or op.distribute_tables()",
                )
            )
        elif known.kind != "distributed" or known.column != column:
            findings.append(
                Finding(
                    "citus_wrong_distribution_column",
                    name,
                    f"a {known.kind} table on {known.column!r}, not distributed on its tenant "
                    f"column {column!r}: tenant statements reach every shard",
                    "undistribute_table() it, then distribute it on the tenant column",
                )
            )
        else:
            groups.setdefault(known.group, []).append(name)
    if len(groups) > 1:
        listed = "; ".join(", ".join(names) for names in groups.values())
        findings.append(
            Finding(
                "citus_not_colocated",
                "tenant tables",
                f"the tenant tables are in {len(groups)} colocation groups ({listed}): joins "
                "between groups cannot run on one shard",
                "alter_distributed_table(<table>, colocate_with => <a table of the other group>)",
            )
        )
    for name in sorted(shared_tables):
        known = state.get(name)
        if known is None or known.kind != "reference":
            findings.append(
                Finding(
                    "citus_shared_not_reference",
                    name,
                    "a shared table that is not a reference table: joined with tenant tables, "
                    "it is pulled to the coordinator",
                    "create_reference_table(), or distribute()",
                )
            )
    return findings


@contextmanager
def _transaction(bind: Engine | Connection) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.begin() as connection:
        yield connection
