"""``EXAMPLE_RLS=1``: the example app on PostgreSQL with row-level security under the ORM wall.

Row-level security only binds a role that is neither a superuser, nor ``BYPASSRLS``, nor the
tables' owner, so the app runs on two engines:

- the owner's (``DATABASE_URL``): creates and seeds the tables, applies the kit's policies,
  creates the application role, and serves the admin-bypass switch (``/admin/projects``);
- the application role's: an ordinary ``LOGIN`` role with ``SELECT, INSERT, UPDATE, DELETE`` on
  the app's tables and nothing more (no ``TRUNCATE``, owns nothing). Every request runs on it,
  and the kit refuses to start if it could bypass the policies.

Every worker of a deployment prepares the role at its start (``uvicorn --workers 4 --factory
example_app:create_app``), so the preparation is idempotent, runs one worker at a time under
an advisory lock, and sets the one password of the deployment
(:attr:`~example_app.settings.Settings.role_password`): a worker never locks the others'
connections out. The password itself never reaches the server, a log or an error message: the
role gets its SCRAM-SHA-256 verifier. The owner must be able to create roles (a superuser in
development).
"""

from __future__ import annotations

import psycopg
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from fastapi_tenancy.isolation import stored_schema
from fastapi_tenancy.postgres import apply_rls
from fastapi_tenancy.postgres.citus import citus_installed

from .models import metadata

__all__ = [
    "DEFAULT_APP_ROLE",
    "RoleSetupError",
    "owner_bypasses_rls",
    "password_verifier",
    "prepare_rls",
]

DEFAULT_APP_ROLE = "example_app_rls"
"""The role every request of ``EXAMPLE_RLS=1`` runs as."""


class RoleSetupError(RuntimeError):
    """Creating or altering the application role failed.

    The message carries the server's reason and its SQLSTATE, never the statement: that names
    the role's password verifier, and SQLAlchemy's own errors print their statement.
    """


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


def password_verifier(conn: Connection, role: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL keeps for ``role``'s ``password``, made by libpq
    (``PQencryptPasswordConn``) on the client.

    ``ALTER ROLE ... PASSWORD`` takes it in place of the password, so the password is in no
    statement, no server log and no ``pg_stat_activity``.
    """
    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError("EXAMPLE_RLS=1 prepares its role through psycopg 3 (postgresql+psycopg)")
    verifier = driver.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    return verifier.decode()


def prepare_rls(owner: Engine, *, password: str, role: str = DEFAULT_APP_ROLE) -> URL:
    """As the owner: apply the policies, create or update ``role``, grant it the app's tables.

    Idempotent, and one caller at a time per database (a transaction advisory lock), so every
    worker can run it at its start. ``password`` is the deployment's one password for ``role``
    (:attr:`~example_app.settings.Settings.role_password`). Answers the URL the application
    connects with: the owner's URL with ``role`` and ``password`` in place of the owner's
    credentials. Raises :class:`RoleSetupError` if the role cannot be created or altered.

        app_engine = make_engine(prepare_rls(owner, password=settings.role_password))
    """
    if owner.dialect.name != "postgresql":
        raise ValueError("EXAMPLE_RLS=1 needs PostgreSQL (DATABASE_URL=postgresql://...)")
    preparer = owner.dialect.identifier_preparer
    grantee = preparer.quote(role)
    with owner.begin() as conn:
        # Workers start together: without the lock two CREATE ROLE at once fail one of them,
        # and two ALTER ROLE at once fail with "tuple concurrently updated".
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"example_app.prepare_rls:{role}"},
        )
        citus = citus_installed(conn)
        if citus:  # Citus refuses DDL on one table after a parallel one on another, in one
            conn.exec_driver_sql("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
        # The role first: Citus refuses to create or alter a role after an operation on a
        # distributed table in the same transaction (apply_rls is one).
        _create_or_alter_role(conn, role, password_verifier(conn, role, password))
        if citus:  # the tenant's SET LOCAL reaches the workers only with this
            conn.exec_driver_sql(f"ALTER ROLE {grantee} SET citus.propagate_set_commands = 'local'")
        apply_rls(conn, metadata)
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        conn.execute(text(f"GRANT USAGE ON SCHEMA {preparer.quote(schema)} TO {grantee}"))
        for table in metadata.sorted_tables:
            # Tenant data is declared in the placeholder schema: here, in the shared tables.
            name = preparer.quote(table.name)
            if stored_schema(table.schema) is not None:
                name = preparer.format_table(table)
            conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {name} TO {grantee}"))
            for column in table.primary_key.columns:
                sequence = conn.execute(
                    text("SELECT pg_get_serial_sequence(:table, :column)"),
                    {"table": name, "column": column.name},
                ).scalar_one()
                if sequence is not None:  # already quoted by the server
                    conn.execute(text(f"GRANT USAGE ON SEQUENCE {sequence} TO {grantee}"))
    return owner.url.set(username=role, password=password)


def _create_or_alter_role(conn: Connection, role: str, verifier: str) -> None:
    reason: str | None = None
    try:
        exists = conn.execute(
            text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :role"), {"role": role}
        ).first()
        # format() quotes the role and the verifier on the server: no value is spliced here.
        statement = conn.execute(
            text(
                "SELECT format('%s ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE "
                "NOCREATEDB PASSWORD %L', CAST(:verb AS text), CAST(:role AS text), "
                "CAST(:verifier AS text))"
            ),
            {"verb": "ALTER" if exists else "CREATE", "role": role, "verifier": verifier},
        ).scalar_one()
        conn.exec_driver_sql(statement)
    except DBAPIError as error:
        # Only the server's reason leaves: str(error) would carry the statement.
        diag = getattr(error.orig, "diag", None)
        primary = getattr(diag, "message_primary", None) or type(error.orig).__name__
        reason = f"{primary} (SQLSTATE {getattr(error.orig, 'sqlstate', None) or 'unknown'})"
    if reason is not None:  # raised outside the handler, so no traceback chains the statement
        raise RoleSetupError(f"could not create or alter the role {role!r}: {reason}")
