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
from ..isolation.placement import TENANT_SCHEMA, Placement, Strategy
from .proof import Proof

__all__ = ["check_place"]


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
            if placement.strategy is Strategy.DATABASE and conn.engine.url != placement.url:
                raise UnscopedStatement(
                    "the tenant's tables are in its own database, and this statement was sent "
                    "to another one; send it through the tenant's session"
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
