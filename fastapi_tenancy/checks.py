"""Checks of a live database that the tenant wall depends on, whatever the database.

The ORM scoping compares the tenant column with the bound key, so the database must compare the
two exactly. SQLite and PostgreSQL do; MySQL and MariaDB compare strings under the column's
collation, and their default collations ignore case (``utf8mb4_general_ci``): there tenant
``ACME`` reads, changes and deletes ``acme``'s rows, and ``tenant_unique`` holds across them.
``TenantScoped`` declares its tenant column with :class:`~fastapi_tenancy.TenantKey`, which has
a binary collation there; tables created before it, or by hand, may not. Run the check at
startup (``await tenancy.check_database()``) or from a script::

    findings = find_case_insensitive_tenant_columns(engine, SQLModel.metadata)

What it reports, by stable ``code``:

================================  ==========================================================
``tenant_collation_not_binary``   a tenant column whose collation is not binary (MySQL,
                                  MariaDB): keys that differ in case, or in accents, match
``tenant_model_forgotten``        a mapped table with a tenant column that is not a tenant
                                  model (no database needed; see
                                  :func:`find_forgotten_tenant_models`)
================================  ==========================================================

The PostgreSQL row-level security checker (:mod:`fastapi_tenancy.postgres.check`) answers
with :class:`Finding` objects too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import MetaData, Table, bindparam, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapper, registry

from .exceptions import TenancyMisuse
from .isolation.placement import stored_schema
from .models import TENANT_TABLE_INFO_KEY, TenantScoped, tenant_table_names

__all__ = ["Finding", "find_case_insensitive_tenant_columns", "find_forgotten_tenant_models"]

MYSQL_DIALECTS = ("mysql", "mariadb")


@dataclass(frozen=True, order=True)
class Finding:
    """One gap in the wall: a stable ``code``, what it is about, why it matters, and a fix."""

    code: str
    subject: str
    detail: str
    fix: str

    def __str__(self) -> str:
        return f"{self.code}: {self.subject}: {self.detail}\n    fix: {self.fix}"


_COLUMNS_SQL = text("""
SELECT table_name, column_name, column_type, collation_name, is_nullable
FROM information_schema.columns
WHERE table_schema = COALESCE(:schema, DATABASE()) AND table_name IN :tables
ORDER BY table_name, column_name
""").bindparams(bindparam("tables", expanding=True))


def _tenant_tables(metadata: MetaData | Iterable[Table] | None) -> list[Table]:
    if metadata is None:
        tables: Iterable[Table] = _mapped_tenant_tables()
    elif isinstance(metadata, MetaData):
        tables = metadata.sorted_tables
    else:
        tables = metadata
    return [t for t in tables if isinstance(t.info.get(TENANT_TABLE_INFO_KEY), str)]


def _mapped_tenant_tables() -> list[Table]:
    found: dict[int, Table] = {}
    pending: list[type] = [TenantScoped]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        table = cls.__dict__.get("__table__")
        if isinstance(table, Table):
            found[id(table)] = table
    return list(found.values())


def find_case_insensitive_tenant_columns(
    bind: Engine | Connection, metadata: MetaData | Iterable[Table] | None = None
) -> list[Finding]:
    """The tenant columns of a live MySQL or MariaDB database that do not compare exactly.

    Tenant tables are those of ``metadata`` (a ``MetaData`` or ``Table`` objects) whose
    ``Table.info`` names a tenant column, as ``TenantScoped`` models' tables do; by default
    those of every ``TenantScoped`` model. Tables the database does not have are skipped. A
    column is reported when its collation is not binary (``_bin``); binary types and columns of
    other types (integers, UUIDs) compare exactly. Other databases compare strings exactly: the
    answer there is ``[]``. Async: ``await conn.run_sync(find_case_insensitive_tenant_columns)``.
    """
    if isinstance(bind, Engine):
        if bind.dialect.name not in MYSQL_DIALECTS:
            return []
        with bind.connect() as conn:
            return find_case_insensitive_tenant_columns(conn, metadata)
    conn = bind
    if conn.dialect.name not in MYSQL_DIALECTS:
        return []
    by_schema: dict[str | None, dict[str, str]] = {}
    for table in _tenant_tables(metadata):
        schema = stored_schema(table.schema)
        by_schema.setdefault(schema, {})[table.name] = table.info[TENANT_TABLE_INFO_KEY]
    quote = conn.dialect.identifier_preparer.quote_identifier
    findings = []
    for schema, columns in by_schema.items():
        shown_schema = schema or conn.execute(text("SELECT DATABASE()")).scalar_one()
        rows = conn.execute(_COLUMNS_SQL, {"schema": schema, "tables": sorted(columns)})
        for table_name, column_name, column_type, collation, nullable in rows:
            if columns.get(table_name) != column_name or collation is None:
                continue
            if collation.endswith("_bin"):
                continue
            subject = f"{shown_schema}.{table_name}.{column_name}"
            null = "NULL" if nullable == "YES" else "NOT NULL"
            findings.append(
                Finding(
                    "tenant_collation_not_binary",
                    subject,
                    f"compares with the collation {collation}, so tenant keys that differ in "
                    f"case (or accents) match each other's rows",
                    f"ALTER TABLE {quote(shown_schema)}.{quote(table_name)} MODIFY "
                    f"{quote(column_name)} {column_type} CHARACTER SET utf8mb4 COLLATE "
                    f"utf8mb4_bin {null} (and the same for the columns foreign keys pair "
                    f"with it); declare it with fastapi_tenancy.TenantKey",
                )
            )
    return findings


EXEMPT_ATTRIBUTE = "__tenancy_exempt__"
"""Set it to ``True`` on a model whose tenant-named column is data, not a scope: the table is
deliberately shared by every tenant and never scoped (an audit log the operators read, say)."""


def _registry_mappers(metadata: MetaData | None) -> list[Mapper[Any]]:
    """The mappers of every registry that maps a tenant model (of ``metadata`` only, if given):
    a forgotten model lives beside the tenant models it should have been one of."""
    registries: dict[int, registry] = {}
    pending: list[type] = [TenantScoped]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        mapper: Mapper[Any] | None = inspect(cls, raiseerr=False)  # None once disposed
        if isinstance(cls.__dict__.get("__table__"), Table) and mapper is not None:
            owner: registry = mapper.registry
            registries[id(owner)] = owner
    mappers = [mapper for owner in registries.values() for mapper in owner.mappers]
    if metadata is not None:
        mappers = [m for m in mappers if getattr(m.local_table, "metadata", None) is metadata]
    return mappers


def find_forgotten_tenant_models(metadata: MetaData | None = None) -> list[Finding]:
    """Mapped models with a tenant column that are not tenant models, or ``[]``.

    A model that declares its own ``tenant_id`` (or a column named like another tenant model's
    tenant column) but does not inherit ``TenantScoped`` is never scoped: a tenant session reads
    every tenant's rows of it. ``Tenancy.install()`` refuses to start with one; set
    ``__tenancy_exempt__ = True`` on a model whose table is deliberately shared by every tenant.
    The models checked are those of the registries that map tenant models (of ``metadata``
    only, when given); no database is needed.
    """
    names = {"tenant_id", *tenant_table_names().values()}
    findings = []
    for mapper in _registry_mappers(metadata):
        table = mapper.local_table
        if not isinstance(table, Table) or TENANT_TABLE_INFO_KEY in table.info:
            continue
        if getattr(mapper.class_, EXEMPT_ATTRIBUTE, False) is True:
            continue
        columns = sorted(c.name for c in table.columns if c.name in names)
        if not columns:
            continue
        name = mapper.class_.__name__
        findings.append(
            Finding(
                "tenant_model_forgotten",
                f"{name} (table {table.fullname})",
                f"has the tenant column {columns[0]} but is not a tenant model, so tenant "
                "sessions read and write every tenant's rows of it",
                f"inherit TenantScoped (class {name}(TenantScoped, table=True)), or set "
                f"__tenancy_exempt__ = True on {name} if every tenant shares its rows",
            )
        )
    return sorted(findings)


def refuse_forgotten_tenant_models() -> None:
    """Raise ``TenancyMisuse`` naming every forgotten tenant model (see above)."""
    findings = find_forgotten_tenant_models()
    if findings:
        raise TenancyMisuse(
            "tenant columns outside tenant models:\n" + "\n".join(map(str, findings))
        )
