"""Alembic revision of docs/examples/typed_keys.py: the organizations and the tables they own.

docs/models-and-scoping.md includes it; tests/docs/test_typed_keys_docs.py runs it with
``alembic upgrade head`` (this folder as the version location) on SQLite, PostgreSQL and
MariaDB, and serves the app on the schema it makes. On PostgreSQL it turns row-level security
on for the tenant tables, comparing their ``uuid`` tenant column with the tenant the session
names.
"""

import sqlalchemy as sa
from alembic import op

import fastapi_tenancy.postgres.alembic  # noqa: F401  (registers the operations on op)

revision = "tk_0001"
down_revision = None
branch_labels = None
depends_on = None

TENANT_TABLES = ("tk_customer", "tk_invoice")


# --8<-- [start:upgrade]
def upgrade() -> None:
    op.create_table(
        "tk_organization",
        sa.Column("id", sa.Uuid(), primary_key=True),  # uuid on PostgreSQL, CHAR(32) elsewhere
        sa.Column("slug", sa.String(63), nullable=False, unique=True),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "tk_customer",
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tk_organization.id"), nullable=False),
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("email", sa.String(200), nullable=False),
        sa.UniqueConstraint("tenant_id", "email"),
        sa.UniqueConstraint("tenant_id", "id"),
    )
    op.create_index("ix_tk_customer_tenant_id", "tk_customer", ["tenant_id"])
    op.create_table(
        "tk_invoice",
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tk_organization.id"), nullable=False),
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("total_cents", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "customer_id"], ["tk_customer.tenant_id", "tk_customer.id"]
        ),
    )
    op.create_index("ix_tk_invoice_tenant_id", "tk_invoice", ["tenant_id"])
    op.create_index("ix_tk_invoice_customer_id", "tk_invoice", ["customer_id"])
    if op.get_context().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            # the policies cast the session's tenant (a string setting) to the column's uuid
            op.enable_tenant_rls(table, tenant_type=sa.Uuid())  # type: ignore[attr-defined]


# --8<-- [end:upgrade]


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for table in reversed(TENANT_TABLES):
            op.disable_tenant_rls(table)  # type: ignore[attr-defined]
    op.drop_table("tk_invoice")
    op.drop_table("tk_customer")
    op.drop_table("tk_organization")
