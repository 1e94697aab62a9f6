"""An Alembic migration that creates a tenant table and turns row-level security on for it.

docs/postgres-rls.md includes this file; tests/docs/test_postgres_rls_docs.py runs
``upgrade()`` and ``downgrade()`` against PostgreSQL.
"""

import sqlalchemy as sa
from alembic import op

import fastapi_tenancy.postgres.alembic  # noqa: F401  (registers the operations on op)

revision = "0002_tenant_rls"
down_revision = "0001_initial"


def upgrade() -> None:
    op.create_table(
        "doc_invoice",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False, index=True),
        sa.Column("total", sa.Integer, nullable=False),
    )
    op.create_table(
        "doc_price_list",  # a __global_access__ model's table
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False),
    )
    op.enable_tenant_rls("doc_invoice")
    op.enable_tenant_rls("doc_price_list", global_read=True)


def downgrade() -> None:
    op.disable_tenant_rls("doc_price_list")
    op.disable_tenant_rls("doc_invoice")
    op.drop_table("doc_price_list")
    op.drop_table("doc_invoice")
