"""SQLite's DDL for tables in the tenant schema placeholder.

SQLite leaves out a foreign key between tables of two schemas (it cannot enforce one across
attached files). A table in the placeholder is translated to the main database with the shared
tables, so its foreign keys to them are kept: compared by :func:`stored_schema`, not by the
schema each table declares.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import DDLCompiler
from sqlalchemy.sql.schema import ForeignKeyConstraint

from .placement import stored_schema

__all__: list[str] = []


@compiles(ForeignKeyConstraint, "sqlite")
def _foreign_key_on_sqlite(constraint: ForeignKeyConstraint, compiler: Any, **kw: Any) -> Any:
    local = constraint.elements[0].parent.table
    remote = constraint.elements[0].column.table
    if stored_schema(local.schema) != stored_schema(remote.schema):
        return None
    return DDLCompiler.visit_foreign_key_constraint(compiler, constraint, **kw)
