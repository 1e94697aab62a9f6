"""Helpers of the isolation tests: engines with one connection, and a tenant migration
environment."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool

from fastapi_tenancy import Tenancy

PlaceTenants = Callable[..., Tenancy]


def single_connection_engine(database: Any) -> Engine:
    """An engine of the test's database whose pool holds exactly one connection."""
    if database.backend == "sqlite":
        return database.create_engine(poolclass=StaticPool)
    return database.create_engine(pool_size=1, max_overflow=0)


FIRST = """
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.create_table(
        "mig_doc",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(50), nullable=False),
        schema="tenant",
    )
    # An ALTER TABLE, which Alembic writes past the schema translation.
    op.add_column("mig_doc", sa.Column("note", sa.String(50)), schema="tenant")
"""

SECOND = """
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.create_index("ix_mig_doc_title", "mig_doc", ["title"], unique=True, schema="tenant")
"""


def write_environment(directory: Path, url: str) -> Path:
    """A tenant migration environment with two revisions; its alembic.ini."""
    scripts = directory / "tenant_migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(
        "from fastapi_tenancy.isolation.migrations import run_tenant_migrations\n\n"
        "run_tenant_migrations()\n"
    )
    (scripts / "script.py.mako").write_text("")
    (scripts / "versions" / "0001_docs.py").write_text(textwrap.dedent(FIRST))
    (scripts / "versions" / "0002_unique.py").write_text(textwrap.dedent(SECOND))
    ini = directory / "alembic.ini"
    ini.write_text(
        f"[alembic]\nscript_location = {scripts}\nsqlalchemy.url = {url.replace('%', '%%')}\n"
    )
    return ini
