"""The startup refusal: no row-level security on a connection that would bypass it silently.

PostgreSQL does not apply row-level security to superusers or to roles with ``BYPASSRLS``, and
a table's owner can switch it off with one ``ALTER TABLE`` (and bypasses it without ``FORCE``).
None of these raises an error: every query simply sees every tenant. So with ``rls`` on, the
first connection the application's engine hands out is checked, and refused with
:class:`UnsafeDatabaseRole` when its role is a superuser, has ``BYPASSRLS``, can become a role
that is or does, owns a tenant table, or when a tenant table it can use has no row-level
security at all.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from ..exceptions import TenancyMisuse
from .policies import TenantTable, tenant_tables

__all__ = ["UnsafeDatabaseRole", "citus_problem", "install_role_guard", "role_problems"]

# One static statement, no parameters, so it runs on any driver's raw connection as it is made.
# Rows: (kind, a, b, visible).
ROLE_FACTS_SQL = """
SELECT 'role', r.rolname::text,
       CASE WHEN r.rolsuper THEN 'superuser' WHEN r.rolbypassrls THEN 'bypassrls' END, true
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
UNION ALL
SELECT 'member', b.rolname::text,
       CASE WHEN b.rolsuper THEN 'superuser' ELSE 'bypassrls' END, true
FROM pg_catalog.pg_roles b
WHERE (b.rolsuper OR b.rolbypassrls) AND b.rolname <> current_user
  AND pg_catalog.pg_has_role(current_user, b.oid, 'MEMBER')
UNION ALL
SELECT 'owns', n.nspname::text, c.relname::text, pg_catalog.pg_table_is_visible(c.oid)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
  AND pg_catalog.pg_has_role(current_user, c.relowner, 'MEMBER')
UNION ALL
SELECT 'unprotected', n.nspname::text, c.relname::text, pg_catalog.pg_table_is_visible(c.oid)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
  AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
  AND pg_catalog.has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')
UNION ALL
SELECT 'citus', COALESCE(pg_catalog.current_setting('citus.propagate_set_commands', true), ''),
       NULL, true
FROM pg_catalog.pg_extension WHERE extname = 'citus'
"""

_ADVICE = (
    "Connect the application as an ordinary role that owns no tenant table and has neither "
    "SUPERUSER nor BYPASSRLS (CREATE ROLE app LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON "
    "the tables TO app), keep the owner for migrations and apply_rls(), and give cross-tenant "
    "work an engine of its own: Tenancy(..., admin_engine=...). See docs/postgres-rls.md."
)


class UnsafeDatabaseRole(TenancyMisuse):
    """Row-level security is on, but the connection's role would bypass it without a word."""

    code = "unsafe_database_role"
    default_detail = "The database role would bypass row-level security."

    def __init__(self, role: str, problems: Sequence[str]) -> None:
        self.role = role
        self.problems = tuple(problems)
        super().__init__(
            f"fastapi_tenancy refuses this connection: row-level security is on, but the "
            f"database role {role!r} would bypass it silently: {'; '.join(problems)}. {_ADVICE}"
        )


def _matches(table: TenantTable, schema: str, name: str, visible: bool) -> bool:
    if table.name != name:
        return False
    return table.schema == schema if table.schema is not None else visible


def role_problems(
    rows: Sequence[Sequence[Any]], tables: Sequence[TenantTable]
) -> tuple[str, list[str]]:
    """The role's name and what would make it bypass the wall, from ``ROLE_FACTS_SQL``'s rows."""
    role = "?"
    problems: list[str] = []
    owned: list[str] = []
    unprotected: list[str] = []
    superuser = any(kind == "role" and b == "superuser" for kind, _, b, _ in rows)
    for kind, a, b, visible in rows:
        if kind == "citus":
            continue  # not the role's doing: see citus_problem()
        if kind == "role":
            role = str(a)
            if b == "superuser":
                problems.append("it is a superuser, and superusers bypass row-level security")
            elif b == "bypassrls":
                problems.append("it has BYPASSRLS")
        elif kind == "member":
            if not superuser:  # a superuser is a member of every role; that says nothing more
                problems.append(f"it can SET ROLE {a}, which is a {b} role")
        elif not (kind == "owns" and superuser):
            found = [t.qualified_name for t in tables if _matches(t, str(a), str(b), bool(visible))]
            (owned if kind == "owns" else unprotected).extend(found)
    if owned:
        problems.append(
            f"it owns tenant table(s) {', '.join(sorted(set(owned)))}, and an owner can turn "
            f"row-level security off with one ALTER TABLE"
        )
    if unprotected:
        problems.append(
            f"tenant table(s) {', '.join(sorted(set(unprotected)))} have no row-level security "
            f"(run fastapi_tenancy.postgres.apply_rls() or the migration as the owner)"
        )
    return role, problems


def citus_problem(rows: Sequence[Sequence[Any]]) -> str | None:
    """What keeps row-level security from working on Citus, from ``ROLE_FACTS_SQL``'s rows:
    the kit names the tenant with ``SET LOCAL``, which reaches the workers only with
    ``citus.propagate_set_commands = local`` (otherwise every tenant sees no row)."""
    for kind, propagation, _, _ in rows:
        if kind == "citus" and propagation != "local":
            return (
                "fastapi_tenancy refuses this connection: Citus is installed and "
                f"citus.propagate_set_commands is {propagation or 'unset'!r}, so the tenant "
                "each transaction names with SET LOCAL would not reach the workers. Connect "
                "with the option -c citus.propagate_set_commands=local (in the URL: "
                "?options=-c%20citus.propagate_set_commands%3Dlocal), or set it for the role: "
                "ALTER ROLE app SET citus.propagate_set_commands = 'local'. See docs/citus.md."
            )
    return None


def check_role_on(dbapi_connection: Any) -> None:
    """Run the role check on a raw driver connection; raise :class:`UnsafeDatabaseRole`, or
    :class:`~fastapi_tenancy.TenancyMisuse` on Citus without the setting propagation the
    tenant needs."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(ROLE_FACTS_SQL)
        rows = cursor.fetchall()
    finally:
        cursor.close()
        dbapi_connection.rollback()
    role, problems = role_problems(rows, tenant_tables())
    if problems:
        raise UnsafeDatabaseRole(role, problems)
    citus = citus_problem(rows)
    if citus is not None:
        raise TenancyMisuse(citus)


class _RoleGuard:
    """Checks checked-out connections until one passes; an engine's URL names one role.

    A checkout listener rather than a connect one, so connections pooled before the wall was
    turned on are checked too.
    """

    def __init__(self) -> None:
        self.passed = False
        self._lock = threading.Lock()

    def __call__(self, dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        if self.passed:
            return
        check_role_on(dbapi_connection)
        with self._lock:
            self.passed = True


def install_role_guard(engine: Engine) -> None:
    """Refuse ``engine``'s connections while their role would bypass row-level security."""
    event.listen(engine, "checkout", _RoleGuard())
