"""Row-level security for the tenant tables of a ``MetaData``: the DDL, and applying it.

For every tenant table (a ``TenantScoped`` model's table, or a core ``Table`` marked the same
way) the kit generates::

    ALTER TABLE project ENABLE ROW LEVEL SECURITY
    ALTER TABLE project FORCE ROW LEVEL SECURITY
    CREATE POLICY tenancy_select ON project FOR SELECT USING (<tenant matches>)
    CREATE POLICY tenancy_insert ON project FOR INSERT WITH CHECK (<tenant matches>)
    CREATE POLICY tenancy_update ON project FOR UPDATE USING (<...>) WITH CHECK (<...>)
    CREATE POLICY tenancy_delete ON project FOR DELETE USING (<tenant matches>)

where ``<tenant matches>`` is ``tenant_id = NULLIF(current_setting('fastapi_tenancy.tenant_id',
true), '')``. ``current_setting`` is a stable function, so PostgreSQL evaluates the comparison
once per scan and uses it as an index condition on the tenant column; no policy holds a
subquery, which Citus refuses in the policies of distributed tables. ``current_setting(...,
true)`` answers NULL when the setting was never made and ``''`` when a transaction named no
tenant (the kit's sessions name ``''`` for none, and PostgreSQL leaves ``''`` behind once a
transaction-local value has ended), and ``NULLIF`` turns both into NULL, so a transaction
without a tenant sees no row, writes no row, and breaks no cast. Models declared
``__global_access__`` get one more
SELECT policy that admits every row while ``fastapi_tenancy.global_read`` is ``on``: the
global-access switch names it ``on`` when no tenant is bound, every other transaction of the
kit names it ``''`` (see :mod:`fastapi_tenancy.postgres.setting`).

A model whose tenants read their family's rows (``__tenant_reads__ = "ancestors"`` or
``"descendants"``) gets a SELECT policy that also admits the tenants the transaction names in
``fastapi_tenancy.ancestors`` (or ``.descendants``), a PostgreSQL array literal; its write
policies stay the tenant's own::

    CREATE POLICY tenancy_select ON catalog_item FOR SELECT USING (<tenant matches>
        OR tenant_id = ANY (CAST(NULLIF(current_setting('fastapi_tenancy.ancestors', true), '')
        AS TEXT[])))

A table with row scopes (an owner column, a team column) gets one RESTRICTIVE policy per scope,
``tenancy_scope_<name>``, which PostgreSQL ANDs with the tenant policies::

    CREATE POLICY tenancy_scope_owner ON note AS RESTRICTIVE FOR ALL
        USING (<owner matches>) WITH CHECK (<owner matches>)

where ``<owner matches>`` is ``owner_id = NULLIF(current_setting('fastapi_tenancy.scope.owner',
true), '') OR current_setting('fastapi_tenancy.lift.owner', true) = 'on'``, plus ``OR
pg_has_role('<role>', 'MEMBER')`` per admin role, so the
roles of the ``tenancy_admin`` policy keep every row. A scope with public rows
(``owner_field(public="published")``) reads them too: its policy's USING gains ``OR
"published" = true`` (its WITH CHECK does not, so no row is inserted for another owner), and
two more restrictive policies, ``tenancy_owned_update_<name>`` and
``tenancy_owned_delete_<name>``, keep UPDATE and DELETE to ``<owner matches>``: another
owner's public row is read, never changed.

A table of a model with named row policies (``__row_policies__``) gets one RESTRICTIVE policy
per row policy, ``tenancy_policy_<name>``: the policy's own SQL, values written out, or its
lift setting ``fastapi_tenancy.lift.<name>`` on, or an admin role::

    CREATE POLICY tenancy_policy_live ON document AS RESTRICTIVE FOR ALL
        USING ((archived = false) OR current_setting('fastapi_tenancy.lift.live', true) = 'on')
        WITH CHECK (...)

Applying is idempotent (each policy is dropped if it exists and created again, and the kit's
restrictive policies of row scopes and row policies the table no longer declares are dropped,
in one transaction), identifiers go
through PostgreSQL's identifier quoting, and no value of any request ever reaches this SQL: the
tenant travels as a bound parameter of ``set_config``.

Usage::

    from fastapi_tenancy.postgres import apply_rls

    apply_rls(owner_engine, SQLModel.metadata)  # as the tables' owner, after create_all
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Enum, MetaData, String, Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import TypeDecorator, TypeEngine

from ..hierarchy import TenantReads
from ..isolation.placement import stored_schema
from ..models import (
    TENANT_READS_INFO_KEY,
    TENANT_SHARED_ROWS_INFO_KEY,
    TENANT_TABLE_INFO_KEY,
    TenantScoped,
)
from ..row_policies import row_policies_of
from ..row_scopes import public_columns_of, row_scopes_of

__all__ = [
    "FAMILY_SETTINGS",
    "GLOBAL_READ_INFO_KEY",
    "GLOBAL_READ_SETTING",
    "POLICY_NAMES",
    "TENANT_SETTING",
    "PolicyCondition",
    "ScopeColumn",
    "TenantTable",
    "apply_rls",
    "disable_statements",
    "enable_statements",
    "family_condition",
    "lift_setting",
    "owned_policy_name",
    "remove_rls",
    "rls_statements",
    "row_policy_condition",
    "row_policy_name",
    "scope_condition",
    "scope_policy_name",
    "scope_setting",
    "tenant_condition",
    "tenant_tables",
]

TENANT_SETTING = "fastapi_tenancy.tenant_id"
"""The transaction-local setting that names the tenant the policies admit (``''``: none)."""
GLOBAL_READ_SETTING = "fastapi_tenancy.global_read"
"""The transaction-local setting (``on``) under which global-access tables read across tenants;
``''`` (or anything else) reads nothing across tenants."""
GLOBAL_READ_INFO_KEY = "fastapi_tenancy.global_read"
"""Key in ``Table.info``: ``True`` gives a core tenant table the global-read policy."""

POLICY_NAMES = {
    "select": "tenancy_select",
    "insert": "tenancy_insert",
    "update": "tenancy_update",
    "delete": "tenancy_delete",
    "global_read": "tenancy_global_read",
    "admin": "tenancy_admin",
}
"""The policy names the kit owns on each tenant table; re-applying replaces exactly these (and
the row scopes' policies, :func:`scope_policy_name` and :func:`owned_policy_name`, and the row
policies', :func:`row_policy_name`, dropping those of them the table no longer declares)."""

FAMILY_SETTINGS: dict[TenantReads, str] = {
    "ancestors": "fastapi_tenancy.ancestors",
    "descendants": "fastapi_tenancy.descendants",
}
"""The transaction-local settings naming the tenants whose rows a model reading its family
(``__tenant_reads__``) admits beside the tenant's own, as a PostgreSQL array literal (see
:func:`~fastapi_tenancy.hierarchy.family_setting_value`); ``''``: none."""

OWNED_COMMANDS = ("update", "delete")
"""The commands a scope with public rows keeps to its own rows by a policy of their own."""


def scope_setting(scope: str) -> str:
    """The transaction-local setting naming the value of the row scope ``scope`` (``''``:
    none, no row of its tables)."""
    return f"fastapi_tenancy.scope.{scope}"


def lift_setting(scope: str) -> str:
    """The transaction-local setting (``on``) under which the row scope ``scope`` is lifted:
    every row of the tenant, whatever its value."""
    return f"fastapi_tenancy.lift.{scope}"


def scope_policy_name(scope: str) -> str:
    """The kit's restrictive policy for the row scope ``scope`` on a table that has it."""
    return f"tenancy_scope_{scope}"


def owned_policy_name(scope: str, command: str) -> str:
    """The kit's restrictive policy keeping ``command`` (``update``, ``delete``) to the rows of
    the row scope ``scope``, on a table whose rows of that scope may be public."""
    return f"tenancy_owned_{command}_{scope}"


_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_QUOTE = copy.copy(_DIALECT.identifier_preparer)
# Tables in the tenant schema placeholder are named by their shared tables' copy.
_QUOTE.schema_for_object = lambda element: stored_schema(element.schema)  # type: ignore[assignment]


@dataclass(frozen=True)
class ScopeColumn:
    """One row scope of a tenant table: its name, its column, and the column's type when it
    does not compare with text (the setting is then cast to it); ``public_column`` names the
    boolean column flagging rows every session of the tenant reads (``owner_field(public=)``).
    """

    scope: str
    column: str
    column_type: TypeEngine[Any] | None = None
    public_column: str | None = None


@dataclass(frozen=True)
class PolicyCondition:
    """One named row policy of a tenant table (``__row_policies__``) as PostgreSQL SQL: its
    name and its condition on the table's columns, values written out."""

    name: str
    condition: str


@dataclass(frozen=True)
class TenantTable:
    """One table to protect: its name, schema, tenant column and read rule.

    ``tenant_type`` is needed only when the tenant column is not a string type (a ``UUID``,
    say): the setting is then cast to it. ``global_read`` adds the global-access read policy.
    ``shared_rows`` lets every tenant read the rows whose tenant is NULL (a ``__shared_rows__``
    model's shared rows); the write policies still admit the tenant's own rows only.
    ``admin_roles`` names roles that get a policy admitting every row, for databases where the
    admin role cannot be given ``BYPASSRLS`` (see ``docs/postgres-rls.md``). ``row_scopes``
    gives each row scope its restrictive policy. ``tenant_reads`` (``"ancestors"``,
    ``"descendants"``) lets the SELECT policy admit the family the transaction names too.
    ``row_policies`` gives each named row policy its restrictive policy.
    """

    name: str
    schema: str | None = None
    tenant_column: str = "tenant_id"
    global_read: bool = False
    tenant_type: TypeEngine[Any] | None = None
    admin_roles: Sequence[str] = field(default=())
    shared_rows: bool = False
    row_scopes: Sequence[ScopeColumn] = field(default=())
    tenant_reads: TenantReads = "own"
    row_policies: Sequence[PolicyCondition] = field(default=())

    @property
    def qualified_name(self) -> str:
        """The quoted, schema-qualified name, as it appears in the DDL."""
        name = _QUOTE.quote(self.name)
        return f"{_QUOTE.quote_schema(self.schema)}.{name}" if self.schema else name


def _subclasses(cls: type[Any]) -> Iterator[type[Any]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _global_access_tables() -> dict[Table, bool]:
    found: dict[Table, bool] = {}
    for cls in _subclasses(TenantScoped):
        table = cls.__dict__.get("__table__")
        if isinstance(table, Table):
            found[table] = found.get(table, False) or bool(cls.__global_access__)
    return found


def _compares_as_text(type_: TypeEngine[Any]) -> bool:
    if isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    # A native enum does not compare with text: the setting is cast to it instead.
    return isinstance(type_, String) and not isinstance(type_, Enum)


def tenant_tables(
    metadata: MetaData | Iterable[Table] | None = None, *, admin_roles: Sequence[str] = ()
) -> list[TenantTable]:
    """The tenant tables of ``metadata`` (or of every ``TenantScoped`` model, when ``None``).

    A table counts when a ``TenantScoped`` model maps it, or when its ``info`` carries
    ``"fastapi_tenancy"`` (the tenant column's name), as the kit's own models' tables do.
    """
    global_access = _global_access_tables()
    if metadata is None:
        tables: Iterable[Table] = global_access
    elif isinstance(metadata, MetaData):
        tables = metadata.sorted_tables
    else:
        tables = metadata
    found = []
    for table in tables:
        column_name = table.info.get(TENANT_TABLE_INFO_KEY)
        if not isinstance(column_name, str):
            continue
        column = table.c.get(column_name)
        tenant_type = None if column is None or _compares_as_text(column.type) else column.type
        found.append(
            TenantTable(
                name=table.name,
                schema=stored_schema(table.schema),
                tenant_column=column_name,
                global_read=global_access.get(table, False)
                or bool(table.info.get(GLOBAL_READ_INFO_KEY)),
                tenant_type=tenant_type,
                shared_rows=bool(table.info.get(TENANT_SHARED_ROWS_INFO_KEY)),
                admin_roles=tuple(admin_roles),
                row_scopes=_scope_columns(table),
                tenant_reads=table.info.get(TENANT_READS_INFO_KEY, "own"),
                row_policies=_policy_conditions(table),
            )
        )
    return found


def _policy_conditions(table: Table) -> tuple[PolicyCondition, ...]:
    """The named row policies of ``table``, compiled for PostgreSQL with their columns
    unqualified and their values written out (a policy's SQL takes no parameters)."""
    found = []
    for name, policy in sorted(row_policies_of(table).items()):
        compiled = policy.expression.compile(
            dialect=_DIALECT,
            compile_kwargs={"literal_binds": True, "include_table": False},
        )
        found.append(PolicyCondition(name, str(compiled)))
    return tuple(found)


def _scope_columns(table: Table) -> tuple[ScopeColumn, ...]:
    found = []
    public = public_columns_of(table)
    for scope, column_name in sorted(row_scopes_of(table).items()):
        column = table.c.get(column_name)
        column_type = None if column is None or _compares_as_text(column.type) else column.type
        found.append(ScopeColumn(scope, column_name, column_type, public.get(scope)))
    return tuple(found)


def _type_name(type_: TypeEngine[Any]) -> str:
    return str(_DIALECT.type_compiler_instance.process(type_))


def _setting(name: str, tenant_type: TypeEngine[Any] | None = None) -> str:
    value = f"NULLIF(current_setting('{name}', true), '')"
    if tenant_type is not None:
        value = f"CAST({value} AS {_type_name(tenant_type)})"
    return value


def tenant_condition(table: TenantTable) -> str:
    """The policy expression: the tenant column equals the transaction's tenant setting."""
    return f"{_QUOTE.quote(table.tenant_column)} = {_setting(TENANT_SETTING, table.tenant_type)}"


def family_condition(table: TenantTable) -> str | None:
    """The SELECT policy's arm for a table whose tenants read their family's rows: the tenant
    column is one of the family the transaction names (``None`` for other tables)."""
    setting = FAMILY_SETTINGS.get(table.tenant_reads)
    if setting is None:
        return None
    array = f"{'TEXT' if table.tenant_type is None else _type_name(table.tenant_type)}[]"
    family = f"CAST(NULLIF(current_setting('{setting}', true), '') AS {array})"
    return f"{_QUOTE.quote(table.tenant_column)} = ANY ({family})"


def scope_condition(table: TenantTable, scope: ScopeColumn) -> str:
    """The restrictive policy's expression: the row scope's column equals its setting, or the
    scope is lifted, or the role is one of the table's admin roles."""
    column = _QUOTE.quote(scope.column)
    matches = f"{column} = {_setting(scope_setting(scope.scope), scope.column_type)}"
    return _or_lifted(table, matches, scope.scope)


def _or_lifted(table: TenantTable, condition: str, name: str) -> str:
    """``condition``, or the row scope or row policy ``name`` lifted, or an admin role."""
    terms = [condition, f"current_setting('{lift_setting(name)}', true) = 'on'"]
    for role in table.admin_roles:
        terms.append(f"pg_has_role({_literal(role)}, 'MEMBER')")
    return " OR ".join(terms)


def _scope_policy_names(scope: str) -> list[str]:
    return [scope_policy_name(scope), *(owned_policy_name(scope, c) for c in OWNED_COMMANDS)]


def row_policy_name(policy: str) -> str:
    """The kit's restrictive policy for the named row policy ``policy`` on a table that has it."""
    return f"tenancy_policy_{policy}"


def row_policy_condition(table: TenantTable, policy: PolicyCondition) -> str:
    """The restrictive policy's expression: the row policy's condition, or the policy is
    lifted, or the role is one of the table's admin roles."""
    return _or_lifted(table, f"({policy.condition})", policy.name)


def _policy_names(table: TenantTable) -> list[str]:
    return [
        *POLICY_NAMES.values(),
        *(n for s in table.row_scopes for n in _scope_policy_names(s.scope)),
        *(row_policy_name(p.name) for p in table.row_policies),
    ]


def enable_statements(table: TenantTable) -> list[str]:
    """The statements that turn the wall on for one table; safe to run again."""
    target = table.qualified_name
    matches = tenant_condition(table)
    readable = matches
    family = family_condition(table)
    if family is not None:
        readable = f"{readable} OR {family}"
    if table.shared_rows:
        readable = f"{readable} OR {_QUOTE.quote(table.tenant_column)} IS NULL"
    policies = {
        "select": f"FOR SELECT USING ({readable})",
        "insert": f"FOR INSERT WITH CHECK ({matches})",
        "update": f"FOR UPDATE USING ({matches}) WITH CHECK ({matches})",
        "delete": f"FOR DELETE USING ({matches})",
    }
    if table.global_read:
        policies["global_read"] = f"FOR SELECT USING ({_setting(GLOBAL_READ_SETTING)} = 'on')"
    if table.admin_roles:
        roles = ", ".join(_QUOTE.quote(role) for role in table.admin_roles)
        policies["admin"] = f"FOR ALL TO {roles} USING (true) WITH CHECK (true)"
    statements = [
        f"ALTER TABLE {target} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {target} FORCE ROW LEVEL SECURITY",
    ]
    for key, name in POLICY_NAMES.items():
        policy = _QUOTE.quote(name)
        statements.append(f"DROP POLICY IF EXISTS {policy} ON {target}")
        if key in policies:
            statements.append(f"CREATE POLICY {policy} ON {target} {policies[key]}")
    for scope in table.row_scopes:
        statements += _scope_statements(table, scope)
    statements.append(_drop_other_restrictive(table))
    for row_policy in table.row_policies:
        policy = _QUOTE.quote(row_policy_name(row_policy.name))
        condition = row_policy_condition(table, row_policy)
        statements += [
            f"DROP POLICY IF EXISTS {policy} ON {target}",
            f"CREATE POLICY {policy} ON {target} AS RESTRICTIVE FOR ALL "
            f"USING ({condition}) WITH CHECK ({condition})",
        ]
    return statements


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_DROP_OTHER_RESTRICTIVE = (
    "BEGIN FOR obsolete IN SELECT polname FROM pg_policy WHERE polrelid = target "
    "AND NOT polpermissive AND polname::text <> ALL (kept) AND EXISTS (SELECT 1 FROM "
    "unnest(prefixes) AS p(prefix) WHERE starts_with(polname::text, p.prefix)) "
    "LOOP EXECUTE format('DROP POLICY %I ON %s', obsolete, target); END LOOP; END"
)


def _drop_other_restrictive(table: TenantTable) -> str:
    """A ``DO`` block dropping the kit's restrictive policies on the table (of row scopes,
    their owned rows and row policies) that ``table`` does not declare, so a scope or policy
    a model no longer has stops restricting its rows."""
    kept = [row_policy_name(p.name) for p in table.row_policies]
    for scope in table.row_scopes:
        kept.append(scope_policy_name(scope.scope))
        if scope.public_column is not None:
            kept += [owned_policy_name(scope.scope, command) for command in OWNED_COMMANDS]
    prefixes = [*_scope_policy_names(""), row_policy_name("")]
    declare = (
        f"DECLARE target regclass := {_literal(table.qualified_name)}; "
        f"prefixes text[] := ARRAY[{', '.join(map(_literal, prefixes))}]::text[]; "
        f"kept text[] := ARRAY[{', '.join(map(_literal, kept))}]::text[]; obsolete name; "
    )
    return f"DO {_literal(declare + _DROP_OTHER_RESTRICTIVE)}"


def _scope_statements(table: TenantTable, scope: ScopeColumn) -> list[str]:
    """A row scope's restrictive policies; any of the kit's for it dropped first, so a scope
    that gains or loses its public rows gets exactly the policies it needs."""
    target = table.qualified_name
    statements = [
        f"DROP POLICY IF EXISTS {_QUOTE.quote(name)} ON {target}"
        for name in _scope_policy_names(scope.scope)
    ]
    condition = scope_condition(table, scope)
    readable = condition
    if scope.public_column is not None:
        readable = f"{condition} OR {_QUOTE.quote(scope.public_column)} = true"
    policy = _QUOTE.quote(scope_policy_name(scope.scope))
    statements.append(
        f"CREATE POLICY {policy} ON {target} AS RESTRICTIVE FOR ALL "
        f"USING ({readable}) WITH CHECK ({condition})"
    )
    if scope.public_column is not None:
        for command in OWNED_COMMANDS:
            policy = _QUOTE.quote(owned_policy_name(scope.scope, command))
            check = f" WITH CHECK ({condition})" if command == "update" else ""
            statements.append(
                f"CREATE POLICY {policy} ON {target} AS RESTRICTIVE FOR {command.upper()} "
                f"USING ({condition}){check}"
            )
    return statements


def disable_statements(table: TenantTable) -> list[str]:
    """The statements that take the kit's policies off one table and turn RLS off."""
    target = table.qualified_name
    statements = [
        f"DROP POLICY IF EXISTS {_QUOTE.quote(name)} ON {target}" for name in _policy_names(table)
    ]
    statements += [
        f"ALTER TABLE {target} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {target} DISABLE ROW LEVEL SECURITY",
    ]
    return statements


def rls_statements(
    metadata: MetaData | Iterable[Table] | None = None, *, admin_roles: Sequence[str] = ()
) -> list[str]:
    """Every statement :func:`apply_rls` would run, for review or a migration script."""
    return [
        statement
        for table in tenant_tables(metadata, admin_roles=admin_roles)
        for statement in enable_statements(table)
    ]


def _run(bind: Engine | Connection, statements: Sequence[str]) -> None:
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            _run(connection, statements)
        return
    for statement in statements:
        bind.execute(text(statement))


def apply_rls(
    bind: Engine | Connection,
    metadata: MetaData | Iterable[Table] | None = None,
    *,
    admin_roles: Sequence[str] = (),
) -> list[TenantTable]:
    """Turn row-level security on for every tenant table of ``metadata``; idempotent.

    Run it as the tables' owner (the role that ran ``create_all`` or the migrations), never as
    the application's role. On an ``Engine`` it runs in one transaction of its own; on a
    ``Connection`` in the caller's transaction. Async: ``await conn.run_sync(apply_rls, md)``.
    Answers the tables it protected.
    """
    tables = tenant_tables(metadata, admin_roles=admin_roles)
    _run(bind, [statement for table in tables for statement in enable_statements(table)])
    return tables


def remove_rls(
    bind: Engine | Connection, metadata: MetaData | Iterable[Table] | None = None
) -> list[TenantTable]:
    """Undo :func:`apply_rls`: drop the kit's policies and turn row-level security off."""
    tables = tenant_tables(metadata)
    _run(bind, [statement for table in tables for statement in disable_statements(table)])
    return tables
