"""The gate at the cursor: every statement of a tenant session is checked against its proof, with
the parameters actually sent, right before the driver sees it.

A scoped session marks each connection it begins with a :class:`Guard` (kept beside the
``Connection`` object, which lives for one checkout). The dialect's ``do_execute`` hooks (the
last step before the driver's ``cursor.execute``) find it there, so
the check covers every path to the cursor: ORM statements, relationship loads, refreshes and the
unit of work's own INSERT, UPDATE and DELETE, which no ORM hook sees. Statements of other
sessions and connections pass untouched.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Engine, and_, bindparam, event, or_, select, true, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import ExecuteStyle, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.schema import Table
from sqlalchemy.sql.selectable import FromClause

from ..context import audit_logger, get_tenant_context
from ..exceptions import (
    CrossScopeWrite,
    CrossTenantWrite,
    RowPolicyViolation,
    RowScopeRequired,
    TenantRequired,
    UnscopedStatement,
)
from ..hierarchy import NO_FAMILY
from ..models import TENANT_SHARED_ROWS_INFO_KEY
from ..row_policies import row_policies_of
from ..row_scopes import public_columns_of, row_scope_missing, row_scope_param, row_scopes_of
from ..scope import Access, SessionScope
from .audit import TAG_ATTRIBUTE, StatementAudit
from .compiler import tenant_column_of
from .places import check_place
from .proof import Proof, prove
from .reads import PolicyBinds, ReadCheck
from .routing import OPEN_RECORDS, observe
from .values import KeyCheck, PolicyWrite, WriteCheck

__all__ = [
    "TENANT_PARAM",
    "Guard",
    "audit_refused_write",
    "guard_connection",
    "guard_of",
    "install_guard",
]


TENANT_PARAM = "fastapi_tenancy_tenant_id"
"""Name of the bound parameter that carries the tenant into scoped SQL."""

_INTERNAL_OPTION = "fastapi_tenancy_internal"
_INTERNAL = object()


class Guard:
    """A scoped session's scope, and the rows this transaction has proven to be the tenant's.

    ``owned`` maps ``(table, key columns, shared)`` to key tuples read as the tenant's rows: the
    unit of work's UPDATE and DELETE by primary key, and foreign keys written, are checked
    against it (and looked up, scoped, when missing). ``shared`` entries also hold the shared
    rows of a ``__shared_rows__`` table: a foreign key may name them, an UPDATE or DELETE not.
    ``audit`` is what the session records of each statement (:mod:`.audit`), ``None`` for nothing.
    """

    __slots__ = ("audit", "owned", "scope")

    def __init__(self, scope: SessionScope) -> None:
        self.scope = scope
        self.audit: StatementAudit | None = None
        self.owned: dict[tuple[FromClause, tuple[str, ...], bool], set[tuple[Any, ...]]] = {}

    def add_owned(
        self,
        table: FromClause,
        columns: tuple[str, ...],
        keys: Iterable[Any],
        *,
        shared: bool = False,
    ) -> None:
        """Record keys proven (by a scoped read) to be rows of the tenant (``shared``: or shared
        rows, which it may point at but not change)."""
        self.owned.setdefault((table, columns, shared), set()).update(keys)

    def forget_owned(self, table: FromClause) -> None:
        """Forget every key of ``table``: some of its rows left the tenant."""
        for key in [key for key in self.owned if key[0] is table]:
            del self.owned[key]


_BATCHED = ExecuteStyle.INSERTMANYVALUES  # its batches differ from the statement by design
_KIT_STATEMENTS = frozenset(
    {"BEGIN", "PRAGMA defer_foreign_keys = ON", "SET CONSTRAINTS ALL DEFERRED"}
)
"""The kit's own transaction statements (:mod:`fastapi_tenancy.transfer`), the only text the
gate lets through, by :func:`kit_statement_options`."""


def kit_statement_options(statement: TextClause) -> dict[str, Any]:
    """Execution options under which the kit runs ``statement``, one of its own transaction
    statements (``BEGIN``, deferring foreign keys), on a guarded connection; not for
    applications.

    The gate lets such a statement through only with these options; no other statement gets
    them, and these bind no value.
    """
    if statement.text not in _KIT_STATEMENTS:
        raise ValueError(f"not one of the kit's own statements: {statement.text!r}")
    return {_INTERNAL_OPTION: _INTERNAL}


def _is_kit_statement(context: Any) -> bool:
    if context.execution_options.get(_INTERNAL_OPTION) is not _INTERNAL:
        return False
    return getattr(context.compiled.statement, "text", None) in _KIT_STATEMENTS


def install_guard(engine: Engine | AsyncEngine) -> None:
    """Attach the gate to ``engine``'s dialect (once); statements of connections without a
    :class:`Guard` are untouched.

    Dialect events, not connection events: an engine-level connection listener makes every
    ``Connection`` of the engine join the engine's event dispatch, which costs more than the
    check itself.
    """
    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    # Known by a weak set of the dialects, not event.contains(): SQLAlchemy's event registry
    # keys targets by id(), and a dead engine's id, reused by a new one, would answer yes.
    if target.dialect in _GATED:
        return
    for name in ("do_execute", "do_executemany", "do_execute_no_params"):
        event.listen(target, name, _gate)
    _GATED.add(target.dialect)


_GATED: weakref.WeakSet[Any] = weakref.WeakSet()


_GUARDS: weakref.WeakKeyDictionary[Connection, Guard] = weakref.WeakKeyDictionary()


def guard_connection(connection: Connection, scope: SessionScope) -> Guard:
    """The guard of ``connection`` for ``scope``: kept for a savepoint of the same session's
    transaction, made anew for a new transaction."""
    guard = _GUARDS.get(connection)
    if guard is None or guard.scope != scope:
        guard = _GUARDS[connection] = Guard(scope)
        if connection.dialect not in _GATED:  # a scoped session on an engine of its own
            install_guard(connection.engine)
    return guard


def guard_of(connection: Connection) -> Guard | None:
    """The guard a scoped session left on ``connection``, if any."""
    return _GUARDS.get(connection)


_PROOFS: weakref.WeakKeyDictionary[Any, Proof] = weakref.WeakKeyDictionary()


def proof_of(compiled: SQLCompiler) -> Proof:
    """The proof of a compiled statement, made on first sight and kept as long as it is."""
    proof = _PROOFS.get(compiled)
    if proof is None:
        proof = _PROOFS[compiled] = prove(compiled)
    return proof


def _gate(cursor: Any, statement: str, *rest: Any) -> None:
    # (parameters, context) for do_execute and do_executemany, (context,) for no parameters
    context: ExecutionContext | None = rest[-1]
    if context is None:
        return
    conn = context.root_connection
    guard = _GUARDS.get(conn)
    if guard is None:
        return
    compiled = context.compiled
    if not isinstance(compiled, SQLCompiler):
        raise UnscopedStatement(
            "this statement is not a compiled SQL statement (DDL or driver SQL) and cannot be "
            "proven scoped to a tenant"
        )
    rows: list[Mapping[str, Any]] = context.compiled_parameters  # type: ignore[attr-defined]
    if _is_kit_statement(context):
        return
    if (
        statement != context.statement
        and context.execute_style is not _BATCHED
        and statement != context.statement + getattr(context, TAG_ATTRIBUTE, "")
    ):  # the SQL tag of .audit, exactly, is the only change allowed
        raise UnscopedStatement(
            "the SQL was changed after it was compiled (a before_cursor_execute listener), so "
            "what would be sent is not what was proven"
        )
    checked = getattr(context, "_fastapi_tenancy_checked", None)
    if checked is compiled:
        return  # insertmanyvalues: one check for all of its batches
    proof = proof_of(compiled)
    if proof.refusal is not None:
        raise UnscopedStatement(proof.refusal)
    placement = guard.scope.placement
    if placement is not None:
        check_place(conn, context.execution_options, proof, placement)
    for read in proof.reads:
        _check_read(conn, guard, read, rows, context)
    if proof.writes:
        _check_writes(conn, guard, proof.writes, rows)
    if guard.audit is not None:
        guard.audit.sent(guard.scope, compiled, proof)
    if OPEN_RECORDS:  # a record_fan_out() block is open: a list's truth, per statement
        observe(guard.scope.tenant_id, compiled, proof)
    context._fastapi_tenancy_checked = compiled  # type: ignore[attr-defined]


def audit_refused_write(tenant: str | None, error: CrossTenantWrite) -> CrossTenantWrite:
    """Log a refused cross-tenant write on the audit logger (with tenant, principal and
    reason); answers ``error``, for the caller to raise."""
    context = get_tenant_context()
    audit_logger.warning(
        "cross-tenant write refused",
        extra={
            "tenancy_event": "cross_tenant_write",
            "tenancy_tenant": tenant,
            "tenancy_principal": None if context is None else context.claims.get("sub"),
            "tenancy_reason": error.detail,
        },
    )
    return error


def _check_read(
    conn: Connection,
    guard: Guard,
    read: ReadCheck,
    rows: list[Mapping[str, Any]],
    context: ExecutionContext,
) -> None:
    scope = guard.scope
    tenant = scope.tenant_id
    if tenant is None:
        if read.read_only and read.global_access and scope.access is Access.GLOBAL:
            if all(_in_row_scopes(read, scope, row, context) for row in rows):
                return
            raise UnscopedStatement(
                f"{read.where} is not filtered by every row scope of {read.table.name!r}"
            )
        raise TenantRequired(
            f"the tenant table {read.table.name!r} is used and no tenant is bound; bind one "
            "(with_tenant(), a request) or use without_tenant() in trusted code"
        )
    if read.linked:
        return
    params = read.tenant_params
    pending: list[tuple[Any, ...]] = []
    for row in rows:
        if any(row.get(name) == tenant for name in params) or (
            read.family_params and _in_family(read, scope, row, context)
        ):
            if _in_row_scopes(read, scope, row, context):
                continue
            if read.key_params is None:
                raise UnscopedStatement(
                    f"{read.where} is filtered by the tenant but not by every row scope and "
                    f"row policy of {read.table.name!r} ({_scopes_named(read)}) with the "
                    "session's values, so it could reach rows outside them"
                )
        elif read.key_params is None:
            if read.family_params:
                raise UnscopedStatement(
                    f"the tenant filter on {read.table.name!r} ({read.where}) names a tenant "
                    f"that is neither the session's nor one of its {read.family}"
                )
            if params:
                raise UnscopedStatement(
                    f"the tenant filter on {read.table.name!r} ({read.where}) does not carry "
                    "the session's tenant: the tenant parameter cannot be supplied by the caller"
                )
            raise UnscopedStatement(
                f"the tenant table {read.table.name!r} appears in {read.where} without a "
                "filter on its tenant column, so the statement could reach other tenants' rows "
                "(core tables and their aliases, and constructs the tenant criteria do not "
                "reach, are not filtered); use the mapped model, or trusted code under "
                "without_tenant()"
            )
        pending.append(tuple(row.get(name) for name in read.key_params))
    if pending:
        columns = tuple(c.name for c in read.table.primary_key.columns)
        if not _owned(conn, guard, read.table, columns, pending):
            error = CrossTenantWrite(f"this {read.table.name} row is not the tenant's")
            raise audit_refused_write(guard.scope.tenant_id, error)


def _in_family(
    read: ReadCheck, scope: SessionScope, row: Mapping[str, Any], context: ExecutionContext
) -> bool:
    """Whether a term ``<tenant column> IN (...)`` of ``read`` names only tenants whose rows
    the session reads of its table: its own, and its ancestors' or descendants' as the model
    declares."""
    if read.family is None:
        return False
    readable = (scope.family or NO_FAMILY).readable(scope.tenant_id, read.family)
    expanded: Mapping[str, list[str]] = getattr(context, "_expanded_parameters", {})
    for binds in read.family_params:
        if all(
            _names_readable(row, name, expanding, expanded, readable) for name, expanding in binds
        ):
            return True
    return False


def _names_readable(
    row: Mapping[str, Any],
    name: str,
    expanding: bool,
    expanded: Mapping[str, list[str]],
    readable: tuple[Any, ...],
) -> bool:
    """Whether the parameter ``name`` (each of its values, when expanding) is sent with one
    of the ``readable`` tenants."""
    names = expanded.get(name) if expanding else (name,)
    return names is not None and all(each in row and row[each] in readable for each in names)


def _in_row_scopes(
    read: ReadCheck, scope: SessionScope, row: Mapping[str, Any], context: ExecutionContext
) -> bool:
    """Whether ``row``'s parameters prove every row scope and every row policy of the table
    that ``scope`` applies."""
    for name, params in read.scope_params:
        if name in scope.lifted:
            continue
        value = _row_value(scope, name)
        if not any(row.get(param) == value for param in params):
            return False
    for name, proofs in read.policy_params:
        if name not in scope.lifted and not any(_holds(binds, row, context) for binds in proofs):
            return False
    return True


def _scopes_named(read: ReadCheck) -> str:
    names = [name for name, _ in read.scope_params] + [name for name, _ in read.policy_params]
    return ", ".join(dict.fromkeys(names))


def _holds(binds: PolicyBinds, row: Mapping[str, Any], context: ExecutionContext) -> bool:
    """Whether a term proving a row policy is sent with the policy's values."""
    expanded: Mapping[str, list[str]] = getattr(context, "_expanded_parameters", {})
    for name, value, expanding in binds:
        if expanding:
            names = expanded.get(name)
            if names is None or [row.get(each) for each in names] != list(value):
                return False
        elif name not in row or row[name] != value:
            return False
    return True


def _row_value(scope: SessionScope, name: str) -> Any:
    value = scope.row_value(name)
    if value is None:
        raise RowScopeRequired(row_scope_missing(name))
    return value


def _check_writes(
    conn: Connection,
    guard: Guard,
    writes: tuple[WriteCheck | PolicyWrite, ...],
    rows: list[Mapping[str, Any]],
) -> None:
    scope = guard.scope
    tenant = scope.tenant_id
    context = get_tenant_context()
    mutable = context is not None and context.mutable
    wanted: dict[KeyCheck, list[tuple[Any, ...]]] = {}
    for write in writes:
        if isinstance(write, PolicyWrite):
            _check_policy_write(guard, write, rows)
            continue
        if write.row_scope is not None:
            _check_row_scope_write(guard, write.row_scope, write, rows)
            continue
        for row in rows:
            value = row.get(write.param)
            if write.parent is None:
                if tenant is None:
                    raise TenantRequired(f"writing {write.table.name!r} rows needs a bound tenant")
                if value is None and tenant is not None:
                    error = CrossTenantWrite(
                        f"a tenant session cannot write {write.table.name} rows without a "
                        "tenant (shared rows are written in the admin switch or without_tenant())"
                    )
                    raise audit_refused_write(tenant, error)
                if value != tenant and not (write.update and mutable):
                    error = CrossTenantWrite(
                        f"this write names another tenant in {write.table.name}"
                    )
                    raise audit_refused_write(tenant, error)
                if value != tenant:  # rows moved away in mutable_tenant(): no longer owned
                    guard.forget_owned(write.table)
            elif value is not None:
                if tenant is None:
                    raise TenantRequired(
                        f"{write.table.name}.{write.column} points at a tenant table, and no "
                        "tenant is bound to prove the row it names"
                    )
                wanted.setdefault(write.parent, []).append((value,))
    for parent, keys in wanted.items():
        if not _owned(conn, guard, parent.table, (parent.column,), keys, pointable=True):
            error = CrossTenantWrite(
                f"a foreign key points at a {parent.table.name} row that is not this tenant's "
                "(another tenant's, or none)"
            )
            raise audit_refused_write(tenant, error)


def _check_row_scope_write(
    guard: Guard, name: str, write: WriteCheck, rows: list[Mapping[str, Any]]
) -> None:
    """A value written into a row scope column must be the session's value of that scope,
    unless the session lifts it (a tenant admin's switch)."""
    if name in guard.scope.lifted:
        return
    expected = _row_value(guard.scope, name)
    for row in rows:
        if row.get(write.param) != expected:
            error = CrossScopeWrite(
                f"this write names another {name} in {write.table.name}.{write.column}"
            )
            raise audit_refused_write(guard.scope.tenant_id, error)


def _check_policy_write(guard: Guard, write: PolicyWrite, rows: list[Mapping[str, Any]]) -> None:
    """The values a row policy reads, as written, must meet it, unless the session lifts it."""
    if write.policy in guard.scope.lifted:
        return
    for row in rows:
        values = {column: row.get(param) for column, param in write.params}
        if not write.term.admits(values):
            error = RowPolicyViolation(
                f"this write would leave a {write.table.name} row outside its row policy "
                f"{write.policy!r}"
            )
            raise audit_refused_write(guard.scope.tenant_id, error)


def _owned(
    conn: Connection,
    guard: Guard,
    table: Table,
    columns: tuple[str, ...],
    keys: list[tuple[Any, ...]],
    *,
    pointable: bool = False,
) -> bool:
    """Whether every key names a row of the tenant within the session's row scopes (a row it
    may write), or, ``pointable``, a row a new row may point at: also a shared row, and a row
    flagged public outside a row scope. From the ledger, else one scoped read."""
    known = guard.owned.get((table, columns, False), set())
    if pointable:
        known = known | guard.owned.get((table, columns, True), set())
    missing = {key for key in keys if key not in known}
    if not missing:
        return True
    tenant_column = tenant_column_of(table)
    key_columns = _by_name(table, columns)
    if len(key_columns) == 1:
        condition = key_columns[0].in_([key[0] for key in missing])
    else:
        condition = tuple_(*key_columns).in_(list(missing))
    shared = pointable and bool(table.info.get(TENANT_SHARED_ROWS_INFO_KEY))
    public = public_columns_of(table) if pointable else {}
    mine: Any = tenant_column == bindparam(TENANT_PARAM)
    if shared:
        mine = or_(mine, tenant_column.is_(None))
    params = {TENANT_PARAM: guard.scope.tenant_id}
    for name, column_name in row_scopes_of(table).items():
        if name not in guard.scope.lifted:
            param = row_scope_param(name)
            term: Any = table.c[column_name] == bindparam(param)
            if name in public:
                term = or_(term, table.c[public[name]] == true())
            mine = and_(mine, term)
            params[param] = _row_value(guard.scope, name)
    for name, policy in row_policies_of(table).items():
        if name not in guard.scope.lifted:
            mine = and_(mine, policy.expression)
    query = select(*key_columns).where(and_(condition, mine))
    found = {tuple(row) for row in conn.execute(query, params)}
    guard.add_owned(table, columns, found, shared=shared or bool(public))
    return missing <= found


def _by_name(table: Table, names: tuple[str, ...]) -> list[Any]:
    by_name = {column.name: column for column in table.columns}
    return [by_name[name] for name in names]
