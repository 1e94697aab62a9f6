"""Inspect a live PostgreSQL database and list what the tenant wall is missing.

Run it as the application's role (or name that role with ``role=`` / ``--role`` from an owner's
connection)::

    fastapi-tenancy-check postgresql://app@db/prod --schema public
    fastapi-tenancy-check postgresql+asyncpg://app@db/prod
    python -m fastapi_tenancy.postgres postgresql://app@db/prod

The URL may name a sync driver (``postgresql://`` means psycopg) or an async one (asyncpg,
``psycopg_async``): an async URL is checked through an async engine, so the application's own
URL and driver serve as they are.

It exits with 1 when it finds anything, 0 when it finds nothing, 2 when it cannot run. Tenant
tables are those with a tenant column (``tenant_id`` unless told otherwise), or exactly the
tenant tables of a ``MetaData`` passed as ``metadata=`` / ``--metadata module:attribute``.

What it reports, by stable ``code``:

==========================  ================================================================
``rls_disabled``            a tenant table without row-level security
``rls_not_forced``          ... enabled but not forced (its owner bypasses it)
``policy_missing``          no policy for some of SELECT, INSERT, UPDATE, DELETE
``policy_not_tenant``       a permissive policy that compares neither the tenant nor a setting
``row_scope_policy_missing``  (with ``metadata``) a table with a row scope (an owner column)
                            but not the kit's restrictive policy for it (nor, when the scope
                            has public rows, those keeping UPDATE and DELETE to its own rows)
``family_policy_missing``   (with ``metadata``) a table whose tenants read their family's rows
                            (``__tenant_reads__``) without a SELECT policy admitting the family
``public_policy_missing``   (with ``metadata``) a row scope with public rows whose restrictive
                            policy does not read them
``row_policy_missing``      (with ``metadata``) a table with a named row policy
                            (``__row_policies__``) but not the kit's restrictive policy for it
``tenant_index_missing``    no index whose first column is the tenant column
``unique_without_tenant``   a unique constraint or index without the tenant column (an
                            existence oracle across tenants); primary keys only with
                            ``strict_keys``
``foreign_key_without_tenant``  a foreign key between tenant tables that leaves the tenant out
``role_superuser``          the role is a superuser (bypasses row-level security)
``role_bypassrls``          the role has BYPASSRLS
``role_can_become_bypassing``  the role can SET ROLE to a superuser or BYPASSRLS role
``role_owns_table``         the role owns a tenant table (can switch its security off)
``truncate_granted``        the role may TRUNCATE a tenant table (no policy stops TRUNCATE)
``partition_readable``      the role may use a partition of a tenant table directly, and the
                            partition has no policies of its own
``view_bypasses_rls``       the role may read a view that runs as an owner who bypasses the
                            policies, or a materialized view of a tenant table
``security_definer_function``  the role may run a SECURITY DEFINER function whose owner
                            bypasses the policies
``tenant_model_forgotten``  (with ``metadata``) a mapped model of it with a tenant column
                            that is not a tenant model, so ORM sessions never scope it
==========================  ================================================================

With ``--citus`` (``citus=True``) on a Citus coordinator it also reports primary keys without
the tenant column, and ``citus_missing``, ``citus_set_propagation``,
``citus_not_distributed``, ``citus_wrong_distribution_column``, ``citus_not_colocated`` and
(with ``metadata``) ``citus_shared_not_reference``; see
:func:`~fastapi_tenancy.postgres.citus.citus_findings`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ..checks import Finding, find_forgotten_tenant_models
from ..models import TENANT_TABLE_INFO_KEY
from .citus import citus_findings
from .policies import (
    _QUOTE,
    FAMILY_SETTINGS,
    OWNED_COMMANDS,
    TenantTable,
    owned_policy_name,
    row_policy_name,
    scope_policy_name,
    tenant_tables,
)

__all__ = ["Finding", "check_database", "main"]

_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
_TRUE_OPTIONS = {"true", "on", "yes", "1"}


@dataclass
class _Table:
    oid: int
    name: str
    tenant_attnum: int
    tenant_column: str
    rls: bool
    forced: bool
    owned: bool
    truncate: bool
    wanted: TenantTable | None = None  # the metadata's table, when the check has metadata


_TABLES_SQL = text("""
SELECT c.oid, n.nspname, c.relname,
       CAST(c.oid AS regclass)::text,
       a.attnum, a.attname, c.relrowsecurity, c.relforcerowsecurity,
       pg_has_role(:role, c.relowner, 'MEMBER'),
       has_table_privilege(:role, c.oid, 'TRUNCATE')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname = ANY(:schemas) AND a.attname = ANY(:columns)
ORDER BY n.nspname, c.relname, a.attnum
""")

_ROLE_SQL = text("""
SELECT r.rolname, r.rolsuper, r.rolbypassrls,
       ARRAY(SELECT b.rolname::text FROM pg_roles b
             WHERE (b.rolsuper OR b.rolbypassrls) AND b.oid <> r.oid
               AND pg_has_role(r.oid, b.oid, 'MEMBER') ORDER BY b.rolname)
FROM pg_roles r WHERE r.rolname = COALESCE(CAST(:role AS text), current_user)
""")

_POLICIES_SQL = text("""
SELECT p.polrelid, p.polname, CAST(p.polcmd AS text), p.polpermissive,
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
       0 = ANY(p.polroles) OR EXISTS (
           SELECT 1 FROM unnest(p.polroles) AS r(oid) WHERE pg_has_role(:role, r.oid, 'MEMBER')),
       ARRAY(SELECT a.attname::text FROM pg_depend d
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_policy'::regclass AND d.objid = p.oid
               AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0)
FROM pg_policy p WHERE p.polrelid = ANY(CAST(:oids AS oid[]))
ORDER BY p.polname
""")

_INDEXES_SQL = text("""
SELECT i.indrelid, COALESCE(con.conname, ic.relname)::text, i.indisunique, i.indisprimary,
       CAST(i.indkey AS int2[])
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
WHERE i.indrelid = ANY(CAST(:oids AS oid[]))
ORDER BY 2
""")

_FOREIGN_KEYS_SQL = text("""
SELECT con.conrelid, con.conname::text, con.confrelid,
       CAST(con.conkey AS int2[]), CAST(con.confkey AS int2[])
FROM pg_constraint con
WHERE con.contype = 'f' AND con.conrelid = ANY(CAST(:oids AS oid[]))
  AND con.confrelid = ANY(CAST(:oids AS oid[]))
ORDER BY con.conname
""")

_PARTITIONS_SQL = text("""
WITH RECURSIVE parts(oid, root) AS (
    SELECT i.inhrelid, i.inhparent FROM pg_inherits i
    WHERE i.inhparent = ANY(CAST(:oids AS oid[]))
    UNION ALL
    SELECT i.inhrelid, p.root FROM pg_inherits i JOIN parts p ON i.inhparent = p.oid
)
SELECT CAST(c.oid AS regclass)::text, p.root, c.relrowsecurity,
       EXISTS (SELECT 1 FROM pg_policy pol WHERE pol.polrelid = p.oid),
       has_table_privilege(:role, p.oid, 'SELECT, INSERT, UPDATE, DELETE')
FROM parts p
JOIN pg_class c ON c.oid = p.oid
ORDER BY 1
""")

_VIEWS_SQL = text("""
SELECT DISTINCT CAST(v.oid AS regclass)::text, CAST(v.relkind AS text),
       v.reloptions, o.rolname::text, o.rolsuper OR o.rolbypassrls,
       pg_has_role(v.relowner, t.relowner, 'MEMBER') AND NOT t.relforcerowsecurity,
       has_table_privilege(:role, v.oid, 'SELECT'), t.oid
FROM pg_depend d
JOIN pg_rewrite rw ON rw.oid = d.objid
JOIN pg_class v ON v.oid = rw.ev_class
JOIN pg_roles o ON o.oid = v.relowner
JOIN pg_class t ON t.oid = d.refobjid
WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = ANY(CAST(:oids AS oid[])) AND v.oid <> d.refobjid
  AND v.relkind IN ('v', 'm')
ORDER BY 1
""")

_FUNCTIONS_SQL = text("""
SELECT CAST(p.oid AS regprocedure)::text, o.rolname::text,
       o.rolsuper OR o.rolbypassrls OR EXISTS (
           SELECT 1 FROM pg_class t
           WHERE t.oid = ANY(CAST(:oids AS oid[])) AND NOT t.relforcerowsecurity
             AND pg_has_role(p.proowner, t.relowner, 'MEMBER'))
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_roles o ON o.oid = p.proowner
WHERE p.prosecdef AND n.nspname = ANY(:schemas)
  AND has_function_privilege(:role, p.oid, 'EXECUTE')
ORDER BY 1
""")


def _tenant_columns(metadata: MetaData | None) -> dict[tuple[str | None, str], TenantTable] | None:
    """``{(schema, name): table}`` of ``metadata``'s tenant tables."""
    if metadata is None:
        return None
    return {(t.schema, t.name): t for t in tenant_tables(metadata)}


def _find_tables(
    conn: Connection,
    role: str,
    schemas: list[str],
    tenant_columns: Sequence[str],
    metadata: MetaData | None,
    exclude: Iterable[str],
) -> list[_Table]:
    wanted = _tenant_columns(metadata)
    columns = (
        sorted({table.tenant_column for table in wanted.values()})
        if wanted is not None
        else list(tenant_columns)
    )
    if not columns:
        return []
    skipped = set(exclude)
    candidates: dict[int, list[Any]] = {}
    rows = conn.execute(_TABLES_SQL, {"role": role, "schemas": schemas, "columns": columns})
    for row in rows:
        candidates.setdefault(row[0], []).append(row)
    tables = []
    for oid, found in candidates.items():
        _, schema, name, shown = found[0][:4]
        if {name, shown, f"{schema}.{name}"} & skipped:
            continue
        by_column = {row[5]: row for row in found}
        entry = None
        if wanted is not None:
            entry = wanted.get((schema, name)) or wanted.get((None, name))
            if entry is None:
                continue
            column = entry.tenant_column
        else:
            column = next(c for c in tenant_columns if c in by_column)
        if column not in by_column:
            continue
        *_, attnum, attname, rls, forced, owned, truncate = by_column[column]
        tables.append(_Table(oid, shown, attnum, attname, rls, forced, owned, truncate, entry))
    return tables


def _role_findings(conn: Connection, role: str | None) -> tuple[str, list[Finding]]:
    row = conn.execute(_ROLE_SQL, {"role": role}).one_or_none()
    if row is None:
        raise ValueError(f"no role named {role!r}")
    name, superuser, bypassrls, bypassing = row
    findings = []
    if superuser:
        findings.append(
            Finding(
                "role_superuser",
                name,
                "a superuser bypasses every row-level security policy, silently",
                "connect the application as an ordinary role (CREATE ROLE app LOGIN)",
            )
        )
    if bypassrls:
        findings.append(
            Finding(
                "role_bypassrls",
                name,
                "BYPASSRLS skips every policy, silently",
                f"ALTER ROLE {name} NOBYPASSRLS; use a separate admin role and engine",
            )
        )
    if not superuser:
        for other in bypassing:
            findings.append(
                Finding(
                    "role_can_become_bypassing",
                    name,
                    f"it can SET ROLE {other}, which bypasses row-level security",
                    f"REVOKE {other} FROM {name}",
                )
            )
    return str(name), findings


def _table_findings(
    table: _Table,
    policies: list[tuple[Any, ...]],
    indexes: list[tuple[Any, ...]],
    role: str,
    strict_keys: bool,
) -> list[Finding]:
    findings = []
    name = table.name
    if not table.rls:
        findings.append(
            Finding(
                "rls_disabled",
                name,
                "row-level security is not enabled: every statement sees every tenant",
                "fastapi_tenancy.postgres.apply_rls(owner_engine, metadata), or the migration",
            )
        )
    if not table.forced:
        findings.append(
            Finding(
                "rls_not_forced",
                name,
                "row-level security is not forced: the table's owner bypasses it",
                f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY (apply_rls does)",
            )
        )
    covered: set[str] = set()
    for _, policy, cmd, permissive, using, check, applies, _columns in policies:
        if not applies:
            continue
        covered.update(_COMMANDS if cmd == "*" else {cmd})
        if not permissive:
            continue
        for expression in (using, check):
            if expression is None:
                continue
            if table.tenant_column not in expression and "current_setting" not in expression:
                findings.append(
                    Finding(
                        "policy_not_tenant",
                        f"{name} policy {policy}",
                        f"admits rows without comparing the tenant: {expression}",
                        "compare the tenant column with the tenant setting (apply_rls does)",
                    )
                )
                break
    if table.wanted is not None:
        findings += _arm_findings(table.wanted, name, policies)
    missing = [command for key, command in _COMMANDS.items() if key not in covered]
    if missing:
        findings.append(
            Finding(
                "policy_missing",
                name,
                f"no policy for the role's {', '.join(missing)}",
                "fastapi_tenancy.postgres.apply_rls(owner_engine, metadata)",
            )
        )
    if not any(keys and keys[0] == table.tenant_attnum for *_, keys in indexes):
        findings.append(
            Finding(
                "tenant_index_missing",
                name,
                f"no index leads with {table.tenant_column}: every policy check scans",
                f"CREATE INDEX ON {name} ({table.tenant_column}, ...)",
            )
        )
    for _, index, unique, primary, keys in indexes:
        if not unique or table.tenant_attnum in keys or (primary and not strict_keys):
            continue
        findings.append(
            Finding(
                "unique_without_tenant",
                f"{name} {index}",
                "unique across tenants: a refused insert tells one tenant that another has "
                "the value",
                f"make it UNIQUE ({table.tenant_column}, ...): tenant_unique(...)",
            )
        )
    if table.owned:
        findings.append(
            Finding(
                "role_owns_table",
                f"{role} owns {name}",
                "an owner can switch row-level security off (ALTER TABLE ... DISABLE)",
                "give the table to the migration role: ALTER TABLE ... OWNER TO owner",
            )
        )
    if table.truncate:
        findings.append(
            Finding(
                "truncate_granted",
                f"{role} on {name}",
                "TRUNCATE ignores row-level security and empties every tenant",
                f"REVOKE TRUNCATE ON {name} FROM {role}",
            )
        )
    return findings


def _arm_findings(wanted: TenantTable, name: str, policies: list[tuple[Any, ...]]) -> list[Finding]:
    """What the metadata's table needs beyond the tenant policies: its family's SELECT arm,
    each row scope's restrictive policy, the public arm of a scope with public rows, and each
    named row policy's restrictive policy."""
    findings = []
    applying = [row for row in policies if row[6]]
    family = FAMILY_SETTINGS.get(wanted.tenant_reads)
    if family is not None and not any(
        permissive and cmd in ("r", "*") and f"'{family}'" in (using or "")
        for _, _, cmd, permissive, using, *_ in applying
    ):
        findings.append(
            Finding(
                "family_policy_missing",
                name,
                f"no SELECT policy admits the tenant's {wanted.tenant_reads}: raw SQL on the "
                "role reads the tenant's own rows only, where the ORM reads its family's",
                "fastapi_tenancy.postgres.apply_rls(owner_engine, metadata)",
            )
        )
    restrictive = {row[1]: set(row[7]) for row in applying if not row[3]}
    for scope in wanted.row_scopes:
        needed = [scope_policy_name(scope.scope)]
        if scope.public_column is not None:
            needed += [owned_policy_name(scope.scope, command) for command in OWNED_COMMANDS]
        missing = [policy for policy in needed if policy not in restrictive]
        if missing:
            findings.append(
                Finding(
                    "row_scope_policy_missing",
                    name,
                    f"no restrictive policy {', '.join(missing)} for the row scope "
                    f"{scope.scope}: raw SQL on the role reads or writes other {scope.scope}s' "
                    "rows of its tenant",
                    "fastapi_tenancy.postgres.apply_rls(owner_engine, metadata)",
                )
            )
        policy = scope_policy_name(scope.scope)
        if scope.public_column is not None and scope.public_column not in restrictive.get(
            policy, {scope.public_column}
        ):
            findings.append(
                Finding(
                    "public_policy_missing",
                    name,
                    f"the policy {policy} does not read {scope.public_column}: raw SQL on the "
                    f"role does not read other {scope.scope}s' public rows, where the ORM does",
                    "fastapi_tenancy.postgres.apply_rls(owner_engine, metadata)",
                )
            )
    for row_policy in wanted.row_policies:
        policy = row_policy_name(row_policy.name)
        if policy not in restrictive:
            findings.append(
                Finding(
                    "row_policy_missing",
                    name,
                    f"no restrictive policy {policy} for the row policy {row_policy.name}: raw "
                    "SQL on the role reads and writes rows outside it",
                    "fastapi_tenancy.postgres.apply_rls(owner_engine, metadata)",
                )
            )
    return findings


def _foreign_key_findings(conn: Connection, tables: dict[int, _Table]) -> list[Finding]:
    findings = []
    rows = conn.execute(_FOREIGN_KEYS_SQL, {"oids": list(tables)})
    for child, name, parent, keys, refkeys in rows:
        tenant_pair = (tables[child].tenant_attnum, tables[parent].tenant_attnum)
        if tenant_pair in zip(keys, refkeys, strict=False):
            continue
        findings.append(
            Finding(
                "foreign_key_without_tenant",
                f"{tables[child].name} {name}",
                f"can point at another tenant's row of {tables[parent].name}, and the check "
                f"that it exists bypasses row-level security",
                "use fastapi_tenancy.tenant_foreign_key(...): (tenant_id, x) REFERENCES "
                "parent (tenant_id, id)",
            )
        )
    return findings


def _exposure_findings(
    conn: Connection, tables: dict[int, _Table], role: str, schemas: list[str]
) -> list[Finding]:
    findings = []
    oids = list(tables)
    for partition, root, rls, has_policies, usable in conn.execute(
        _PARTITIONS_SQL, {"oids": oids, "role": role}
    ):
        if usable and not (rls and has_policies):
            findings.append(
                Finding(
                    "partition_readable",
                    f"{role} on {partition}",
                    f"a partition of {tables[root].name}, usable directly, where the parent's "
                    f"policies do not apply",
                    f"REVOKE ALL ON {partition} FROM {role} (grant on the parent only)",
                )
            )
    seen = set()
    for (
        view,
        kind,
        options,
        owner,
        owner_bypasses,
        owner_owns,
        readable,
        tenant_oid,
    ) in conn.execute(_VIEWS_SQL, {"oids": oids, "role": role}):
        if not readable or view in seen:
            continue
        invoker = any(
            option.split("=", 1)[0] == "security_invoker"
            and option.split("=", 1)[1].lower() in _TRUE_OPTIONS
            for option in options or ()
        )
        if kind == "m":
            detail = "a materialized view stores every tenant's rows and has no policies"
            fix = f"REVOKE ALL ON {view} FROM {role}"
        elif not invoker and (owner_bypasses or owner_owns):
            detail = (
                f"runs as its owner {owner}, who bypasses the policies of {tables[tenant_oid].name}"
            )
            fix = f"ALTER VIEW {view} SET (security_invoker = true)"
        else:
            continue
        seen.add(view)
        findings.append(Finding("view_bypasses_rls", f"{role} on {view}", detail, fix))
    for function, owner, owner_bypasses in conn.execute(
        _FUNCTIONS_SQL, {"oids": oids, "role": role, "schemas": schemas}
    ):
        if owner_bypasses:
            findings.append(
                Finding(
                    "security_definer_function",
                    f"{role} may run {function}",
                    f"SECURITY DEFINER runs as {owner}, who bypasses the policies; what it "
                    f"reads of tenant tables, it must filter itself",
                    f"make it SECURITY INVOKER, or REVOKE EXECUTE ON FUNCTION {function} "
                    f"FROM {role}",
                )
            )
    return findings


def check_database(
    bind: Engine | Connection,
    *,
    role: str | None = None,
    schemas: Sequence[str] | None = None,
    tenant_columns: Sequence[str] = ("tenant_id",),
    metadata: MetaData | None = None,
    exclude: Iterable[str] = (),
    strict_keys: bool = False,
    citus: bool = False,
) -> list[Finding]:
    """Everything the tenant wall is missing in a live database, or ``[]``.

    ``role`` is the application's role (default: the connecting one). ``schemas`` default to
    the connection's ``search_path``. Tenant tables are the tables with one of
    ``tenant_columns``, or exactly ``metadata``'s tenant tables; ``exclude`` names tables to
    leave out (``name`` or ``schema.name``). ``strict_keys`` also reports primary keys without
    the tenant column. With ``metadata``, forgotten tenant models are reported too (see
    :func:`~fastapi_tenancy.checks.find_forgotten_tenant_models`). ``citus`` checks a Citus
    coordinator too (:func:`~fastapi_tenancy.postgres.citus.citus_findings`; with
    ``metadata``, its other tables must be reference tables), and primary keys without the
    tenant column (Citus refuses them). Async: ``await conn.run_sync(check_database)``.
    """
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return check_database(
                conn,
                role=role,
                schemas=schemas,
                tenant_columns=tenant_columns,
                metadata=metadata,
                exclude=exclude,
                strict_keys=strict_keys,
                citus=citus,
            )
    conn = bind
    strict_keys = strict_keys or citus
    forgotten = [] if metadata is None else find_forgotten_tenant_models(metadata)
    role_name, findings = _role_findings(conn, role)
    if schemas is None:
        schemas = list(conn.execute(text("SELECT current_schemas(false)")).scalar_one())
    schema_list = list(schemas)
    found = _find_tables(conn, role_name, schema_list, tenant_columns, metadata, exclude)
    tables = {table.oid: table for table in found}
    if citus:
        shared = [] if metadata is None else _shared_tables(conn, metadata)
        tenant = {table.name: table.tenant_column for table in found}
        findings += citus_findings(conn, tenant, shared)
    if not tables:
        return findings + forgotten
    policies: dict[int, list[tuple[Any, ...]]] = {oid: [] for oid in tables}
    for row in conn.execute(_POLICIES_SQL, {"oids": list(tables), "role": role_name}):
        policies[row[0]].append(tuple(row))
    indexes: dict[int, list[tuple[Any, ...]]] = {oid: [] for oid in tables}
    for row in conn.execute(_INDEXES_SQL, {"oids": list(tables)}):
        indexes[row[0]].append(tuple(row))
    for oid, table in tables.items():
        findings += _table_findings(table, policies[oid], indexes[oid], role_name, strict_keys)
    findings += _foreign_key_findings(conn, tables)
    findings += _exposure_findings(conn, tables, role_name, schema_list)
    return findings + forgotten


def _shared_tables(conn: Connection, metadata: MetaData) -> list[str]:
    """The names PostgreSQL shows for ``metadata``'s tables without a tenant column that
    exist in the database."""
    names = [
        _QUOTE.format_table(table)
        for table in metadata.sorted_tables
        if TENANT_TABLE_INFO_KEY not in table.info
    ]
    if not names:
        return []
    rows = conn.execute(_SHOWN_SQL, {"names": names})
    return sorted(str(row[0]) for row in rows if row[0] is not None)


_SHOWN_SQL = text("SELECT to_regclass(name)::text FROM unnest(CAST(:names AS text[])) AS name")


def _load_metadata(spec: str) -> MetaData:
    module_name, _, attribute = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in (attribute or "metadata").split("."):
        target = getattr(target, part)
    if not isinstance(target, MetaData):
        raise TypeError(f"{spec} is not a MetaData")
    return target


def _engine_url(raw: str) -> URL:
    url = make_url(raw)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() != "postgresql":
        raise ValueError("the check needs a PostgreSQL URL")
    return url


def _run_check(url: URL, options: dict[str, Any]) -> list[Finding]:
    if url.get_dialect().is_async:
        return asyncio.run(_run_check_async(url, options))
    engine = create_engine(url, poolclass=NullPool)
    try:
        return check_database(engine, **options)
    finally:
        engine.dispose()


async def _run_check_async(url: URL, options: dict[str, Any]) -> list[Finding]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync_conn: check_database(sync_conn, **options))
    finally:
        await engine.dispose()


CANNOT_RUN = (SQLAlchemyError, OSError, ValueError, TypeError, ImportError, AttributeError)
"""What :func:`findings_for` raises when the check cannot run (exit status 2)."""


def add_arguments(parser: argparse.ArgumentParser, *, url_required: bool = True) -> None:
    """The checker's arguments, on ``parser`` (``fastapi-tenancy check`` shares them)."""
    parser.add_argument(
        "url",
        metavar="DATABASE_URL",
        nargs=None if url_required else "?",
        help="connect as the application's role; sync (postgresql://, psycopg) or async "
        "(postgresql+asyncpg://, postgresql+psycopg_async://) URL",
    )
    parser.add_argument("--role", help="check this role instead of the connecting one")
    parser.add_argument("--schema", action="append", help="schema to inspect (repeatable)")
    parser.add_argument(
        "--tenant-column", action="append", help="tenant column name (repeatable; tenant_id)"
    )
    parser.add_argument("--metadata", help="module:attribute of the app's MetaData")
    parser.add_argument("--exclude", action="append", default=[], help="table to leave out")
    parser.add_argument("--strict-keys", action="store_true", help="report primary keys too")
    parser.add_argument(
        "--citus", action="store_true", help="check a Citus coordinator's distribution too"
    )
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def findings_for(args: argparse.Namespace) -> list[Finding]:
    """The findings for parsed :func:`add_arguments`; raises one of :data:`CANNOT_RUN`."""
    metadata = _load_metadata(args.metadata) if args.metadata else None
    options = {
        "role": args.role,
        "schemas": args.schema,
        "tenant_columns": args.tenant_column or ("tenant_id",),
        "metadata": metadata,
        "exclude": args.exclude,
        "strict_keys": args.strict_keys,
        "citus": args.citus,
    }
    return _run_check(_engine_url(args.url), options)


def report(findings: list[Finding], *, as_json: bool = False) -> int:
    """Print ``findings`` (as JSON with ``as_json``); the exit status: 1 if any, else 0."""
    if as_json:
        print(json.dumps([asdict(finding) for finding in findings], indent=2))
    else:
        for finding in findings:
            print(finding)
        print(f"{len(findings)} problem(s) found" if findings else "no problems found")
    return 1 if findings else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``fastapi-tenancy-check DATABASE_URL``: print what is missing; exit 1 if anything is."""
    parser = argparse.ArgumentParser(
        prog="fastapi-tenancy-check",
        description="List what the PostgreSQL tenant wall is missing in a live database.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        findings = findings_for(args)
    except CANNOT_RUN as error:
        print(f"fastapi-tenancy-check: {error}", file=sys.stderr)
        return 2
    return report(findings, as_json=args.json)
