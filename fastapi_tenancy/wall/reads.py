"""The read side of the proof: every tenant table rendered as a FROM must be shown filtered.

An occurrence is proven by a term ``<its tenant column> = :param`` at the top level of the AND
of its statement's WHERE, or of the ON clause of a join that filters its side (an inner join's
filter both sides, an outer join's only the side it may fill with NULLs); the gate then checks
that ``param`` carries the session's tenant. Each row scope column of the table (its owner,
say) must be proven the same way, with the session's value of that scope. An UPDATE or DELETE
target may instead be named by its primary key (the row scopes are then proven with the key),
and an association table by its keys joined to filtered rows. A table of a
``__shared_rows__`` model, where it is only read, may have ``(<tenant column> = :param OR
<tenant column> IS NULL)`` instead: its rows with no tenant are shared by every tenant. A
table of a model whose tenants read their family's rows (``__tenant_reads__``), where it is
only read, may have ``<tenant column> IN (:p0, :p1, ...)`` (parameters, or one expanding
parameter) instead: the gate then checks that every tenant it names is the session's tenant or
of its family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import column as bare_column
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Delete, Update
from sqlalchemy.sql.elements import (
    BinaryExpression,
    BindParameter,
    BooleanClauseList,
    ClauseList,
    ColumnClause,
    Grouping,
    Null,
    True_,
)
from sqlalchemy.sql.schema import Table
from sqlalchemy.sql.selectable import FromGrouping, Join, Select

from ..hierarchy import TenantReads
from ..models import TENANT_GLOBAL_INFO_KEY, TENANT_READS_INFO_KEY, TENANT_SHARED_ROWS_INFO_KEY
from ..row_policies import PolicyTerm, row_policies_of
from ..row_scopes import public_columns_of, row_scopes_of
from .compiler import (
    Occurrence,
    ProvingCompiler,
    Refusal,
    is_tenant_table,
    same,
    tenant_column_of,
)

__all__ = ["FamilyBinds", "PolicyBinds", "ReadCheck", "read_checks"]

PolicyBinds = tuple[tuple[str, Any, bool], ...]
"""The parameters of a term proving a row policy: name, the policy's value, and whether it is
an expanding parameter (a list)."""

FamilyBinds = tuple[tuple[str, bool], ...]
"""The parameters of a term ``<tenant column> IN (...)``: name, and whether it is an expanding
parameter (a list)."""


@dataclass(frozen=True, slots=True)
class ReadCheck:
    """A tenant table rendered as a FROM, and the parameters that may prove it filtered."""

    table: Table
    where: str
    tenant_params: tuple[str, ...]
    key_params: tuple[str, ...] | None
    read_only: bool
    linked: bool = False
    scope_params: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """For each row scope of the table, its name and the parameters that may prove it."""
    family: TenantReads | None = None
    """``"ancestors"`` or ``"descendants"``: whose rows the table's tenants read beside their
    own, where it is only read."""
    family_params: tuple[FamilyBinds, ...] = ()
    """The parameters of each ``<tenant column> IN (...)`` term that may prove it."""
    policy_params: tuple[tuple[str, tuple[PolicyBinds, ...]], ...] = ()
    """For each term of each row policy of the table, the policy's name and the terms of the
    statement that may prove it, each by the parameters it binds with the policy's values."""

    @property
    def global_access(self) -> bool:
        """Whether the table's model may be read across tenants in the global-access switch."""
        return bool(self.table.info.get(TENANT_GLOBAL_INFO_KEY))


def read_checks(compiler: ProvingCompiler) -> tuple[ReadCheck, ...]:
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
                    and same(mine.table, occurrence.element)
                    and mine.name == fk.parent.name
                    and isinstance(other, BindParameter)
                )
                continue
            if term.operator is not operators.eq:
                continue
            for mine, other in ((term.left, term.right), (term.right, term.left)):
                if not (
                    isinstance(mine, ColumnClause)
                    and same(mine.table, occurrence.element)
                    and mine.name == fk.parent.name
                ):
                    continue
                if isinstance(other, BindParameter) and not other.expanding:
                    joined = True
                elif isinstance(other, ColumnClause) and other.name == fk.column.name:
                    for element, table in filtered:
                        if table is fk.column.table and same(other.table, element):
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
        target = occurrence.target or same(element, statement.table)
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
    read_only = isinstance(statement, Select)
    equalities = list(_equalities(terms, element))
    if read_only and occurrence.table.info.get(TENANT_SHARED_ROWS_INFO_KEY):
        equalities += _shared_equalities(terms, element)
    tenant_params = tuple(
        dict.fromkeys(
            name
            for column, param in equalities
            if column.name == tenant_column
            for name in _bind_name(compiler, param)
        )
    )
    public = public_columns_of(occurrence.table) if read_only else {}
    scope_params = tuple(
        (
            scope,
            tuple(
                dict.fromkeys(
                    name
                    for column, param in equalities
                    + _public_equalities(terms, element, public.get(scope))
                    if column.name == column_name
                    for name in _bind_name(compiler, param)
                )
            ),
        )
        for scope, column_name in row_scopes_of(occurrence.table).items()
    )
    family = occurrence.table.info.get(TENANT_READS_INFO_KEY) if read_only else None
    family_params: tuple[FamilyBinds, ...] = ()
    if family is not None:
        family_params = tuple(
            dict.fromkeys(
                binds
                for column, params in _memberships(terms, element)
                if column.name == tenant_column
                and (binds := _member_binds(compiler, params)) is not None
            )
        )
    policy_params = tuple(
        (policy.name, _policy_proofs(compiler, terms, occurrence, term))
        for policy in row_policies_of(occurrence.table).values()
        for term in policy.terms
    )
    key_params = None
    if isinstance(statement, (Update, Delete)) and target:
        key_params = _primary_key_params(compiler, occurrence.table, terms, element)
    check = ReadCheck(
        table=occurrence.table,
        where=where,
        tenant_params=tenant_params,
        key_params=key_params,
        read_only=read_only,
        scope_params=scope_params,
        family=family,
        family_params=family_params,
        policy_params=policy_params,
    )
    return check, terms


def _policy_proofs(
    compiler: ProvingCompiler, terms: list[Any], occurrence: Occurrence, policy: PolicyTerm
) -> tuple[PolicyBinds, ...]:
    """The terms among ``terms`` that are ``policy`` on the occurrence: the same SQL, in the
    same order, once the columns of the occurrence (the table or its alias) are read as the
    policy's; each given by the parameters it binds, paired with the policy's own values,
    which the gate checks they carry as sent. Values are not compared here: a compiled
    statement is shared by every statement of its shape, whatever values it was first
    compiled with."""
    wanted = _on_columns(policy.expression, lambda table: table is occurrence.table)
    shape = _shape(wanted)
    values = [bound for bound in visitors.iterate(wanted) if isinstance(bound, BindParameter)]
    found = []
    for term in terms:
        mine = _on_columns(term, lambda table: same(table, occurrence.element))
        if _shape(mine) != shape or not mine.compare(wanted, compare_values=False):
            continue
        binds = []
        params = [bound for bound in visitors.iterate(term) if isinstance(bound, BindParameter)]
        for bound, value in zip(params, values, strict=True):
            names = _bind_name(compiler, bound)
            if not names or bound.expanding != value.expanding:
                break
            binds.append((names[0], value.effective_value, value.expanding))
        else:
            found.append(tuple(binds))
    return tuple(found)


def _shape(expression: Any) -> list[tuple[str, Any, str | None]]:
    """Every element of ``expression`` in traversal order: its kind, its operator and, for a
    column, its name. Two expressions of one shape bind their parameters in one order."""
    return [
        (
            type(element).__name__.removeprefix("Annotated"),
            getattr(element, "operator", None),
            element.name if isinstance(element, ColumnClause) else None,
        )
        for element in visitors.iterate(expression)
    ]


def _on_columns(expression: Any, mine: Callable[[Any], bool]) -> Any:
    """``expression`` with every column of a FROM that ``mine`` accepts replaced by a bare
    column of its name (other columns are left as they are, and compare as different)."""

    def bare(element: Any, **_kw: Any) -> Any:
        if isinstance(element, ColumnClause) and mine(getattr(element, "table", None)):
            return bare_column(element.name)
        return None

    return visitors.replacement_traverse(_ungrouped(expression), {}, bare)


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
    if same(node, element):
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
    return same(node, element)


def _equalities(terms: list[Any], element: Any) -> Iterator[tuple[ColumnClause[Any], Any]]:
    """``(column of element, bound parameter)`` for each term ``column = :param``."""
    for term in terms:
        if not isinstance(term, BinaryExpression) or term.operator is not operators.eq:
            continue
        for column, other in ((term.left, term.right), (term.right, term.left)):
            if (
                isinstance(column, ColumnClause)
                and same(column.table, element)
                and isinstance(other, BindParameter)
                and not other.expanding
            ):
                yield column, other


def _memberships(
    terms: list[Any], element: Any
) -> Iterator[tuple[ColumnClause[Any], tuple[BindParameter[Any], ...]]]:
    """``(column of element, its parameters)`` for each term ``column IN (:p0, :p1, ...)`` or
    ``column IN (:param)`` (one expanding parameter) whose values all travel as parameters
    (none rendered into the SQL)."""
    for term in terms:
        if not isinstance(term, BinaryExpression) or term.operator is not operators.in_op:
            continue
        column, other = term.left, term.right
        if not (isinstance(column, ColumnClause) and same(column.table, element)):
            continue
        if isinstance(other, BindParameter):
            params: tuple[Any, ...] = (other,) if other.expanding else ()
        elif isinstance(other, Grouping) and isinstance(other.element, ClauseList):
            params = tuple(other.element.clauses)
        else:
            continue
        if params and all(
            isinstance(param, BindParameter) and not param.literal_execute for param in params
        ):
            yield column, params


def _member_binds(
    compiler: SQLCompiler, params: tuple[BindParameter[Any], ...]
) -> FamilyBinds | None:
    """The compiled names of ``params`` (``None`` if one was not rendered as a parameter)."""
    binds = []
    for param in params:
        names = _bind_name(compiler, param)
        if not names:
            return None
        binds.append((names[0], param.expanding))
    return tuple(binds)


def _shared_equalities(terms: list[Any], element: Any) -> list[tuple[ColumnClause[Any], Any]]:
    """``(column, param)`` for each term ``(column = :param OR column IS NULL)`` on ``element``:
    exactly those two arms, on one column."""
    return _equalities_or(terms, element, lambda arm, column: _is_null_test(arm, column))


def _public_equalities(
    terms: list[Any], element: Any, flag: str | None
) -> list[tuple[ColumnClause[Any], Any]]:
    """``(column, param)`` for each term ``(column = :param OR <flag> = true)`` on ``element``:
    exactly those two arms, ``flag`` being the public flag of one row scope (the caller keeps
    the pairs on that scope's column)."""
    if flag is None:
        return []
    return _equalities_or(terms, element, lambda arm, _column: _is_true_test(arm, element, flag))


def _equalities_or(
    terms: list[Any], element: Any, admitted: Callable[[Any, ColumnClause[Any]], bool]
) -> list[tuple[ColumnClause[Any], Any]]:
    """``(column, param)`` for each term ``(column = :param OR <arm>)`` on ``element``: exactly
    two arms, the other one ``admitted`` (given it and the compared column)."""
    found = []
    for term in terms:
        if not isinstance(term, BooleanClauseList) or term.operator is not operators.or_:
            continue
        arms = [_ungrouped(arm) for arm in term.clauses]
        if len(arms) != 2:
            continue
        for equal, other in (arms, arms[::-1]):
            matched = list(_equalities([equal], element))
            if len(matched) == 1 and admitted(other, matched[0][0]):
                found.append(matched[0])
    return found


def _is_true_test(term: Any, element: Any, flag: str) -> bool:
    return (
        isinstance(term, BinaryExpression)
        and term.operator is operators.eq
        and isinstance(term.right, True_)
        and isinstance(term.left, ColumnClause)
        and same(term.left.table, element)
        and term.left.name == flag
    )


def _ungrouped(element: Any) -> Any:
    while isinstance(element, Grouping):
        element = element.element
    return element


def _is_null_test(term: Any, column: ColumnClause[Any]) -> bool:
    return (
        isinstance(term, BinaryExpression)
        and term.operator is operators.is_
        and isinstance(term.right, Null)
        and isinstance(term.left, ColumnClause)
        and same(term.left.table, column.table)
        and term.left.name == column.name
    )


def _bind_name(compiler: SQLCompiler, param: BindParameter[Any]) -> tuple[str, ...]:
    name = compiler.bind_names.get(param)
    return () if name is None else (name,)
