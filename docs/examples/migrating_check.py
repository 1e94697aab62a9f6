"""docs/migrating.md: find the rows no tenant can reach before switching a table over.

A row whose ``tenant_id`` is NULL belongs to nobody, and a key outside the tenant key pattern
(``"Acme Corp"``) can never be resolved from a request. Run this against the old table, fix
what it finds, then make the column non-null.
"""

import re

from sqlalchemy import Engine, Table, select

from fastapi_tenancy import DEFAULT_KEY_PATTERN


def unservable_tenant_keys(
    engine: Engine, table: Table, pattern: str = DEFAULT_KEY_PATTERN
) -> set[str | None]:
    """The distinct ``tenant_id`` values of ``table`` that are NULL or outside ``pattern``."""
    key_pattern = re.compile(pattern)
    with engine.connect() as conn:
        keys = conn.execute(select(table.c.tenant_id).distinct()).scalars().all()
    return {key for key in keys if key is None or key_pattern.fullmatch(key) is None}
