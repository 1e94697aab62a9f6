"""The gate's check of where a statement goes, for a tenant placed in a schema or database of
its own (:mod:`fastapi_tenancy.isolation`).

The statement's tenant tables are compiled with the placeholder schema and translated at
execution; the check proves that the translation is the session's own, that no table, sequence
or function names another tenant's schema outright, and that the tenant tables reach the
tenant's own database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from ..exceptions import UnscopedStatement
from ..isolation.engines import TENANT_DATABASE_ENGINES
from ..isolation.placement import TENANT_SCHEMA, Placement, Strategy
from .proof import Proof

__all__ = ["check_place"]


def _refuse_another_database(conn: Connection, placement: Placement) -> None:
    """A tenant's placed tables go to its own database: the tenant database's engine for a
    database tenant, never a tenant database's engine for the others."""
    if placement.url is not None:
        elsewhere = conn.engine.url != placement.url
    else:
        elsewhere = conn.engine in TENANT_DATABASE_ENGINES
    if elsewhere:
        raise UnscopedStatement(
            "the statement sends the tenant's tables to another tenant's database; send it "
            "through the tenant's session, on its own bind"
        )


def check_place(conn: Connection, options: Any, proof: Proof, placement: Placement) -> None:
    """Refuse a statement that could reach another tenant's schema or database."""
    if options.get("schema_translate_map") != placement.translate_map:
        raise UnscopedStatement(
            "the statement's schema_translate_map is not its session's, so it could reach "
            "another tenant's schema; the session translates the tenant schema itself"
        )
    for schema in proof.schemas:
        if schema is None:
            continue
        if schema == TENANT_SCHEMA:
            _refuse_another_database(conn, placement)
            if placement.url is not None and proof.shared:
                names = ", ".join(sorted(proof.shared))
                raise UnscopedStatement(
                    f"the statement joins the tenant's own tables with {names}, which are in "
                    "the app's database, not the tenant's: no database holds both"
                )
            continue
        if placement.is_tenant_schema(schema):
            raise UnscopedStatement(
                f"the statement names the schema {schema!r} outright, a tenant's schema; "
                "tenant tables are reached through the tenant schema placeholder"
            )
    if proof.unplaced and placement.strategy is not Strategy.SHARED:
        names = ", ".join(sorted(proof.unplaced))
        raise UnscopedStatement(
            f"the statement names {names} without its tenant schema, which reaches the shared "
            "tables, not this tenant's own"
        )
