"""Scoping of statements: the ``do_orm_execute`` side of the tenant wall.

Every ORM SELECT, UPDATE and DELETE run through a scoped session gets one
``with_loader_criteria`` option that adds ``tenant_id = :tenant`` for every tenant model it
touches, in any position (joins, subqueries, relationship loads). The criteria compare with a
named bound parameter, so the compiled SQL is cached once for all tenants and the tenant travels
as a parameter; a statement that reaches SQL without the parameter fails instead of running
unscoped. What the ORM cannot scope (``text()``, core tables of tenant models) is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, or_, true
from sqlalchemy.orm import ORMExecuteState, with_loader_criteria
from sqlalchemy.sql import visitors
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.elements import BindParameter, ClauseElement
from sqlalchemy.sql.expression import Executable
from sqlalchemy.sql.schema import Column, Table
from sqlalchemy.sql.selectable import Select
from sqlalchemy.sql.util import ClauseAdapter

from .context import audit_logger, get_tenant_context
from .exceptions import (
    CrossScopeWrite,
    CrossTenantWrite,
    RowScopeRequired,
    TenantRequired,
    UnscopedStatement,
)
from .hierarchy import NO_FAMILY, family_params
from .models import (
    TENANT_TABLE_INFO_KEY,
    TenantScoped,
    family_reads,
    is_tenant_model,
)
from .row_policies import row_policies_of
from .row_scopes import declared_row_scopes, row_scope_missing, row_scope_param, row_scopes_of
from .scope import Access, SessionScope
from .tenant_first import TENANT_FIRST_INFO_KEY
from .wall import TENANT_PARAM
from .writes import refuse_move_out_of_place

__all__ = ["TENANT_PARAM", "refuse_unscoped_moves", "scope_execution"]


def _row_terms(
    cls: type[TenantScoped], skip: frozenset[str] = frozenset(), *, reading: bool = True
) -> list[Any]:
    """``<row scope column> = :<its parameter>`` for each row scope of ``cls`` not in ``skip``
    (when ``reading``, ``(... OR <public flag> = true)`` for a scope with public rows), then
    the predicate of each row policy of ``cls`` not in ``skip``."""
    terms = []
    public = cls.__row_scopes_public__ if reading else {}
    for name, attribute in cls.__row_scopes__.items():
        if name in skip:
            continue
        term = getattr(cls, attribute) == bindparam(row_scope_param(name))
        flag = public.get(name)
        terms.append(term if flag is None else or_(term, getattr(cls, flag) == true()))
    terms += [policy.predicate(cls) for policy in cls.__row_policies__ if policy.name not in skip]
    return terms


FamilySizes = tuple[int, int]
"""How many parameters carry the tenants a session reads of models reading their ancestors'
and their descendants' rows (its family's size, rounded up to a power of two)."""

_TENANT_ALONE: FamilySizes = (1, 1)


def _family_sizes(scope: SessionScope) -> FamilySizes:
    family = scope.family or NO_FAMILY
    return (family.bound_size("ancestors"), family.bound_size("descendants"))


def _tenant_only_criteria(cls: type[TenantScoped], sizes: FamilySizes = _TENANT_ALONE) -> Any:
    """What a tenant reads: its rows, the shared rows of a ``__shared_rows__`` model, and its
    family's rows of a model reading them (``__tenant_reads__``): ``tenant_id IN (:p0,
    :p1, ...)``, as many parameters as ``sizes`` gives."""
    column = cls.tenant_column()
    reads = cls.__tenant_reads__
    if reads != "own":
        count = sizes[0] if reads == "ancestors" else sizes[1]
        # typed like the column: a list of parameters is not coerced as one value is
        return column.in_([bindparam(n, type_=column.type) for n in family_params(reads, count)])
    if cls.__shared_rows__:
        return or_(column == bindparam(TENANT_PARAM), column.is_(None))
    return column == bindparam(TENANT_PARAM)


def _tenant_criteria(
    cls: type[TenantScoped],
    sizes: FamilySizes = _TENANT_ALONE,
    lifted: frozenset[str] = frozenset(),
) -> Any:
    """What a tenant reads, within every row scope and row policy of the model not lifted."""
    return and_(_tenant_only_criteria(cls, sizes), *_row_terms(cls, lifted))


def _owned_criteria(cls: type[TenantScoped], lifted: frozenset[str] = frozenset()) -> Any:
    """What a tenant writes: its own rows only, within every row scope and row policy of the
    model not lifted."""
    owned = cls.tenant_column() == bindparam(TENANT_PARAM)
    return and_(owned, *_row_terms(cls, lifted, reading=False))


def _global_read_criteria(cls: type[TenantScoped]) -> Any:
    if cls.__global_access__:
        return and_(true(), *_row_terms(cls))
    return and_(cls.tenant_column() == bindparam(TENANT_PARAM), *_row_terms(cls))


def _criteria(function: Any) -> Any:
    return with_loader_criteria(
        TenantScoped, function, include_aliases=True, track_closure_variables=False
    )


# One option per kind, each with a function of its own: a loader criteria's cache key is its
# function's code, so two kinds sharing one function would share compiled SQL.
TENANT_CRITERIA = _criteria(lambda cls: _tenant_criteria(cls))
OWNED_CRITERIA = _criteria(lambda cls: _owned_criteria(cls))
GLOBAL_READ_CRITERIA = _criteria(lambda cls: _global_read_criteria(cls))


@cache
def _session_criteria(owned: bool, sizes: FamilySizes, lifted: frozenset[str]) -> Any:
    """The criteria of sessions that read a family of ``sizes`` or lift ``lifted``: one
    option for every tenant model (and its aliases), shared by every such session.

    A loader criteria's cache key is its function's code, not its closure or defaults
    (tracking a closure would bind its values as parameters of every execution), so each
    combination gets the function's code under a name of its own: combinations never share
    compiled SQL, and there are a handful (sizes are powers of two). The values travel as
    the function's defaults, which SQLAlchemy passes through untouched.
    """

    def criteria(
        cls: type[TenantScoped],
        owned: bool = owned,
        sizes: FamilySizes = sizes,
        lifted: frozenset[str] = lifted,
    ) -> Any:
        return _owned_criteria(cls, lifted) if owned else _tenant_criteria(cls, sizes, lifted)

    name = f"criteria{(owned, sizes, tuple(sorted(lifted)))!r}"
    criteria.__code__ = criteria.__code__.replace(co_name=name)
    return _criteria(criteria)


def _read_options(scope: SessionScope) -> tuple[Any, ...]:
    if scope.lifted or family_reads():
        return (_session_criteria(False, _family_sizes(scope), scope.lifted),)
    return (TENANT_CRITERIA,)


def _owned_options(scope: SessionScope) -> tuple[Any, ...]:
    if scope.lifted:
        return (_session_criteria(True, _TENANT_ALONE, scope.lifted),)
    return (OWNED_CRITERIA,)


def scope_execution(state: ORMExecuteState, scope: SessionScope) -> None:
    """Scope, stamp or refuse one statement about to run in a scoped session."""
    statement = state.statement
    tenant = scope.tenant_id
    if isinstance(statement, Insert):
        _scope_insert(state, statement, scope)
        return
    if tenant is None:
        writing = state.is_update or state.is_delete
        _refuse_tenant_entities(statement, scope.access, writing=writing)
        if scope.access is Access.GLOBAL and not scope.lifted:
            state.statement = statement.options(GLOBAL_READ_CRITERIA)
        else:
            state.statement = statement.options(*_read_options(scope))
        # Criteria may still reach a tenant model the statement does not name (a column
        # property, an eager load): with the parameter present but empty, the wall answers
        # tenant_required for it, instead of the driver asking for a missing value.
        state.parameters = _with_scope_params(state.parameters, scope)
        return
    if isinstance(statement, (Update, Delete)):
        _scope_dml(state, statement, scope)
        return
    statement = statement.options(*_read_options(scope))
    if state.is_column_load and isinstance(statement, Select):
        # A refresh or an expired attribute's load by primary key: SQLAlchemy leaves loader
        # criteria out of it, and a key planted in the session (merge(load=False), add() of a
        # detached object) would read another tenant's row. The tenant goes in its WHERE.
        mapper = state.bind_mapper
        if mapper is not None and is_tenant_model(mapper.class_):
            cls = mapper.class_
            statement = statement.where(_tenant_criteria(cls, _family_sizes(scope), scope.lifted))
    state.statement = statement
    state.parameters = _with_scope_params(state.parameters, scope)


def refuse_unscoped_moves(state: ORMExecuteState) -> None:
    """Even unscoped sessions move rows between tenants only inside ``mutable_tenant()``."""
    statement = state.statement
    mapper = state.bind_mapper
    if isinstance(statement, Update) and mapper is not None and is_tenant_model(mapper.class_):
        _check_statement_move(statement, mapper, state.parameters)


def _check_statement_move(
    statement: Update, mapper: Any, parameters: Any, scope: SessionScope | None = None
) -> None:
    """Refuse an UPDATE statement that sets ``tenant_id`` outside ``mutable_tenant()``, or out
    of the place of ``scope``'s tenant; inside the block, let it through and log it as the
    unit of work logs the rows it moves."""
    column = mapper.columns["tenant_id"]
    names = ("tenant_id", column.name)
    targets = [_find_value(statement._values or {}, column, names)]
    if isinstance(parameters, Mapping):
        targets.append(_find_value(parameters, column, names))
    elif parameters is not None:
        targets.extend(_find_value(row, column, names) for row in parameters)
    targets = [value for value in targets if value is not _MISSING]
    if not targets:
        return
    context = get_tenant_context()
    if not (context is not None and context.mutable):
        raise CrossTenantWrite("changing tenant_id is refused outside a mutable_tenant() block")
    if scope is not None:
        refuse_move_out_of_place(scope, mapper.local_table)
    for value in targets:
        if isinstance(value, BindParameter):
            value = value.effective_value
        audit_logger.info(
            "rows moved between tenants by a statement",
            extra={
                "tenancy_event": "tenant_moved",
                "tenancy_model": mapper.class_.__name__,
                "tenancy_from": context.id,
                "tenancy_to": None if isinstance(value, ClauseElement) else value,
            },
        )


def scope_params(scope: SessionScope) -> dict[str, Any]:
    """The bound parameters carrying a session's tenant and the values of its row scopes."""
    params: dict[str, Any] = {TENANT_PARAM: scope.tenant_id}
    family = scope.family or NO_FAMILY
    for reads in family_reads():  # the tenants it reads, one parameter each
        tenants = family.bound(scope.tenant_id, reads)
        params.update(zip(family_params(reads, len(tenants)), tenants, strict=True))
    for name in declared_row_scopes():  # None where the session has no value: fails closed
        params[row_scope_param(name)] = scope.row_value(name)
    return params


def _with_scope_params(parameters: Any, scope: SessionScope) -> Any:
    params = scope_params(scope)
    if parameters is None:
        return params
    if isinstance(parameters, Mapping):
        return {**parameters, **params}
    return [{**row, **params} for row in parameters]


def _is_tenant_table(table: Any) -> bool:
    return isinstance(table, Table) and TENANT_TABLE_INFO_KEY in table.info


def _tenant_entities(statement: Any) -> Iterable[Any]:
    """Mapped tenant classes (or their aliases) anywhere in the statement."""
    for element in visitors.iterate(statement):
        entity = element._annotations.get("parententity")
        if entity is not None and is_tenant_model(entity.class_):
            yield entity


def _refuse_tenant_entities(statement: Executable, access: Access, *, writing: bool) -> None:
    for entity in _tenant_entities(statement):
        if writing or access is not Access.GLOBAL or not entity.class_.__global_access__:
            raise TenantRequired(
                f"{entity.class_.__name__} is tenant-scoped and no tenant is bound; bind one "
                "(with_tenant(), a request) or use without_tenant() in trusted code"
            )


def valued_criteria(tenant: Any) -> Any:
    """Tenant criteria carrying the tenant as the value of their own bound parameter.

    For SQL the kit cannot hand a named parameter to: the subqueries of an ORM INSERT (whose
    parameters the ORM keeps to the model's columns) and the SQL expressions the unit of work
    writes. The compiled form is still shared by every tenant.
    """
    return with_loader_criteria(
        TenantScoped, lambda cls: cls.tenant_column() == tenant, include_aliases=True
    )


class _Stamp(NamedTuple):
    """A column a tenant session stamps on new rows: the tenant's, or a row scope's
    (``scope`` names it), with the session's value and the names a write may key it by."""

    column: Column[Any]
    value: Any
    names: tuple[str, ...]
    scope: str | None

    def refuse(self) -> CrossTenantWrite:
        if self.scope is None:
            return CrossTenantWrite("this write names another tenant")
        return CrossScopeWrite(f"this write names another {self.scope}")


def _stamps(mapper: Any, scope: SessionScope) -> list[_Stamp]:
    """What a tenant session stamps on a model's new rows: the tenant, and each row scope it
    applies."""
    column = mapper.columns["tenant_id"]
    stamps = [_Stamp(column, scope.tenant_id, ("tenant_id", column.name), None)]
    for name, attribute in mapper.class_.__row_scopes__.items():
        if scope.enforces(name):
            column = mapper.columns[attribute]
            value = scope.row_value(name)
            if value is None:
                raise RowScopeRequired(row_scope_missing(name))
            stamps.append(_Stamp(column, value, (attribute, column.name), name))
    return stamps


def _scope_insert(state: ORMExecuteState, statement: Insert, scope: SessionScope) -> None:
    tenant = scope.tenant_id
    if tenant is not None:  # subqueries in VALUES, RETURNING or INSERT ... FROM SELECT
        state.statement = statement = statement.options(valued_criteria(tenant))
    mapper = state.bind_mapper
    if mapper is None or not is_tenant_model(mapper.class_):
        return
    name = mapper.class_.__name__
    if tenant is None:
        raise TenantRequired(f"cannot insert {name} rows with no tenant bound")
    if statement.select is not None:
        raise UnscopedStatement(
            f"INSERT ... FROM SELECT into {name} is refused in a tenant session"
        )
    if getattr(statement, "_post_values_clause", None) is not None:
        raise UnscopedStatement(
            f"upserts (ON CONFLICT / ON DUPLICATE KEY) on {name} could update another tenant's "
            "row and are refused in a tenant session"
        )
    stamps = _stamps(mapper, scope)
    if statement._multi_values:
        rows: list[dict[Any, Any]] = [dict(row) for row in _multi_rows(statement)]
        for stamp in stamps:
            rows = [_stamp_row(row, stamp, key=stamp.column) for row in rows]
        statement = statement._clone()
        statement._multi_values = (rows,)
        state.statement = statement
        return
    original = parameters = state.parameters
    for stamp in stamps:
        given = _find_value(statement._values or {}, stamp.column, stamp.names)
        if given is not _MISSING:
            _check_value(given, stamp)
        key = stamp.names[0]
        if isinstance(parameters, Mapping):
            if original or given is _MISSING:
                parameters = _stamp_row(parameters, stamp, key=key)
        elif parameters is not None:
            parameters = [_stamp_row(row, stamp, key=key) for row in parameters]
        elif given is _MISSING:
            statement = statement.values({stamp.column: stamp.value})
    state.statement = statement
    if parameters is not None:
        state.parameters = parameters


def _multi_rows(statement: Insert) -> list[Mapping[Any, Any]]:
    rows: list[Mapping[Any, Any]] = []
    for group in statement._multi_values:
        for row in group:
            if not isinstance(row, Mapping):
                raise UnscopedStatement(
                    "multi-row INSERT rows must be dictionaries in a tenant session"
                )
            rows.append(row)
    return rows


_MISSING = object()


def _find_value(values: Mapping[Any, Any], column: Column[Any], names: tuple[str, ...]) -> Any:
    for key, value in values.items():
        if key is column or key in names or getattr(key, "key", None) in names:
            return value
    return _MISSING


def _check_value(value: Any, stamp: _Stamp) -> None:
    """Refuse a plain value naming another tenant (or owner...) early; bound parameters and
    expressions are checked by the wall with the values actually sent."""
    if not isinstance(value, ClauseElement) and value != stamp.value:
        raise stamp.refuse()


def _stamp_row(row: Mapping[Any, Any], stamp: _Stamp, *, key: Any) -> dict[Any, Any]:
    value = _find_value(row, stamp.column, stamp.names)
    if value is _MISSING or value is None:
        return {
            **{k: v for k, v in row.items() if v is not value or value is _MISSING},
            key: stamp.value,
        }
    _check_value(value, stamp)
    return dict(row)


def _scope_dml(state: ORMExecuteState, statement: Update | Delete, scope: SessionScope) -> None:
    mapper = state.bind_mapper
    target_is_tenant = mapper is not None and is_tenant_model(mapper.class_)
    parameters = state.parameters
    if isinstance(statement, Update) and mapper is not None and target_is_tenant:
        if isinstance(parameters, Sequence) and not isinstance(parameters, Mapping):
            # ORM bulk UPDATE by primary key: the wall proves every key the tenant's row.
            tenant, *scopes = _stamps(mapper, scope)
            stamped = []
            for row in parameters:
                for stamp in scopes:
                    _stamp_row(row, stamp, key=stamp.names[0])
                stamped.append(_stamp_row(row, tenant, key=tenant.names[0]))
            if TENANT_FIRST_INFO_KEY in getattr(mapper.local_table, "info", {}):
                state.parameters = stamped  # the tenant is part of the key the rows must carry
            return
        _check_statement_move(statement, mapper, parameters, scope)
    target = mapper.local_table if mapper is not None else None
    extra = _joined_tenant_froms(statement, target)
    scoped = statement.options(*_owned_options(scope))  # shared rows are read-only for tenants
    for from_ in extra:
        table = _tenant_table_of(from_)
        tenant_column = from_.c[table.info[TENANT_TABLE_INFO_KEY]]
        scoped = scoped.where(tenant_column == bindparam(TENANT_PARAM))
        for name, column_name in row_scopes_of(table).items():
            if scope.enforces(name):
                scoped = scoped.where(from_.c[column_name] == bindparam(row_scope_param(name)))
        for name, policy in row_policies_of(table).items():
            if scope.enforces(name):  # the policy on the table, or on the alias joined
                on_from = ClauseAdapter(from_).traverse(policy.expression)
                scoped = scoped.where(on_from)
    state.statement = scoped
    state.parameters = _with_scope_params(parameters, scope)


def _tenant_table_of(from_: Any) -> Any:
    return getattr(from_, "element", from_)


def _joined_tenant_froms(statement: Update | Delete, target: Any) -> list[Any]:
    """Tenant tables that an UPDATE ... FROM or DELETE ... USING joins at its top level: named
    in its WHERE clause, or in the values it sets (``update(A).values(x=B.col)``)."""
    found: dict[int, Any] = {}
    values = getattr(statement, "_values", None) or {}
    expressions = [
        *statement._where_criteria,
        *(value for value in values.values() if isinstance(value, ClauseElement)),
    ]
    for expression in expressions:
        for from_ in expression._from_objects:
            if from_ is target or not _is_tenant_table(_tenant_table_of(from_)):
                continue
            found.setdefault(id(from_), from_)
    return list(found.values())
