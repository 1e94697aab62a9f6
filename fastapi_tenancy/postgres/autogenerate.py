"""Alembic autogenerate support for the tenant wall: ``alembic revision --autogenerate``.

Importing :mod:`fastapi_tenancy.postgres.alembic` (as ``env.py`` must, for the operations)
registers a comparator and the renderers; nothing else is to configure. On PostgreSQL, after
Alembic's own comparison:

- a tenant table of the metadata (``tenant_tables``) that is new, or whose table has no row-level
  security, or not forced, or not the kit's policies for its options (``global_read``,
  ``shared_rows``, ``tenant_reads``, the tenant column, the restrictive policies of each row
  scope and of its public rows, those of its named row policies: the same names, and conditions
  that PostgreSQL plans alike), gets ``op.enable_tenant_rls(...)`` with ``row_policies=``,
  after its ``create_table`` and any other operation on it; a table with row-level security
  enabled and forced and none of the kit's policies (policies of your own) gets nothing;
- a table with the kit's policies that the metadata drops, or keeps but no longer as a tenant
  table, gets ``op.disable_tenant_rls(...)`` before any other operation on it (before
  ``drop_table``, and before the tenant column's ``drop_column``, which its policies would
  refuse).

The downgrade is their reverse: ``disable_tenant_rls`` before ``drop_table``,
``enable_tenant_rls`` with the options read from the database after ``create_table`` (each row
policy's condition taken from its policy's USING), and the previous options of a wall that only
changed. A new table's ``create_table`` leaves its row policies out of its ``info``. Other
dialects get nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from alembic.autogenerate import comparators, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import _repr_type
from alembic.operations.ops import (
    CreateTableOp,
    DropTableOp,
    MigrateOperation,
    ModifyTableOps,
    UpgradeOps,
)
from sqlalchemy import Table, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ..hierarchy import TenantReads
from ..isolation.placement import stored_schema
from ..models import TENANT_TABLE_INFO_KEY
from ..row_policies import ROW_POLICIES_INFO_KEY
from .alembic import DisableTenantRLSOp, EnableTenantRLSOp
from .policies import (
    FAMILY_SETTINGS,
    OWNED_COMMANDS,
    POLICY_NAMES,
    PolicyCondition,
    ScopeColumn,
    TenantTable,
    _compares_as_text,
    lift_setting,
    owned_policy_name,
    row_policy_name,
    scope_policy_name,
    tenant_tables,
)

__all__: list[str] = []

_Op = TypeVar("_Op", EnableTenantRLSOp, DisableTenantRLSOp)

_OPERATIONS_IMPORT = "import fastapi_tenancy.postgres.alembic  # noqa: F401"
_CORE_POLICIES = ("select", "insert", "update", "delete")

_STATE_SQL = text("""
SELECT w.schema, w.name, c.relrowsecurity, c.relforcerowsecurity, p.polname::text,
       pg_get_expr(p.polqual, p.polrelid),
       ARRAY(SELECT r.rolname::text FROM pg_roles r WHERE r.oid = ANY(p.polroles)
             ORDER BY r.rolname),
       ARRAY(SELECT a.attname::text FROM pg_depend d
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_policy'::regclass AND d.objid = p.oid
               AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
             ORDER BY a.attnum)
FROM unnest(CAST(:schemas AS text[]), CAST(:names AS text[])) AS w(schema, name)
JOIN pg_class c ON c.relkind IN ('r', 'p') AND c.oid = to_regclass(
    CASE WHEN w.schema IS NULL THEN quote_ident(w.name)
         ELSE quote_ident(w.schema) || '.' || quote_ident(w.name) END)
LEFT JOIN pg_policy p ON p.polrelid = c.oid AND (p.polname = ANY(CAST(:policies AS text[]))
    OR (NOT p.polpermissive AND EXISTS (
        SELECT 1 FROM unnest(CAST(:prefixes AS text[])) AS x(prefix)
        WHERE starts_with(p.polname::text, x.prefix))))
""")


@dataclass
class _State:
    """A table's row-level security in the database, and the kit's policies on it."""

    rls: bool
    forced: bool
    policies: dict[str, str | None] = field(default_factory=dict)  # kit's key -> USING
    roles: dict[str, list[str]] = field(default_factory=dict)
    columns: set[str] = field(default_factory=set)
    scopes: dict[str, set[str]] = field(default_factory=dict)  # row scope -> its columns
    owned: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # command -> scopes
    row_policies: dict[str, str] = field(default_factory=dict)  # row policy -> its condition

    @property
    def has_wall(self) -> bool:
        return bool(self.policies)

    @property
    def shared_rows(self) -> bool:
        return " IS NULL" in (self.policies.get("select") or "")

    @property
    def tenant_reads(self) -> TenantReads:
        using = self.policies.get("select") or ""
        for reads, setting in FAMILY_SETTINGS.items():
            if f"'{setting}'" in using:
                return reads
        return "own"

    def scope_columns(self) -> dict[str, tuple[str, str | None]]:
        """``{row scope: (its column, its public flag or None)}``, where the policies name
        them unambiguously: the owned policies name the scope's column alone."""
        found: dict[str, tuple[str, str | None]] = {}
        for scope, columns in self.scopes.items():
            own = self.owned.get(OWNED_COMMANDS[0], {}).get(scope, set())
            if len(columns) == 1:
                found[scope] = (min(columns), None)
            elif len(own) == 1 and len(columns - own) == 1 and own < columns:
                found[scope] = (min(own), min(columns - own))
        return found


_KEYS = {name: key for key, name in POLICY_NAMES.items()}
_SCOPE_PREFIX = scope_policy_name("")
_OWNED_PREFIXES = {command: owned_policy_name("", command) for command in OWNED_COMMANDS}
_ROW_POLICY_PREFIX = row_policy_name("")


def _policy_condition(name: str, using: str | None) -> str:
    """The condition of the row policy ``name`` in its policy's USING as PostgreSQL prints it,
    ``(<condition> OR <its lift> [OR <admin role>]...)``: the arms before its lift (the whole
    USING for another shape)."""
    using = using or "true"
    head, lift, _ = using.partition(f"'{lift_setting(name)}'")
    start = head.rfind(" OR ")
    if not lift or start < 1 or not head.startswith("("):
        return using
    return head[1:start]


def _read_states(
    conn: Connection, keys: list[tuple[str | None, str]]
) -> dict[tuple[str | None, str], _State]:
    """The state of each table (``None`` as the schema: as the search path finds the name)."""
    if not keys:
        return {}
    params = {
        "schemas": [schema for schema, _ in keys],
        "names": [name for _, name in keys],
        "policies": list(POLICY_NAMES.values()),
        "prefixes": [_SCOPE_PREFIX, *_OWNED_PREFIXES.values(), _ROW_POLICY_PREFIX],
    }
    states: dict[tuple[str | None, str], _State] = {}
    for schema, name, rls, forced, policy, using, roles, columns in conn.execute(
        _STATE_SQL, params
    ):
        state = states.setdefault((schema, name), _State(bool(rls), bool(forced)))
        owned = next(
            (c for c, p in _OWNED_PREFIXES.items() if policy and policy.startswith(p)), None
        )
        if owned is not None:
            scope = policy[len(_OWNED_PREFIXES[owned]) :]
            state.owned.setdefault(owned, {})[scope] = set(columns)
        elif policy is not None and policy.startswith(_SCOPE_PREFIX):
            state.scopes[policy[len(_SCOPE_PREFIX) :]] = set(columns)
        elif policy is not None and policy.startswith(_ROW_POLICY_PREFIX):
            row_policy = policy[len(_ROW_POLICY_PREFIX) :]
            state.row_policies[row_policy] = _policy_condition(row_policy, using)
        elif policy is not None and policy in _KEYS:
            state.policies[_KEYS[policy]] = using
            state.roles[_KEYS[policy]] = list(roles)
            state.columns.update(columns)
    return states


def _reflected_table(
    autogen_context: AutogenContext, key: tuple[str | None, str], state: _State
) -> TenantTable:
    """The options of the wall found on a table, as ``enable_tenant_rls`` would take them."""
    schema, name = key
    tenant_column = min(state.columns) if len(state.columns) == 1 else "tenant_id"
    found = state.scope_columns()
    scope_columns = {scope: column for scope, (column, _) in found.items()}
    tenant_type = None
    scope_types: dict[str, Any] = {}
    for column in autogen_context.inspector.get_columns(name, schema=schema):
        if _compares_as_text(column["type"]):
            continue
        if column["name"] == tenant_column:
            tenant_type = column["type"]
        for scope, scope_column in scope_columns.items():
            if column["name"] == scope_column:
                scope_types[scope] = column["type"]
    return TenantTable(
        name=name,
        schema=schema,
        tenant_column=tenant_column,
        global_read="global_read" in state.policies,
        tenant_type=tenant_type,
        admin_roles=tuple(state.roles.get("admin", ())),
        shared_rows=state.shared_rows,
        row_scopes=tuple(
            ScopeColumn(scope, column, scope_types.get(scope), found[scope][1])
            for scope, column in sorted(scope_columns.items())
        ),
        tenant_reads=state.tenant_reads,
        row_policies=tuple(
            PolicyCondition(policy, condition)
            for policy, condition in sorted(state.row_policies.items())
        ),
    )


def _is_current(wanted: TenantTable, state: _State) -> bool:
    if not (state.rls and state.forced):
        return False
    if not state.has_wall:
        return True  # row-level security with policies of the application's own
    expected = {*_CORE_POLICIES, *(["global_read"] if wanted.global_read else [])}
    return (
        set(state.policies) - {"admin"} == expected
        and state.shared_rows == wanted.shared_rows
        and state.columns == {wanted.tenant_column}
        and state.tenant_reads == wanted.tenant_reads
        and state.scopes
        == {s.scope: {s.column, s.public_column or s.column} for s in wanted.row_scopes}
        and all(
            state.owned.get(command, {})
            == {s.scope: {s.column} for s in wanted.row_scopes if s.public_column}
            for command in OWNED_COMMANDS
        )
        and set(state.row_policies) == {p.name for p in wanted.row_policies}
    )


def _plan(conn: Connection, table: TenantTable, condition: str) -> list[str] | None:
    """PostgreSQL's plan of reading the rows of ``table`` that meet ``condition``: its own
    normal form of the condition, with nothing created (``None``: it does not plan)."""
    sql = f"EXPLAIN (VERBOSE, COSTS OFF) SELECT FROM {table.qualified_name} WHERE {condition}"
    try:
        with conn.begin_nested():
            result = conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
            return list(result.scalars())
    except DBAPIError:
        return None


def _same_row_policies(conn: Connection, wanted: TenantTable, state: _State) -> bool:
    """Whether each row policy the database has means what the metadata's says, as PostgreSQL
    plans the two conditions."""
    return all(
        (ours := _plan(conn, wanted, policy.condition)) is not None
        and ours == _plan(conn, wanted, state.row_policies[policy.name])
        for policy in wanted.row_policies
        if policy.name in state.row_policies
    )


def _table_key(operation: MigrateOperation) -> tuple[str | None, str] | None:
    if isinstance(operation, CreateTableOp | DropTableOp | ModifyTableOps):
        return operation.schema, operation.table_name
    return None


def _place(
    upgrade_ops: UpgradeOps, operation: EnableTenantRLSOp | DisableTenantRLSOp, *, first: bool
) -> None:
    """Put ``operation`` before the first, or after the last, operation on its table."""
    key = (operation.table.schema, operation.table.name)
    positions = [i for i, other in enumerate(upgrade_ops.ops) if _table_key(other) == key]
    if not positions:
        upgrade_ops.ops.append(operation)
    elif first:
        upgrade_ops.ops.insert(positions[0], operation)
    else:
        upgrade_ops.ops.insert(positions[-1] + 1, operation)


def _compare_tenant_rls(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps, schemas: Any
) -> None:
    """The autogenerate comparator: ``enable_tenant_rls`` / ``disable_tenant_rls`` operations."""
    for operation in upgrade_ops.ops:
        # Row policies are Python objects in a table's info; enable_tenant_rls carries them.
        if isinstance(operation, CreateTableOp) and operation.info:
            operation.info.pop(ROW_POLICIES_INFO_KEY, None)
    dialect = autogen_context.dialect
    conn = autogen_context.connection
    if dialect is None or dialect.name != "postgresql" or conn is None:
        return
    if autogen_context.metadata is None:
        return
    default_schema = dialect.default_schema_name

    def normalized(schema: str | None, name: str) -> tuple[str | None, str]:
        schema = stored_schema(schema)
        return (None if schema == default_schema else schema, name)

    included: list[Table] = [
        table
        for table in autogen_context.sorted_tables
        if autogen_context.run_object_filters(table, table.name, "table", False, None)
    ]
    wanted = {
        normalized(t.schema, t.name): replace(t, schema=normalized(t.schema, t.name)[0])
        for t in tenant_tables(included)
    }
    # Tables with the kit's policies to take off: dropped ones, and kept ones no longer tenant.
    leaving = [
        key
        for operation in upgrade_ops.ops
        if isinstance(operation, DropTableOp)
        and (key := normalized(operation.schema, operation.table_name)) not in wanted
    ]
    leaving += [
        key
        for table in included
        if not isinstance(table.info.get(TENANT_TABLE_INFO_KEY), str)
        and (key := normalized(table.schema, table.name)) not in wanted
    ]
    states = _read_states(conn, [*wanted, *leaving])

    for key in leaving:
        state = states.get(key)
        if state is None or not state.has_wall:
            continue
        found = _reflected_table(autogen_context, key, state)
        _place(upgrade_ops, _operation(DisableTenantRLSOp, found), first=True)

    for key, table in wanted.items():
        state = states.get(key)
        if (
            state is not None
            and _is_current(table, state)
            and _same_row_policies(conn, table, state)
        ):
            continue
        enable = _operation(EnableTenantRLSOp, table)
        if state is not None and state.has_wall:
            previous = _reflected_table(autogen_context, key, state)
            # Keep the admin policy the database has: the metadata cannot name its roles.
            enable = _operation(EnableTenantRLSOp, replace(table, admin_roles=previous.admin_roles))
            enable.previous = previous
        _place(upgrade_ops, enable, first=False)


def _operation(cls: type[_Op], table: TenantTable) -> _Op:
    return cls(
        table.name,
        schema=table.schema,
        tenant_column=table.tenant_column,
        global_read=table.global_read,
        tenant_type=table.tenant_type,
        admin_roles=table.admin_roles,
        shared_rows=table.shared_rows,
        row_scopes={s.scope: s.column for s in table.row_scopes},
        row_scope_types={s.scope: s.column_type for s in table.row_scopes if s.column_type},
        row_scope_public={s.scope: s.public_column for s in table.row_scopes if s.public_column},
        tenant_reads=table.tenant_reads,
        row_policies={p.name: p.condition for p in table.row_policies},
    )


def _register() -> None:
    try:
        from alembic.util import DispatchPriority
    except ImportError:  # Alembic < 1.18: comparators run in the order they were registered
        comparators.dispatch_for("schema")(_compare_tenant_rls)
    else:  # after Alembic's own table comparison, whose operations these go around
        comparators.dispatch_for("schema", priority=DispatchPriority.LAST)(_compare_tenant_rls)


_register()


def _arguments(autogen_context: AutogenContext, table: TenantTable, *, full: bool) -> str:
    autogen_context.imports.add(_OPERATIONS_IMPORT)
    arguments = [repr(table.name)]
    if table.schema is not None:
        arguments.append(f"schema={table.schema!r}")
    if table.tenant_column != "tenant_id":
        arguments.append(f"tenant_column={table.tenant_column!r}")
    if table.row_scopes:
        scopes = {s.scope: s.column for s in table.row_scopes}
        arguments.append(f"row_scopes={scopes!r}")
    if table.row_policies:
        conditions = {p.name: p.condition for p in table.row_policies}
        arguments.append(f"row_policies={conditions!r}")
    if full:
        if table.tenant_type is not None:
            arguments.append(f"tenant_type={_repr_type(table.tenant_type, autogen_context)}")
        arguments.append(f"global_read={table.global_read!r}")
        arguments.append(f"shared_rows={table.shared_rows!r}")
        if table.admin_roles:
            arguments.append(f"admin_roles={list(table.admin_roles)!r}")
        types = [
            f"{s.scope!r}: {_repr_type(s.column_type, autogen_context)}"
            for s in table.row_scopes
            if s.column_type is not None
        ]
        if types:
            arguments.append(f"row_scope_types={{{', '.join(types)}}}")
        public = {s.scope: s.public_column for s in table.row_scopes if s.public_column}
        if public:
            arguments.append(f"row_scope_public={public!r}")
        if table.tenant_reads != "own":
            arguments.append(f"tenant_reads={table.tenant_reads!r}")
    return ", ".join(arguments)


@renderers.dispatch_for(EnableTenantRLSOp)
def _render_enable(autogen_context: AutogenContext, operation: EnableTenantRLSOp) -> str:
    return f"op.enable_tenant_rls({_arguments(autogen_context, operation.table, full=True)})"


@renderers.dispatch_for(DisableTenantRLSOp)
def _render_disable(autogen_context: AutogenContext, operation: DisableTenantRLSOp) -> str:
    return f"op.disable_tenant_rls({_arguments(autogen_context, operation.table, full=False)})"
