"""Ordinary PostgreSQL roles for the row-level security tests: made, granted, dropped.

An ordinary role (no SUPERUSER, no BYPASSRLS, owning nothing) is the one row-level security
binds; the test database's own user is a superuser.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import quoted_name

__all__ = ["create_role", "drop_role", "quote"]


def quote(engine: Engine, name: str) -> str:
    """``name`` quoted as an identifier, always."""
    return engine.dialect.identifier_preparer.quote(quoted_name(name, quote=True))


def create_role(owner: Engine, schema: str, role: str, attributes: str = "") -> None:
    """As ``owner``: a login ``role`` with DML on ``schema``'s tables, present and future."""
    r, s = quote(owner, role), quote(owner, schema)
    with owner.begin() as conn:
        conn.execute(text(f"CREATE ROLE {r} LOGIN {attributes}"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA {s} TO {r}"))
        conn.execute(
            text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}")
        )
        conn.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {r}"))
        conn.execute(
            text(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} "
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}"
            )
        )
        conn.execute(
            text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE ON SEQUENCES TO {r}")
        )


def drop_role(owner: Engine, role: str) -> None:
    """As ``owner``: end ``role``'s connections, take back what it owns, drop it."""
    r = quote(owner, role)
    with owner.begin() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :role"),
            {"role": role},
        )
        conn.execute(text(f"REASSIGN OWNED BY {r} TO CURRENT_USER"))
        conn.execute(text(f"DROP OWNED BY {r}"))
        conn.execute(text(f"DROP ROLE {r}"))
