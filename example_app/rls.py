"""``EXAMPLE_RLS=1``: the example app on PostgreSQL with row-level security under the ORM wall.

Row-level security only binds a role that is neither a superuser, nor ``BYPASSRLS``, nor the
tables' owner, so the app runs on two engines:

- the owner's (``DATABASE_URL``): creates and seeds the tables, applies the kit's policies,
  creates the application role, and serves the admin-bypass switch (``/admin/projects``);
- the application role's: an ordinary ``LOGIN`` role with ``SELECT, INSERT, UPDATE, DELETE`` on
  the app's tables and nothing more (no ``TRUNCATE``, owns nothing). Every request runs on it,
  and the kit refuses to start if it could bypass the policies.

The application role gets a new random password at every start, so no password is kept
anywhere; the owner must be able to create roles (a superuser in development).
"""

from __future__ import annotations

import secrets

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from fastapi_tenancy.postgres import apply_rls

from .models import metadata

__all__ = ["DEFAULT_APP_ROLE", "owner_bypasses_rls", "prepare_rls"]

DEFAULT_APP_ROLE = "example_app_rls"
"""The role every request of ``EXAMPLE_RLS=1`` runs as."""


def owner_bypasses_rls(owner: Engine) -> bool:
    """Whether the owner's role passes row-level security (superuser or ``BYPASSRLS``).

    It serves the admin switch, which must see every tenant; an owner without either would
    see none, because the policies are forced on the owner too.
    """
    with owner.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles "
                    "WHERE rolname = current_user"
                )
            ).scalar_one()
        )


def prepare_rls(owner: Engine, role: str = DEFAULT_APP_ROLE) -> URL:
    """As the owner: apply the policies, create or refresh ``role``, grant it the app's tables.

    Idempotent, so every start can run it. Answers the URL the application connects with: the
    owner's URL with ``role`` and its new password in place of the owner's credentials.
    """
    if owner.dialect.name != "postgresql":
        raise ValueError("EXAMPLE_RLS=1 needs PostgreSQL (DATABASE_URL=postgresql://...)")
    apply_rls(owner, metadata)
    password = secrets.token_urlsafe(24)
    preparer = owner.dialect.identifier_preparer
    grantee = preparer.quote(role)
    with owner.begin() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :role"), {"role": role}
        ).first()
        # format() quotes the role and the password on the server: no value is spliced here.
        statement = conn.execute(
            text(
                "SELECT format('%s ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE "
                "NOCREATEDB PASSWORD %L', CAST(:verb AS text), CAST(:role AS text), "
                "CAST(:password AS text))"
            ),
            {"verb": "ALTER" if exists else "CREATE", "role": role, "password": password},
        ).scalar_one()
        conn.exec_driver_sql(statement)
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        conn.execute(text(f"GRANT USAGE ON SCHEMA {preparer.quote(schema)} TO {grantee}"))
        for table in metadata.sorted_tables:
            conn.execute(
                text(
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON {preparer.format_table(table)} "
                    f"TO {grantee}"
                )
            )
            for column in table.primary_key.columns:
                sequence = conn.execute(
                    text("SELECT pg_get_serial_sequence(:table, :column)"),
                    {"table": preparer.format_table(table), "column": column.name},
                ).scalar_one()
                if sequence is not None:  # already quoted by the server
                    conn.execute(text(f"GRANT USAGE ON SEQUENCE {sequence} TO {grantee}"))
    return owner.url.set(username=role, password=password)
