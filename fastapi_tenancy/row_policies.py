"""Named row policies: a fixed predicate a model's rows must meet, ANDed with the tenant filter.

A row scope compares a column with a value of the request (the owner); a row policy is a
predicate of the row alone, the same for every session: live rows only, rows below a
classification level, rows not under legal hold::

    class Document(TenantScoped, table=True):
        __row_policies__ = (
            RowPolicy("live", lambda cls: cls.archived == false()),
            RowPolicy("cleared", lambda cls: cls.level <= 2),
        )

A tenant session reads only the rows meeting every policy of the model (``tenant AND live AND
cleared``), updates and deletes only those, and writes no row that would fail one (a new row,
a change, a bulk ``UPDATE ... SET``); the wall proves each policy per compiled statement, as it
proves the tenant filter. A named, audited switch lifts a policy for the roles that need it
(``lifted_session("live", allow=is_records_manager)``); the tenant stays.

The predicate reads only columns of the model's own table, with what SQLAlchemy can evaluate in
Python (comparisons, ``in_``, ``is_``, ``and_``/``or_``/``not_``, arithmetic): that is how
writes are checked before they are sent. Subqueries, functions and other tables are refused
when the model is mapped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.orm.evaluator import UnevaluatableError, _EvaluatorCompiler
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import BooleanClauseList, ColumnClause, Grouping
from sqlalchemy.sql.schema import Table

from .exceptions import TenancyMisuse
from .row_scopes import is_row_scope_name

__all__ = [
    "ROW_POLICIES_INFO_KEY",
    "PolicyTerm",
    "RowPolicy",
    "TablePolicy",
    "declared_row_policies",
    "row_policies_of",
]

ROW_POLICIES_INFO_KEY = "fastapi_tenancy.row_policies"
"""Key in ``Table.info``: ``{policy name: TablePolicy}`` of a tenant table's row policies."""


@dataclass(frozen=True)
class RowPolicy:
    """A named predicate on a tenant model's rows, enforced with the tenant filter.

    ``predicate`` is given the model class and answers a SQL boolean expression on its
    columns (``lambda cls: cls.archived == false()``). ``name`` (1 to 31 characters of a-z,
    0-9 and ``_``) is what a lifting switch and the audit record call it; it shares one
    namespace with the row scopes.
    """

    name: str
    predicate: Callable[[Any], ColumnElement[bool]]


Row = Mapping[str, Any]
"""A row's values by column name, as a write would leave them."""


@dataclass(frozen=True)
class PolicyTerm:
    """One top-level AND term of a policy: its expression on the table's columns, the names
    of the columns it reads, and its evaluation in Python over a row's values."""

    expression: ColumnElement[bool]
    columns: frozenset[str]
    evaluate: Callable[[Row], Any]

    def admits(self, row: Row) -> bool:
        """Whether a row with these values meets the term (a NULL result does not)."""
        return self.evaluate(row) is True


@dataclass(frozen=True)
class TablePolicy:
    """A row policy as the wall knows it on one table: its expression and its terms."""

    name: str
    expression: ColumnElement[bool]
    terms: tuple[PolicyTerm, ...]

    @property
    def columns(self) -> frozenset[str]:
        """Every column the policy reads."""
        return frozenset().union(*(term.columns for term in self.terms))


_DECLARED: frozenset[str] = frozenset()
_NONE: Mapping[str, TablePolicy] = {}


def declared_row_policies() -> frozenset[str]:
    """Every row policy some mapped tenant model declares, in this process."""
    return _DECLARED


_BY_NAME: dict[tuple[str | None, str], Mapping[str, TablePolicy]] = {}


def row_policies_of(table: Any) -> Mapping[str, TablePolicy]:
    """``{policy name: TablePolicy}`` of a tenant table (empty for other tables); another
    ``Table`` object of the same name has them too, and cannot prove them."""
    if not isinstance(table, Table):
        return _NONE
    found = table.info.get(ROW_POLICIES_INFO_KEY)
    if found is None:
        found = _BY_NAME.get((table.schema, table.name), _NONE)
    return found if isinstance(found, Mapping) else _NONE


def conjuncts(expression: Any) -> list[Any]:
    """The top-level AND terms of ``expression``, groupings removed."""
    while isinstance(expression, Grouping):
        expression = expression.element
    if isinstance(expression, BooleanClauseList) and expression.operator is operators.and_:
        return [term for clause in expression.clauses for term in conjuncts(clause)]
    return [expression]


class _RowEvaluator(_EvaluatorCompiler):
    """SQLAlchemy's own Python evaluator of SQL expressions (the one behind
    ``synchronize_session="evaluate"``), reading a row's values by column name instead of an
    object's attributes."""

    def __init__(self, table: Table) -> None:
        super().__init__(None)  # type: ignore[no-untyped-call]
        self.table = table

    def visit_column(self, clause: Any) -> Callable[[Row], Any]:
        if getattr(clause, "table", None) is not self.table:
            raise UnevaluatableError(f"{clause} is not a column of {self.table.name}")
        name = clause.name
        return lambda row: row[name]


def mark_row_policies(cls: type[Any], table: Table, declared: Any) -> dict[str, TablePolicy]:
    """Check the row policies ``cls`` declares and record them in ``table.info``."""
    global _DECLARED
    found: dict[str, TablePolicy] = {}
    for policy in declared:
        if not isinstance(policy, RowPolicy):
            raise TenancyMisuse(
                f"{cls.__name__}.__row_policies__ holds {policy!r}, not a RowPolicy"
            )
        if not is_row_scope_name(policy.name):
            raise TenancyMisuse(
                f"a row policy name is 1 to 31 characters of a-z, 0-9 and _, starting with a "
                f"letter; not {policy.name!r}"
            )
        if policy.name in found:
            raise TenancyMisuse(f"{cls.__name__} declares the row policy {policy.name!r} twice")
        found[policy.name] = _table_policy(cls, table, policy)
    if found:
        table.info[ROW_POLICIES_INFO_KEY] = _BY_NAME[(table.schema, table.name)] = found
        _DECLARED = _DECLARED | frozenset(found)
    return found


def _table_policy(cls: type[Any], table: Table, policy: RowPolicy) -> TablePolicy:
    expression = policy.predicate(cls)
    if not isinstance(expression, ColumnElement):
        raise TenancyMisuse(
            f"the row policy {policy.name!r} of {cls.__name__} answers {expression!r}, not a "
            "SQL expression"
        )
    expression = expression._deannotate()
    terms = []
    for term in conjuncts(expression):
        columns = {
            element.name
            for element in visitors.iterate(term)
            if isinstance(element, ColumnClause) and getattr(element, "table", None) is table
        }
        try:
            evaluate = _RowEvaluator(table).process(term)  # type: ignore[no-untyped-call]
        except UnevaluatableError as error:
            raise TenancyMisuse(
                f"the row policy {policy.name!r} of {cls.__name__} cannot be evaluated in "
                f"Python ({error}); a row policy compares the model's own columns with "
                "values, so that writes can be checked before they are sent"
            ) from error
        if not columns:
            raise TenancyMisuse(
                f"a term of the row policy {policy.name!r} of {cls.__name__} reads no column "
                "of its table"
            )
        terms.append(PolicyTerm(term, frozenset(columns), evaluate))
    return TablePolicy(policy.name, expression, tuple(terms))
