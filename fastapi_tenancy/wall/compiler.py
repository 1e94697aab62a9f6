"""The proving compiler: compiles a statement exactly as its dialect does, and records the facts
that the proof needs on the way.

It is a subclass of the engine's own statement compiler, so the SQL it sees is the SQL that will
be sent: every place where a tenant table is rendered as a FROM (a SELECT's FROM list or JOIN,
an UPDATE or DELETE target, UPDATE ... FROM, DELETE ... USING, at any depth: subqueries, CTEs,
unions, RETURNING, VALUES) is recorded together with the statement that owns it, and so is
every INSERT and UPDATE that writes a tenant table or a foreign key to one. Raw SQL that the
proof cannot read (``text()``, ``literal_column()``, ``table()``, prefixes, suffixes, hints,
custom operators spelled with words, identifiers that skip quoting) is refused on the spot.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import visitors
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert, UpdateBase
from sqlalchemy.sql.elements import ColumnClause, quoted_name
from sqlalchemy.sql.schema import Column, Table
from sqlalchemy.sql.selectable import TableClause
from sqlalchemy.types import UserDefinedType

from ..isolation.placement import TENANT_SCHEMA
from ..models import TENANT_TABLE_INFO_KEY, placed_tables, tenant_table_names

__all__ = [
    "Occurrence",
    "ProvingCompiler",
    "Refusal",
    "Write",
    "is_tenant_table",
    "origin",
    "proving_compiler",
    "same",
    "tenant_column_of",
]


class Refusal(Exception):
    """Raised inside the proving compile for a construct the proof cannot read."""


@dataclass(eq=False)
class Occurrence:
    """A tenant table rendered as a FROM: ``element`` is the table or the alias it is rendered
    as, ``owner`` the stack entry of the SELECT, UPDATE or DELETE whose FROM it is."""

    table: Table
    element: Any
    owner: dict[str, Any] | None
    target: bool


@dataclass(eq=False)
class Write:
    """An INSERT or UPDATE statement (as compiled) of the compile, with its compile state."""

    statement: UpdateBase
    compile_state: Any
    column_keys: list[str] | None = field(default=None)


# Operators that a custom_op() may spell: symbols only (PostgreSQL's operator characters), or
# the keyword operators SQLAlchemy's own dialects build with custom_op().
_SYMBOL_OPERATOR = re.compile(r"[+\-*/<>=~!@#%^&|`?]+")
_WORD_OPERATORS = frozenset(
    {"MATCH", "REGEXP", "NOT REGEXP", "ILIKE", "NOT ILIKE", "SIMILAR TO", "NOT SIMILAR TO"}
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_HARMLESS_LITERALS = frozenset({"*", "1"})


def tenant_column_name(table: Any) -> str | None:
    """The tenant column's name if ``table`` is a tenant table, else ``None``.

    A tenant model's ``Table`` is marked in its ``info``; another ``Table`` of the same name
    and schema (reflected with ``autoload_with``, or declared again) is the same table in the
    database, and counts as one too.
    """
    if not isinstance(table, Table):
        return None
    name = table.info.get(TENANT_TABLE_INFO_KEY)
    if name is None:
        name = tenant_table_names().get((table.schema, table.name))
    return name


def is_tenant_table(table: Any) -> bool:
    """Whether ``table`` is the ``Table`` of a tenant model (or another ``Table`` of it)."""
    return tenant_column_name(table) is not None


def origin(element: Any) -> Any:
    """``element`` without the ORM's annotations and the clones made by adaptation: two
    elements with one origin render as one name."""
    element = element._deannotate() if hasattr(element, "_deannotate") else element
    while getattr(element, "_is_clone_of", None) is not None:
        element = element._is_clone_of
    return element


def same(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` render as one FROM (see :func:`origin`)."""
    return a is b or (a is not None and b is not None and origin(a) is origin(b))


def writes_tenant_keys(table: Table) -> bool:
    """Whether ``table`` has a tenant column or a foreign key to a tenant table."""
    return is_tenant_table(table) or any(
        is_tenant_table(fk.column.table) for fk in table.foreign_keys
    )


def tenant_column_of(table: Table) -> Column[Any]:
    """The tenant column of a tenant table (``Table.info`` names it by its SQL name)."""
    name = tenant_column_name(table)
    return next(column for column in table.columns if column.name == name)


# SQLAlchemy's compiler is untyped: the mixin sees it as Any.
_CompilerBase: Any = SQLCompiler


class ProvingCompiler(_CompilerBase):  # type: ignore[misc]
    """Mixed in front of a dialect's statement compiler by :func:`proving_compiler`."""

    wall_occurrences: list[Occurrence]
    wall_writes: list[Write]
    wall_schemas: set[str | None]
    wall_unplaced: set[str]
    wall_shared: set[str]

    def __init__(self, dialect: Dialect, statement: Any, **kwargs: Any) -> None:
        self.wall_occurrences = []
        self.wall_writes = []
        self.wall_schemas = set()
        self.wall_unplaced = set()
        self.wall_shared = set()
        super().__init__(dialect, statement, **kwargs)

    # -- which schemas the SQL names ---------------------------------------------------------

    @property
    def preparer(self) -> Any:
        return self._wall_preparer

    @preparer.setter
    def preparer(self, preparer: Any) -> None:
        """Every schema-qualified name (tables as FROMs, INSERT targets and column prefixes,
        sequences, types) is rendered through the preparer's ``schema_for_object``: a copy of
        the preparer records the schema each object declares, untranslated."""
        recording = copy.copy(preparer)
        effective = preparer.schema_for_object

        def schema_for_object(element: Any) -> Any:
            schema = getattr(element, "schema", None)
            self.wall_schemas.add(schema)
            if isinstance(element, TableClause) and schema != TENANT_SCHEMA:
                self.wall_shared.add(element.fullname)
                if schema is None and element.name in placed_tables():
                    self.wall_unplaced.add(element.name)
            return effective(element)

        recording.schema_for_object = schema_for_object
        self._wall_preparer = recording

    # -- where tenant tables are rendered ------------------------------------------------------

    def visit_table(
        self,
        table: Any,
        asfrom: bool = False,
        iscrud: bool = False,
        ashint: bool = False,
        enclosing_alias: Any = None,
        **kwargs: Any,
    ) -> Any:
        if not isinstance(table, Table):
            raise Refusal(
                f"the lightweight table() construct {table.name!r} cannot be proven scoped; "
                "select the mapped model instead"
            )
        if (asfrom or iscrud) and not ashint and is_tenant_table(table):
            # An alias of this table renders as its name; an enclosing alias of something else
            # (the subquery whose SELECT this FROM belongs to) does not.
            aliased = enclosing_alias is not None and origin(enclosing_alias.element) is origin(
                table
            )
            element = enclosing_alias if aliased else table
            owner = self.stack[-1] if self.stack else None
            self.wall_occurrences.append(Occurrence(origin(table), element, owner, iscrud))
        return super().visit_table(
            table,
            asfrom=asfrom,
            iscrud=iscrud,
            ashint=ashint,
            enclosing_alias=enclosing_alias,
            **kwargs,
        )

    def visit_insert(self, insert_stmt: Any, **kwargs: Any) -> Any:
        toplevel = self._is_toplevel(kwargs)
        text = super().visit_insert(insert_stmt, **kwargs)
        self._record_write(insert_stmt, toplevel)
        return text

    def visit_update(self, update_stmt: Any, **kwargs: Any) -> Any:
        toplevel = self._is_toplevel(kwargs)
        text = super().visit_update(update_stmt, **kwargs)
        self._record_write(update_stmt, toplevel)
        return text

    def _is_toplevel(self, kwargs: dict[str, Any]) -> bool:
        return not self.stack and kwargs.get("visiting_cte") is None

    def _record_write(self, statement: Any, toplevel: bool) -> None:
        table = origin(statement.table)
        if not isinstance(table, Table):
            return  # a join (MySQL's multi-table UPDATE): its tables are checked as FROMs
        if not toplevel:
            if writes_tenant_keys(table):
                raise Refusal(
                    f"an INSERT or UPDATE of {table.name!r} inside a CTE or subquery cannot be "
                    "proven to write the tenant's keys; run it as a statement of its own"
                )
            return
        compile_state = self.dml_compile_state
        core = compile_state.statement
        if isinstance(core, Insert) and is_tenant_table(table):
            if core._post_values_clause is not None:
                raise Refusal(
                    f"an upsert (ON CONFLICT / ON DUPLICATE KEY) on {table.name!r} could update "
                    "another tenant's row; insert, or update the tenant's row by its key"
                )
            if core.select is not None:
                raise Refusal(
                    f"INSERT ... FROM SELECT into the tenant table {table.name!r} cannot be "
                    "proven to write the tenant's key; insert the rows as values"
                )
        keys = list(self.column_keys) if self.column_keys is not None else None
        self.wall_writes.append(Write(core, compile_state, keys))

    # -- raw SQL the proof cannot read ---------------------------------------------------------

    def visit_textclause(self, textclause: Any, **kwargs: Any) -> Any:
        raise Refusal(
            "textual SQL (text()) cannot be proven scoped to a tenant; use the ORM, or trusted "
            "code under without_tenant()"
        )

    def visit_textual_select(self, taf: Any, **kwargs: Any) -> Any:
        raise Refusal("textual SQL (text().columns()) cannot be proven scoped to a tenant")

    def visit_tstring_text(self, element: Any, **kwargs: Any) -> Any:
        raise Refusal("template-string SQL cannot be proven scoped to a tenant")

    def visit_column(self, column: Any, **kwargs: Any) -> Any:
        if column.is_literal and column.name not in _HARMLESS_LITERALS:
            raise Refusal(
                "literal_column() fragments cannot be proven scoped to a tenant; use the mapped "
                "attribute"
            )
        _refuse_unquoted(column.name)
        if isinstance(column, ColumnClause) and column.table is not None:
            _refuse_unquoted(getattr(column.table, "name", None))
        return super().visit_column(column, **kwargs)

    def visit_label(self, label: Any, **kwargs: Any) -> Any:
        _refuse_unquoted(label.name)
        return super().visit_label(label, **kwargs)

    def _generate_prefixes(self, stmt: Any, prefixes: Any, **kwargs: Any) -> Any:
        if not prefixes:
            return super()._generate_prefixes(stmt, prefixes, **kwargs)
        raise Refusal(
            "prefixes and suffixes (prefix_with(), suffix_with()) are raw SQL and are refused "
            "in a tenant session (INSERT OR REPLACE, for one, deletes another tenant's row)"
        )

    def get_select_hint_text(self, byfroms: Any) -> Any:
        if byfroms:
            raise Refusal("optimizer hints (with_hint()) are raw SQL and are refused")
        return super().get_select_hint_text(byfroms)

    def get_statement_hint_text(self, hint_texts: Any) -> Any:
        raise Refusal("statement hints (with_statement_hint()) are raw SQL and are refused")

    def format_from_hint_text(self, sqltext: Any, table: Any, hint: Any, iscrud: Any) -> Any:
        raise Refusal("table hints (with_hint()) are raw SQL and are refused")

    def visit_custom_op_binary(self, element: Any, operator: Any, **kwargs: Any) -> Any:
        _refuse_custom_operator(operator, self.dialect)
        return super().visit_custom_op_binary(element, operator, **kwargs)

    def visit_custom_op_unary_operator(self, element: Any, operator: Any, **kwargs: Any) -> Any:
        _refuse_custom_operator(operator, self.dialect)
        return super().visit_custom_op_unary_operator(element, operator, **kwargs)

    def visit_custom_op_unary_modifier(self, element: Any, operator: Any, **kwargs: Any) -> Any:
        _refuse_custom_operator(operator, self.dialect)
        return super().visit_custom_op_unary_modifier(element, operator, **kwargs)

    def process(self, obj: Any, **kwargs: Any) -> Any:
        _refuse_custom_construct(obj)
        return super().process(obj, **kwargs)

    def visit_typeclause(self, typeclause: Any, **kwargs: Any) -> Any:
        type_ = typeclause.type
        if isinstance(type_, UserDefinedType) or isinstance(
            getattr(type_, "impl_instance", None), UserDefinedType
        ):
            raise Refusal(
                f"the type {type(type_).__name__} renders its own SQL (get_col_spec()), which "
                "cannot be proven; cast to a SQLAlchemy type"
            )
        return super().visit_typeclause(typeclause, **kwargs)

    def visit_function(self, func: Any, **kwargs: Any) -> Any:
        if str(func.name).lower() == "set_config":
            raise Refusal(
                "set_config() changes server settings, among them the tenant that row-level "
                "security sees; it is refused in a tenant session"
            )
        _refuse_unquoted(func.name)
        packages = getattr(func, "packagenames", ()) or ()
        for package in packages:
            _refuse_unquoted(package)
        if packages:  # func.<schema>.<name>(): a function of that schema
            self.wall_schemas.add(packages[0])
        return super().visit_function(func, **kwargs)


_COMMENT_MARKERS = ("--", "/*", "*/")


def _refuse_custom_operator(operator: Any, dialect: Dialect) -> None:
    opstring = str(getattr(operator, "opstring", ""))
    comment = any(marker in opstring for marker in _COMMENT_MARKERS) or (
        "#" in opstring and dialect.name in ("mysql", "mariadb")  # a comment there
    )
    if not comment and (
        _SYMBOL_OPERATOR.fullmatch(opstring) or opstring.upper() in _WORD_OPERATORS
    ):
        return
    raise Refusal(
        f"the custom operator {opstring!r} is raw SQL and cannot be proven scoped; use "
        "SQLAlchemy's operators"
    )


def refuse_custom_constructs(statement: Any) -> None:
    """Refuse a statement holding a construct compiled by an ``@compiles`` function, whose
    SQL is whatever that function returns."""
    mappers = set()
    for element in visitors.iterate(statement):
        _refuse_custom_construct(element)
        entity = getattr(element, "_annotations", {}).get("parententity")
        if entity is not None:
            mappers.add(entity.mapper)
    # and the SQL of the mapped models' column properties, which the ORM adds when compiling
    for mapper in mappers:
        for prop in mapper.column_attrs:
            for column in prop.columns:
                for element in visitors.iterate(column):
                    _refuse_custom_construct(element)


def _refuse_custom_construct(element: Any) -> None:
    if getattr(type(element), "_compiler_dispatcher", None) is not None:
        raise Refusal(
            f"{type(element).__name__} is compiled by an @compiles function, whose SQL cannot "
            "be proven scoped; use SQLAlchemy's constructs in a tenant session"
        )


def _refuse_unquoted(name: Any) -> None:
    if isinstance(name, quoted_name) and name.quote is False and not _IDENTIFIER.fullmatch(name):
        raise Refusal(
            f"the name {str(name)!r} is marked quote=False and would be sent as raw SQL; it is "
            "refused in a tenant session"
        )


_COMPILERS: dict[type[Any], type[ProvingCompiler]] = {}


def proving_compiler(dialect: Dialect) -> type[ProvingCompiler]:
    """The proving twin of ``dialect``'s statement compiler (made once per compiler class)."""
    base = dialect.statement_compiler
    found = _COMPILERS.get(base)
    if found is None:
        found = type(f"Proving{base.__name__}", (ProvingCompiler, base), {})
        _COMPILERS[base] = found
    return found
