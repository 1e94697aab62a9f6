"""An Alembic migration distributing the example app's tables, as docs/citus.md shows it.

Not run by Alembic here: ``tests/docs/test_citus_docs.py`` imports it and checks that its
operations name every table of the example app.
"""

from __future__ import annotations

from alembic import op

import fastapi_tenancy.postgres.alembic  # noqa: F401  (registers op.distribute_tables)

# --8<-- [start:migration]
TENANT_TABLES = {"projects": "tenant_id", "tasks": "tenant_id", "private_notes": "tenant_id"}
REFERENCE_TABLES = ["plans", "tenants", "users", "memberships"]


def upgrade() -> None:
    op.distribute_tables(tenant_tables=TENANT_TABLES, reference_tables=REFERENCE_TABLES)


def downgrade() -> None:
    op.undistribute_tables([*TENANT_TABLES, *REFERENCE_TABLES])


# --8<-- [end:migration]
