"""The proof of one compiled statement: what must hold for it to be sent in a tenant session.

:func:`prove` compiles the statement again with the proving compiler (the dialect's own, with
eyes) and turns what it saw into obligations, checked at every execution with the parameters
actually sent (:mod:`fastapi_tenancy.wall.guard`):

- every tenant table rendered as a FROM must be filtered by ``<its tenant column> = :param``,
  found as a top-level AND term of its statement's WHERE, or of the ON clause of a join that
  filters its side; at execution ``param`` must carry the session's tenant. An UPDATE or DELETE
  by primary key (the unit of work's) may instead name keys proven to be the tenant's rows;
- every value written into a tenant column must be a bound value equal to the tenant;
- every value written into a foreign key to a tenant table must be a bound value naming a row
  of the tenant (or NULL), or a scalar subquery selecting that key from the (proven) parent.

What the proof cannot read is refused before anything is sent.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.sql import operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.elements import (
    BinaryExpression,
    BindParameter,
    BooleanClauseList,
    ClauseElement,
    ColumnClause,
    Grouping,
    Null,
)
from sqlalchemy.sql.schema import Column, Table
from sqlalchemy.sql.selectable import FromGrouping, Join, ScalarSelect, Select

from ..models import TENANT_GLOBAL_INFO_KEY
from .compiler import (
    Occurrence,
    ProvingCompiler,
    Refusal,
    Write,
    is_tenant_table,
    origin,
    proving_compiler,
    refuse_custom_constructs,
    tenant_column_of,
)

__all__ = ["KeyCheck", "Proof", "ReadCheck", "WriteCheck", "prove"]


@dataclass(frozen=True, slots=True)
class ReadCheck:
    """A tenant table rendered as a FROM, and the parameters that may prove it filtered."""

    table: Table
    where: str
    tenant_params: tuple[str, ...]
    key_params: tuple[str, ...] | None
    read_only: bool
    linked: bool = False

    @property
    def global_access(self) -> bool:
        """Whether the table's model may be read across tenants in the global-access switch."""
        return bool(self.table.info.get(TENANT_GLOBAL_INFO_KEY))


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


@dataclass(frozen=True, slots=True)
class Proof:
    """Obligations of one compiled statement, or the reason it cannot be sent."""

    refusal: str | None
    reads: tuple[ReadCheck, ...] = ()
    writes: tuple[WriteCheck, ...] = ()


def prove(compiled: SQLCompiler) -> Proof:
    """Compile ``compiled.statement`` again with the proving compiler and derive its proof."""
    dialect = compiled.dialect
    try:
        refuse_custom_constructs(compiled.statement)
        twin = proving_compiler(dialect)(
            dialect,
            compiled.statement,
            column_keys=compiled.column_keys,
            for_executemany=compiled.for_executemany,
            schema_translate_map=compiled.schema_translate_map,
        )
        if twin.string != compiled.string:
            raise Refusal(
                "the statement compiled differently a second time, so what would be sent "
                "cannot be proven"
            )
        reads = _read_checks(twin)
        writes = tuple(check for write in twin.wall_writes for check in _write_checks(twin, write))
    except Refusal as refusal:
        return Proof(refusal=str(refusal))
    return Proof(refusal=None, reads=reads, writes=writes)


# -- reads -------------------------------------------------------------------------------------


def _read_checks(compiler: ProvingCompiler) -> tuple[ReadCheck, ...]:
    found = [_read_check(compiler, occurrence) for occurrence in compiler.wall_occurrences]
    filtered = [
        (occurrence.element, occurrence.table)
        for occurrence, (check, _terms) in zip(compiler.wall_occurrences, found, strict=True)
        if check.tenant_params
    ]
    checks = []
    for occurrence, (check, terms) in zip(compiler.wall_occurrences, found, strict=True):
        if check.read_only and not check.tenant_params and _linked(occurrence, terms, filtered):
            check = replace(check, linked=True)
        checks.append(check)
    return tuple(checks)


def _linked(occurrence: Occurrence, terms: list[Any], filtered: list[tuple[Any, Table]]) -> bool:
    """An association table (a many-to-many relationship's ``secondary``: foreign keys to tenant
    tables, the tenant column, and a primary key of those keys or of one surrogate column,
    nothing else) joined on its foreign keys:
    each key equal to (or, for a selectin load, in) bound values, or equal to the referenced
    column of a filtered occurrence, and at least one of them so anchored. Its rows then link
    rows of the tenant, and the wall stamps and checks every written link row like any other.
    The bound keys are the parents' the ORM loads from: the tenant's own objects."""
    table = occurrence.table
    keys = [fk for fk in table.foreign_keys if is_tenant_table(fk.column.table)]
    key_names = {fk.parent.name for fk in keys}
    primary_key = {column.name for column in table.primary_key.columns}
    allowed = key_names | primary_key | {tenant_column_of(table).name}
    if (
        len(keys) < 2
        or (primary_key != key_names and len(primary_key) != 1)
        or any(column.name not in allowed for column in table.columns)
    ):
        return False  # not an association table: its rows carry more than the link
    anchored = False
    for fk in keys:
        joined = False
        for term in terms:
            if not isinstance(term, BinaryExpression):
                continue
            if term.operator is operators.in_op:  # a selectin load: the parents' keys
                mine, other = term.left, term.right
                joined = joined or (
                    isinstance(mine, ColumnClause)
                    and _same(mine.table, occurrence.element)
                    and mine.name == fk.parent.name
                    and isinstance(other, BindParameter)
                )
                continue
            if term.operator is not operators.eq:
                continue
            for mine, other in ((term.left, term.right), (term.right, term.left)):
                if not (
                    isinstance(mine, ColumnClause)
                    and _same(mine.table, occurrence.element)
                    and mine.name == fk.parent.name
                ):
                    continue
                if isinstance(other, BindParameter) and not other.expanding:
                    joined = True
                elif isinstance(other, ColumnClause) and other.name == fk.column.name:
                    for element, table in filtered:
                        if table is fk.column.table and _same(other.table, element):
                            joined = anchored = True
        if not joined:
            return False
    return anchored


def _read_check(compiler: ProvingCompiler, occurrence: Occurrence) -> tuple[ReadCheck, list[Any]]:
    owner = occurrence.owner
    statement = None if owner is None else owner.get("selectable")
    target = False
    element = occurrence.element
    name = str(getattr(element, "name", occurrence.table.name))
    if name.startswith("%("):  # an anonymous alias, named only when rendered
        name = f"an alias of {occurrence.table.name}"
    if isinstance(statement, Select):
        roots = list(owner["compile_state"].froms) if owner and "compile_state" in owner else []
        where = f"the FROM of a SELECT ({name})"
    elif isinstance(statement, (Update, Delete)):
        roots = [statement.table]
        # MySQL renders the target among the tables of a multi-table UPDATE, as a plain FROM
        target = occurrence.target or _same(element, statement.table)
        kind = "UPDATE" if isinstance(statement, Update) else "DELETE"
        where = f"the {kind} of {name}" if target else f"the {kind}'s FROM ({name})"
    else:
        raise Refusal(f"the tenant table {name!r} is rendered where the proof cannot place it")
    terms = list(_conjuncts(statement._where_criteria))
    for root in roots:
        found = _join_terms(root, element, [])
        if found is not None:
            terms.extend(found)
            break
    tenant_column = tenant_column_of(occurrence.table).name
    tenant_params = tuple(
        dict.fromkeys(
            name
            for column, param in _equalities(terms, element)
            if column.name == tenant_column
            for name in _bind_name(compiler, param)
        )
    )
    key_params = None
    if isinstance(statement, (Update, Delete)) and target:
        key_params = _primary_key_params(compiler, occurrence.table, terms, element)
    check = ReadCheck(
        table=occurrence.table,
        where=where,
        tenant_params=tenant_params,
        key_params=key_params,
        read_only=isinstance(statement, Select),
    )
    return check, terms


def _primary_key_params(
    compiler: ProvingCompiler, table: Table, terms: list[Any], element: Any
) -> tuple[str, ...] | None:
    by_column: dict[str, str] = {}
    for column, param in _equalities(terms, element):
        for name in _bind_name(compiler, param):
            by_column.setdefault(column.name, name)
    names = []
    for column in table.primary_key.columns:
        if column.name not in by_column:
            return None
        names.append(by_column[column.name])
    return tuple(names) or None


def _conjuncts(criteria: Any) -> Iterator[Any]:
    """The top-level AND terms of a WHERE or ON clause."""
    for criterion in criteria:
        while isinstance(criterion, Grouping):
            criterion = criterion.element
        if isinstance(criterion, BooleanClauseList) and criterion.operator is operators.and_:
            yield from _conjuncts(criterion.clauses)
        elif criterion is not None:
            yield criterion


def _join_terms(node: Any, element: Any, terms: list[Any]) -> list[Any] | None:
    """The ON terms that filter ``element`` on its way up the join tree rooted at ``node``: an
    inner join's filter both sides, an outer join's only the side it may fill with NULLs."""
    while isinstance(node, FromGrouping):
        node = node.element
    if _same(node, element):
        return terms
    if isinstance(node, Join):
        if node.full and _contains(node, element):
            raise Refusal(
                "a FULL OUTER JOIN of a tenant table cannot be scoped without changing its "
                "meaning (the tenant filter would drop the rows it pads with NULLs); join "
                "subqueries that select each tenant model instead"
            )
        on = list(_conjuncts([node.onclause]))
        left = terms if node.isouter or node.full else terms + on
        right = terms if node.full else terms + on
        found = _join_terms(node.left, element, left)
        if found is not None:
            return found
        return _join_terms(node.right, element, right)
    return None


def _contains(node: Any, element: Any) -> bool:
    while isinstance(node, FromGrouping):
        node = node.element
    if isinstance(node, Join):
        return _contains(node.left, element) or _contains(node.right, element)
    return _same(node, element)


def _equalities(terms: list[Any], element: Any) -> Iterator[tuple[ColumnClause[Any], Any]]:
    """``(column of element, bound parameter)`` for each term ``column = :param``."""
    for term in terms:
        if not isinstance(term, BinaryExpression) or term.operator is not operators.eq:
            continue
        for column, other in ((term.left, term.right), (term.right, term.left)):
            if (
                isinstance(column, ColumnClause)
                and _same(column.table, element)
                and isinstance(other, BindParameter)
                and not other.expanding
            ):
                yield column, other


def _bind_name(compiler: SQLCompiler, param: BindParameter[Any]) -> tuple[str, ...]:
    name = compiler.bind_names.get(param)
    return () if name is None else (name,)


def _same(a: Any, b: Any) -> bool:
    return a is b or (a is not None and b is not None and origin(a) is origin(b))


# -- writes ------------------------------------------------------------------------------------


def _write_checks(compiler: ProvingCompiler, write: Write) -> Iterator[WriteCheck]:
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
    if isinstance(statement, Insert) and is_tenant_table(table):
        column = tenant_column_of(table)
        tenant_key = column.key
        if tenant_key not in written:
            names = [f"{tenant_key}_m{i}" for i in range(len(rows))] if multi else [tenant_key]
            for name in names:
                yield _bound(compiler, table, column, name, None, update)


_UNGUARDED: Any = object()


def _value_check(
    compiler: ProvingCompiler,
    table: Table,
    column: Column[Any],
    value: Any,
    param: str,
    parent: KeyCheck | None,
    update: bool,
) -> Iterator[WriteCheck]:
    if hasattr(value, "__clause_element__"):
        value = value.__clause_element__()
    if not isinstance(value, ClauseElement):
        yield _bound(compiler, table, column, param, parent, update)
    elif isinstance(value, BindParameter):
        names = list({n for bound, n in compiler.bind_names.items() if _same(bound, value)})
        if len(names) != 1:
            raise Refusal(
                f"the value written to {table.name}.{column.name} cannot be identified among "
                "the statement's parameters"
            )
        yield _bound(compiler, table, column, names[0], parent, update)
    elif (isinstance(value, Null) and parent is not None) or (
        parent is not None and _selects_parent_key(value, parent)
    ):
        return
    else:
        what = "the tenant column" if parent is None else "a foreign key to a tenant table"
        raise Refusal(
            f"{table.name}.{column.name} is {what} and is written from a SQL expression "
            f"({type(value).__name__}) that cannot be proven to name the tenant's row; pass "
            "the value itself"
            + ("" if parent is None else ", or a scalar subquery selecting the parent's key")
        )


def _bound(
    compiler: ProvingCompiler,
    table: Table,
    column: Column[Any],
    param: str,
    parent: KeyCheck | None,
    update: bool,
) -> WriteCheck:
    if param not in compiler.bind_names.values():
        if parent is None and not update:
            raise Refusal(
                f"this INSERT into {table.name!r} does not write its tenant column; the kit "
                "stamps it in a tenant session, so the statement was built around it"
            )
        raise Refusal(
            f"the value written to {table.name}.{column.name} cannot be identified among the "
            "statement's parameters"
        )
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


_GUARDED: weakref.WeakKeyDictionary[Table, dict[str, KeyCheck | None]] = weakref.WeakKeyDictionary()


def _guarded_columns(table: Any) -> dict[str, KeyCheck | None]:
    """Columns of ``table`` whose written values are checked, by key: the tenant column (None)
    and foreign keys to tenant tables (where they point)."""
    if not isinstance(table, Table):
        return {}
    found = _GUARDED.get(table)
    if found is not None:
        return found
    found = {}
    if is_tenant_table(table):
        found[tenant_column_of(table).key] = None
    for fk in table.foreign_keys:
        parent = fk.column.table
        if is_tenant_table(parent):
            found.setdefault(fk.parent.key, KeyCheck(parent, fk.column.name))
    _GUARDED[table] = found
    return found
