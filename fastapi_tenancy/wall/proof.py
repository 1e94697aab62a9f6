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
  of the tenant (or NULL), or a scalar subquery selecting that key from the (proven) parent;
- every row policy of a table read must be found as a term of the same places, with its own
  values as sent; the values written into the columns a row policy reads must meet it.

What the proof cannot read is refused before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.sql.compiler import SQLCompiler

from .compiler import (
    Refusal,
    proving_compiler,
    refuse_custom_constructs,
)
from .reads import ReadCheck, read_checks
from .values import PolicyWrite, WriteCheck, write_checks

__all__ = ["Proof", "prove"]


@dataclass(frozen=True, slots=True)
class Proof:
    """Obligations of one compiled statement, or the reason it cannot be sent."""

    refusal: str | None
    reads: tuple[ReadCheck, ...] = ()
    writes: tuple[WriteCheck | PolicyWrite, ...] = ()
    schemas: frozenset[str | None] = frozenset()
    """The schema of every table the statement renders (``None``: unqualified)."""
    unplaced: frozenset[str] = frozenset()
    """Tables of the placeholder schema named unqualified: their shared tables' copy."""
    shared: frozenset[str] = frozenset()
    """Tables named outside the placeholder schema: in the app's own database."""


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
        reads = read_checks(twin)
        writes = tuple(check for write in twin.wall_writes for check in write_checks(twin, write))
    except Refusal as refusal:
        return Proof(refusal=str(refusal))
    return Proof(
        refusal=None,
        reads=reads,
        writes=writes,
        schemas=frozenset(twin.wall_schemas),
        unplaced=frozenset(twin.wall_unplaced),
        shared=frozenset(twin.wall_shared),
    )
