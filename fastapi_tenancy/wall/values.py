"""The write side of the proof: every value written into a tenant key must be the tenant's.

For each INSERT and UPDATE of the compile, the values written into the tenant column and into
foreign keys to tenant tables are found among the statement's bound parameters, whose values the
gate checks as sent; a value that is a SQL expression is refused, except a NULL or a scalar
subquery selecting the parent's key from a (proven) occurrence of the parent table.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import (
    BindParameter,
    ClauseElement,
    ColumnClause,
    Null,
)
from sqlalchemy.sql.schema import Column, Table
from sqlalchemy.sql.selectable import ScalarSelect, Select

from ..row_policies import PolicyTerm, TablePolicy, row_policies_of
from ..row_scopes import row_scopes_of
from .compiler import (
    ProvingCompiler,
    Refusal,
    Write,
    is_tenant_table,
    origin,
    same,
    tenant_column_of,
)

__all__ = ["KeyCheck", "PolicyWrite", "ScopeColumn", "WriteCheck", "write_checks"]


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """Where a foreign key points: the parent table and its referenced column."""

    table: Table
    column: str


@dataclass(frozen=True, slots=True)
class WriteCheck:
    """A bound value written into a tenant column (``parent`` None) or a foreign key."""

    param: str
    table: Table
    column: str
    parent: KeyCheck | None
    update: bool
    row_scope: str | None = None
    """The row scope the column holds (its value must be the session's), if it is one."""


@dataclass(frozen=True, slots=True)
class PolicyWrite:
    """One row written into a table with a row policy: the policy's term that the columns it
    sets must meet, and the parameter carrying each of those columns' values."""

    table: Table
    policy: str
    term: PolicyTerm
    params: tuple[tuple[str, str], ...]
    """``(column name, parameter)`` for every column the term reads."""


@dataclass(frozen=True, slots=True)
class ScopeColumn:
    """A guarded column holding a row scope: written values must be the session's value."""

    name: str


def write_checks(compiler: ProvingCompiler, write: Write) -> Iterator[WriteCheck | PolicyWrite]:
    statement = write.statement
    table = origin(statement.table)
    guarded = _guarded_columns(table)
    update = isinstance(statement, Update)
    state = write.compile_state
    multi = bool(getattr(state, "_has_multi_parameters", False))
    if multi:
        rows = [dict(row) for row in state._multi_parameters]
    elif getattr(state, "_ordered_values", None):
        rows = [dict(state._ordered_values)]
    else:
        rows = [dict(state._dict_parameters or {})]
    written: set[str] = set()
    for index, row in enumerate(rows):
        for key, value in row.items():
            column = _column_for(key, table)
            if column is None:
                _refuse_unknown_target(key, guarded)
                continue
            written.add(column.key)
            parent = guarded.get(column.key, _UNGUARDED)
            if parent is _UNGUARDED:
                continue
            param = f"{column.key}_m{index}" if multi else column.key
            yield from _value_check(compiler, table, column, value, param, parent, update)
    for key in write.column_keys or ():
        column = table.c.get(key)
        if column is None or column.key in written:
            continue
        written.add(column.key)
        parent = guarded.get(column.key, _UNGUARDED)
        if parent is not _UNGUARDED:
            yield _bound(compiler, table, column, column.key, parent, update)
    policies = row_policies_of(table)
    if policies:
        yield from _policy_writes(compiler, table, policies, rows, write, multi, update)
    if isinstance(statement, Insert) and is_tenant_table(table):
        stamped = [tenant_column_of(table)]
        stamped += [table.c[name] for name in row_scopes_of(table).values()]
        for column in stamped:
            if column.key in written:
                continue
            key = column.key
            names = [f"{key}_m{i}" for i in range(len(rows))] if multi else [key]
            for name in names:
                yield _bound(compiler, table, column, name, guarded[key], update)


_UNGUARDED: Any = object()


def _policy_writes(
    compiler: ProvingCompiler,
    table: Table,
    policies: Mapping[str, TablePolicy],
    rows: list[dict[Any, Any]],
    write: Write,
    multi: bool,
    update: bool,
) -> Iterator[PolicyWrite]:
    """Each row's values of the columns each row policy term reads, by parameter: an INSERT
    must write them all (a value, or a default the statement renders), an UPDATE all or none
    of a term's (none leaves the row as it was proven)."""
    defaulted = {column.key for column in (*compiler.insert_prefetch, *compiler.update_prefetch)}
    bound = set(compiler.bind_names.values())
    read = frozenset().union(*(policy.columns for policy in policies.values()))
    for index, row in enumerate(rows):
        params: dict[str, str] = {}
        for key, value in row.items():
            column = _column_for(key, table)
            if column is not None and column.name in read:
                params[column.name] = _policy_param(compiler, table, column, value, index, multi)
        for column in table.columns:
            if column.name in params or column.name not in read:
                continue
            name = f"{column.key}_m{index}" if multi else column.key
            if column.key in (write.column_keys or ()) or (
                column.key in defaulted and name in bound
            ):
                params[column.name] = name
        for policy in policies.values():
            for term in policy.terms:
                missing = sorted(term.columns - params.keys())
                if update and len(missing) == len(term.columns):
                    continue
                if missing:
                    verb = "sets only part of" if update else "does not write all of"
                    raise Refusal(
                        f"this {'UPDATE' if update else 'INSERT'} of {table.name!r} {verb} the "
                        f"columns its row policy {policy.name!r} reads (not {', '.join(missing)}), "
                        "so the row it leaves cannot be checked against the policy; write them "
                        "together"
                    )
                yield PolicyWrite(
                    table, policy.name, term, tuple((c, params[c]) for c in sorted(term.columns))
                )


def _policy_param(
    compiler: ProvingCompiler,
    table: Table,
    column: Column[Any],
    value: Any,
    index: int,
    multi: bool,
) -> str:
    if hasattr(value, "__clause_element__"):
        value = value.__clause_element__()
    if not isinstance(value, ClauseElement):
        return f"{column.key}_m{index}" if multi else column.key
    if isinstance(value, BindParameter):
        names = _names_of(compiler, value)
        if len(names) == 1:
            return names[0]
    raise Refusal(
        f"{table.name}.{column.name} is read by a row policy and is written from a SQL "
        f"expression ({type(value).__name__}), which cannot be checked against the policy; "
        "pass the value itself"
    )


def _value_check(
    compiler: ProvingCompiler,
    table: Table,
    column: Column[Any],
    value: Any,
    param: str,
    parent: KeyCheck | ScopeColumn | None,
    update: bool,
) -> Iterator[WriteCheck]:
    if hasattr(value, "__clause_element__"):
        value = value.__clause_element__()
    if not isinstance(value, ClauseElement):
        yield _bound(compiler, table, column, param, parent, update)
    elif isinstance(value, BindParameter):
        names = _names_of(compiler, value)
        if len(names) != 1:
            raise Refusal(
                f"the value written to {table.name}.{column.name} cannot be identified among "
                "the statement's parameters"
            )
        yield _bound(compiler, table, column, names[0], parent, update)
    elif isinstance(parent, KeyCheck) and (
        isinstance(value, Null) or _selects_parent_key(value, parent)
    ):
        return
    else:
        what = (
            "a foreign key to a tenant table"
            if isinstance(parent, KeyCheck)
            else "the tenant column"
            if parent is None
            else f"the {parent.name} column"
        )
        raise Refusal(
            f"{table.name}.{column.name} is {what} and is written from a SQL expression "
            f"({type(value).__name__}) that cannot be proven to name the tenant's row; pass "
            "the value itself"
            + (
                ", or a scalar subquery selecting the parent's key"
                if isinstance(parent, KeyCheck)
                else ""
            )
        )


def _names_of(compiler: ProvingCompiler, value: BindParameter[Any]) -> list[str]:
    """The names ``value`` (or a clone of it) is rendered under in the compiled statement."""
    return list({name for bound, name in compiler.bind_names.items() if same(bound, value)})


def _bound(
    compiler: ProvingCompiler,
    table: Table,
    column: Column[Any],
    param: str,
    parent: KeyCheck | ScopeColumn | None,
    update: bool,
) -> WriteCheck:
    if param not in compiler.bind_names.values():
        if not isinstance(parent, KeyCheck) and not update:
            raise Refusal(
                f"this INSERT into {table.name!r} does not write its {column.name} column; "
                "the kit stamps it in a tenant session, so the statement was built around it"
            )
        raise Refusal(
            f"the value written to {table.name}.{column.name} cannot be identified among the "
            "statement's parameters"
        )
    if isinstance(parent, ScopeColumn):
        return WriteCheck(param, table, column.name, None, update, row_scope=parent.name)
    return WriteCheck(param=param, table=table, column=column.name, parent=parent, update=update)


def _selects_parent_key(value: Any, parent: KeyCheck) -> bool:
    """A scalar subquery whose one column is the parent's referenced column: the FROM it reads
    is proven like any other, so the key it yields is the tenant's row or NULL."""
    if not isinstance(value, ScalarSelect) or not isinstance(value.element, Select):
        return False
    columns = list(value.element.selected_columns)
    if len(columns) != 1:
        return False
    column = origin(columns[0])
    if not isinstance(column, ColumnClause) or column.name != parent.column:
        return False
    table = origin(column.table)
    table = getattr(table, "element", table)
    return origin(table) is parent.table


def _refuse_unknown_target(key: Any, guarded: dict[str, Any]) -> None:
    """A value keyed by something that is not a column of the target table: a column of another
    table (MySQL's multi-table UPDATE) or an expression. Refused when it could write a guarded
    column."""
    if hasattr(key, "__clause_element__"):
        key = key.__clause_element__()
    other = getattr(key, "table", None)
    if isinstance(other, Table):
        if origin(key).key not in _guarded_columns(other):
            return
    elif not guarded and not isinstance(key, str):
        return
    raise Refusal(
        f"this statement writes {key!s}, which is not a column of its own table; in a tenant "
        "session a statement writes the tenant's keys only into its own table"
    )


def _column_for(key: Any, table: Table) -> Column[Any] | None:
    if isinstance(key, str):
        return table.c.get(key)
    if hasattr(key, "__clause_element__"):
        key = key.__clause_element__()
    if isinstance(key, ColumnClause):
        column = origin(key)
        if origin(column.table) is table:
            found: Column[Any] | None = table.c.get(column.key)
            return found
    return None


_Guarded = dict[str, KeyCheck | ScopeColumn | None]
_GUARDED: weakref.WeakKeyDictionary[Table, _Guarded] = weakref.WeakKeyDictionary()


def _guarded_columns(table: Any) -> _Guarded:
    """Columns of ``table`` whose written values are checked, by key: the tenant column (None),
    row scope columns and foreign keys to tenant tables (where they point)."""
    if not isinstance(table, Table):
        return {}
    cached = _GUARDED.get(table)
    if cached is not None:
        return cached
    found: _Guarded = {}
    if is_tenant_table(table):
        found[tenant_column_of(table).key] = None
        for name, column_name in row_scopes_of(table).items():
            found[table.c[column_name].key] = ScopeColumn(name)
    for fk in table.foreign_keys:
        parent = fk.column.table
        if is_tenant_table(parent):
            found.setdefault(fk.parent.key, KeyCheck(parent, fk.column.name))
    _GUARDED[table] = found
    return found
