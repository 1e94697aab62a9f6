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
from typing import Any

from sqlalchemy import bindparam, or_, true
from sqlalchemy.orm import ORMExecuteState, with_loader_criteria
from sqlalchemy.sql import visitors
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.elements import BindParameter, ClauseElement
from sqlalchemy.sql.expression import Executable
from sqlalchemy.sql.schema import Column, Table
from sqlalchemy.sql.selectable import Select

from .context import audit_logger, get_tenant_context
from .exceptions import CrossTenantWrite, TenantRequired, UnscopedStatement
from .models import TENANT_TABLE_INFO_KEY, TenantScoped, is_tenant_model
from .scope import Access, SessionScope
from .wall import TENANT_PARAM

__all__ = ["TENANT_PARAM", "refuse_unscoped_moves", "scope_execution"]


def _tenant_criteria(cls: type[TenantScoped]) -> Any:
    """What a tenant reads: its rows, and the shared rows of a ``__shared_rows__`` model."""
    column = cls.tenant_column()
    if cls.__shared_rows__:
        return or_(column == bindparam(TENANT_PARAM), column.is_(None))
    return column == bindparam(TENANT_PARAM)


def _owned_criteria(cls: type[TenantScoped]) -> Any:
    """What a tenant writes: its own rows only."""
    return cls.tenant_column() == bindparam(TENANT_PARAM)


def _global_read_criteria(cls: type[TenantScoped]) -> Any:
    if cls.__global_access__:
        return true()
    return cls.tenant_column() == bindparam(TENANT_PARAM)


TENANT_CRITERIA = with_loader_criteria(
    TenantScoped,
    lambda cls: _tenant_criteria(cls),
    include_aliases=True,
    track_closure_variables=False,
)
OWNED_CRITERIA = with_loader_criteria(
    TenantScoped,
    lambda cls: _owned_criteria(cls),
    include_aliases=True,
    track_closure_variables=False,
)
GLOBAL_READ_CRITERIA = with_loader_criteria(
    TenantScoped,
    lambda cls: _global_read_criteria(cls),
    include_aliases=True,
    track_closure_variables=False,
)


def scope_execution(state: ORMExecuteState, scope: SessionScope) -> None:
    """Scope, stamp or refuse one statement about to run in a scoped session."""
    statement = state.statement
    tenant = scope.tenant_id
    if isinstance(statement, Insert):
        _scope_insert(state, statement, tenant)
        return
    if tenant is None:
        writing = state.is_update or state.is_delete
        _refuse_tenant_entities(statement, scope.access, writing=writing)
        criteria = GLOBAL_READ_CRITERIA if scope.access is Access.GLOBAL else TENANT_CRITERIA
        state.statement = statement.options(criteria)
        # Criteria may still reach a tenant model the statement does not name (a column
        # property, an eager load): with the parameter present but empty, the wall answers
        # tenant_required for it, instead of the driver asking for a missing value.
        state.parameters = _with_tenant_param(state.parameters, None)
        return
    if isinstance(statement, (Update, Delete)):
        _scope_dml(state, statement, tenant)
        return
    statement = statement.options(TENANT_CRITERIA)
    if state.is_column_load and isinstance(statement, Select):
        # A refresh or an expired attribute's load by primary key: SQLAlchemy leaves loader
        # criteria out of it, and a key planted in the session (merge(load=False), add() of a
        # detached object) would read another tenant's row. The tenant goes in its WHERE.
        mapper = state.bind_mapper
        if mapper is not None and is_tenant_model(mapper.class_):
            statement = statement.where(_tenant_criteria(mapper.class_))
    state.statement = statement
    state.parameters = _with_tenant_param(state.parameters, tenant)


def refuse_unscoped_moves(state: ORMExecuteState) -> None:
    """Even unscoped sessions move rows between tenants only inside ``mutable_tenant()``."""
    statement = state.statement
    mapper = state.bind_mapper
    if isinstance(statement, Update) and mapper is not None and is_tenant_model(mapper.class_):
        _check_statement_move(statement, mapper, state.parameters)


def _check_statement_move(statement: Update, mapper: Any, parameters: Any) -> None:
    """Refuse an UPDATE statement that sets ``tenant_id`` outside ``mutable_tenant()``; inside
    the block, let it through and log it as the unit of work logs the rows it moves."""
    column = mapper.columns["tenant_id"]
    targets = [_find_value(statement._values or {}, column)]
    if isinstance(parameters, Mapping):
        targets.append(_find_value(parameters, column))
    elif parameters is not None:
        targets.extend(_find_value(row, column) for row in parameters)
    targets = [value for value in targets if value is not _MISSING]
    if not targets:
        return
    context = get_tenant_context()
    if not (context is not None and context.mutable):
        raise CrossTenantWrite("changing tenant_id is refused outside a mutable_tenant() block")
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


def _with_tenant_param(parameters: Any, tenant: Any) -> Any:
    if parameters is None:
        return {TENANT_PARAM: tenant}
    if isinstance(parameters, Mapping):
        return {**parameters, TENANT_PARAM: tenant}
    return [{**row, TENANT_PARAM: tenant} for row in parameters]


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


def _scope_insert(state: ORMExecuteState, statement: Insert, tenant: Any) -> None:
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
    column = mapper.columns["tenant_id"]
    if statement._multi_values:
        stamped = [_stamp_row(row, column, tenant, key=column) for row in _multi_rows(statement)]
        statement = statement._clone()
        statement._multi_values = (stamped,)
        state.statement = statement
        return
    value = _find_value(statement._values or {}, column)
    if value is not _MISSING:
        _check_value(value, tenant)
    parameters = state.parameters
    if isinstance(parameters, Mapping):
        if parameters or value is _MISSING:
            state.parameters = _stamp_row(parameters, column, tenant)
    elif parameters is not None:
        state.parameters = [_stamp_row(row, column, tenant) for row in parameters]
    elif value is _MISSING:
        state.statement = statement.values({column: tenant})


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


def _find_value(values: Mapping[Any, Any], column: Column[Any]) -> Any:
    for key, value in values.items():
        if (
            key is column
            or key in ("tenant_id", column.name)
            or getattr(key, "key", None)
            in (
                "tenant_id",
                column.name,
            )
        ):
            return value
    return _MISSING


def _check_value(value: Any, tenant: Any) -> None:
    """Refuse a plain value naming another tenant early; bound parameters and expressions are
    checked by the wall with the values actually sent."""
    if not isinstance(value, ClauseElement) and value != tenant:
        raise CrossTenantWrite("this write names another tenant")


def _stamp_row(
    row: Mapping[Any, Any], column: Column[Any], tenant: Any, *, key: Any = "tenant_id"
) -> dict[Any, Any]:
    value = _find_value(row, column)
    if value is _MISSING or value is None:
        return {
            **{k: v for k, v in row.items() if v is not value or value is _MISSING},
            key: tenant,
        }
    _check_value(value, tenant)
    return dict(row)


def _scope_dml(state: ORMExecuteState, statement: Update | Delete, tenant: Any) -> None:
    mapper = state.bind_mapper
    target_is_tenant = mapper is not None and is_tenant_model(mapper.class_)
    parameters = state.parameters
    if isinstance(statement, Update) and mapper is not None and target_is_tenant:
        if isinstance(parameters, Sequence) and not isinstance(parameters, Mapping):
            # ORM bulk UPDATE by primary key: the wall proves every key the tenant's row.
            for row in parameters:
                _stamp_row(row, mapper.columns["tenant_id"], tenant)
            return
        _check_statement_move(statement, mapper, parameters)
    target = mapper.local_table if mapper is not None else None
    extra = _joined_tenant_froms(statement, target)
    scoped = statement.options(OWNED_CRITERIA)  # shared rows are read-only for tenants
    for from_ in extra:
        tenant_column = from_.c[_tenant_table_of(from_).info[TENANT_TABLE_INFO_KEY]]
        scoped = scoped.where(tenant_column == bindparam(TENANT_PARAM))
    state.statement = scoped
    state.parameters = _with_tenant_param(parameters, tenant)


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
