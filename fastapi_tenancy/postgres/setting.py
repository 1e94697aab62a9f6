"""The tenant named to PostgreSQL per transaction, never per connection.

A session made by a :class:`~fastapi_tenancy.Tenancy` with ``rls=True`` is an
:class:`RLSSession`: every transaction it begins (the first, and each one after a ``commit()``)
runs ``SELECT set_config('fastapi_tenancy.tenant_id', :tenant, true)`` first. The ``true``
makes the setting transaction-local: it ends with the COMMIT or ROLLBACK, so nothing survives
into the next use of a pooled connection, a transaction that raised leaves nothing behind, and a
pooler in transaction mode sees one self-contained transaction.

The setting costs no round trip of its own on psycopg 3 (sync): psycopg opens each transaction
with a ``BEGIN`` of its own round trip, and the kit sends that ``BEGIN`` itself, with the
``set_config`` in the same message (``BEGIN; SELECT set_config(...)``, the tenant quoted by
libpq). Other drivers (asyncpg, psycopg's async connection) run ``set_config`` as a statement of
its own, which costs one round trip per transaction; see ``docs/postgres-rls.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, SessionTransaction

from ..exceptions import TenancyMisuse
from ..scope import Access
from ..session import TenantScopedSession, scope_of
from ..wall import internal_options
from .policies import GLOBAL_READ_SETTING, TENANT_SETTING

__all__ = [
    "SETTING_KEY",
    "RLSSession",
    "RowLevelSecurity",
    "TenantSetting",
    "enable_tenant_setting",
    "read_tenant_setting",
    "set_tenant",
    "tenant_savepoint",
]

SETTING_KEY = "fastapi_tenancy.rls"
"""Key in ``session.info`` under which an :class:`RLSSession` finds its :class:`TenantSetting`."""

_SET_TENANT = text(f"SELECT set_config('{TENANT_SETTING}', :tenant, true)")
_SET_GLOBAL_READ = text(f"SELECT set_config('{GLOBAL_READ_SETTING}', 'on', true)")
_READ_TENANT = text(f"SELECT NULLIF(current_setting('{TENANT_SETTING}', true), '')")


@dataclass(frozen=True)
class RowLevelSecurity:
    """Options of the PostgreSQL wall, for ``Tenancy(engine, ..., rls=RowLevelSecurity(...))``.

    ``rls=True`` means the defaults. ``with_begin`` sends the tenant in the same message as the
    transaction's ``BEGIN`` where the driver allows it (psycopg 3, sync): no round trip of its
    own; off, or on other drivers, ``set_config`` is a statement of its own. ``check_role``
    refuses connections whose role would bypass row-level security without a word (see
    :mod:`fastapi_tenancy.postgres.guard`).
    """

    with_begin: bool = True
    check_role: bool = True


class TenantSetting:
    """How one engine's sessions name their tenant; made by :func:`enable_tenant_setting`.

    With ``with_begin`` (psycopg 3, sync) the tenant opens the transaction together with its
    ``BEGIN``. Otherwise ``set_config`` runs at once on the driver's cursor, compiled once for
    the engine's dialect: a round trip, but little Python.
    """

    def __init__(self, dialect: Dialect | None = None, *, with_begin: bool = False) -> None:
        self.with_begin = with_begin
        self._begin_with_setting: Callable[[Any, str | None], bool] | None = None
        if with_begin:  # psycopg is importable: the engine's dialect uses it
            from .begin import begin_with_setting

            self._begin_with_setting = begin_with_setting
        self._raw: dict[bool, tuple[str, bool]] = {}
        if dialect is not None:
            for global_read, clause in ((False, _SET_TENANT), (True, _SET_GLOBAL_READ)):
                compiled = clause.compile(dialect=dialect)
                self._raw[global_read] = (compiled.string, bool(compiled.positional))

    def begin(self, connection: Connection, tenant_id: str | None, *, global_read: bool) -> None:
        """Name the tenant (or the global read) for the transaction ``connection`` just began."""
        if tenant_id is None and not global_read:
            return  # no tenant: the policies admit no row
        begin = self._begin_with_setting
        if begin is not None and begin(connection.connection.driver_connection, tenant_id):
            return
        raw = self._raw.get(tenant_id is None)
        if raw is None:
            _send(connection, tenant_id, global_read=global_read)
            return
        sql, positional = raw
        cursor = connection.connection.cursor()
        try:
            if tenant_id is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, (tenant_id,) if positional else {"tenant": tenant_id})
        finally:
            cursor.close()


def _send(connection: Connection, tenant_id: str | None, *, global_read: bool) -> None:
    options = internal_options()  # the kit's own setting: past the wall's gate
    if tenant_id is not None:
        connection.execute(_SET_TENANT, {"tenant": tenant_id}, execution_options=options)
    elif global_read:
        connection.execute(_SET_GLOBAL_READ, execution_options=options)


def enable_tenant_setting(
    engine: Engine | AsyncEngine, options: RowLevelSecurity | None = None
) -> TenantSetting:
    """Prepare ``engine`` for per-transaction tenants; called by ``Tenancy(..., rls=...)``.

    Unless ``options.check_role`` is off, installs the check that refuses a role that would
    bypass the wall.
    """
    options = options or RowLevelSecurity()
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if sync_engine.dialect.name != "postgresql":
        raise TenancyMisuse(
            f"row-level security needs PostgreSQL; this engine is {sync_engine.dialect.name}"
        )
    with_begin = (
        options.with_begin
        and sync_engine.dialect.driver == "psycopg"
        and not sync_engine.dialect.is_async
    )
    if options.check_role:
        from .guard import install_role_guard

        install_role_guard(sync_engine)
    return TenantSetting(sync_engine.dialect, with_begin=with_begin)


class RLSSession(TenantScopedSession):
    """A :class:`~fastapi_tenancy.session.TenantScopedSession` that names its tenant to
    PostgreSQL at the start of every transaction it begins.

    With a tenant, ``fastapi_tenancy.tenant_id`` is set; in the global-access switch with no
    tenant, ``fastapi_tenancy.global_read`` is; otherwise nothing is, and the policies admit
    no row. A session made by hand (without a :class:`TenantSetting` in its ``info``) sends the
    setting as a statement of its own.
    """


_SEPARATE = TenantSetting()


@event.listens_for(RLSSession, "after_begin")
def _name_tenant(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    if transaction.nested:
        return  # a savepoint inherits the transaction's setting
    setting = session.info.get(SETTING_KEY)
    if not isinstance(setting, TenantSetting):
        setting = _SEPARATE
    scope = scope_of(session)
    global_read = scope.access is Access.GLOBAL and scope.tenant_id is None
    setting.begin(connection, scope.tenant_id, global_read=global_read)


def set_tenant(connection: Connection, tenant_id: str | None) -> None:
    """Name ``tenant_id`` for the rest of ``connection``'s current transaction.

    For trusted code on a raw connection (scripts, jobs): the setting is transaction-local, so
    run it inside the transaction it is for. ``None`` clears it. Async:
    ``await conn.run_sync(set_tenant, "acme")``.
    """
    connection.execute(_SET_TENANT, {"tenant": tenant_id or ""})


def read_tenant_setting(connection: Connection) -> str | None:
    """The tenant the current transaction names to the policies, or ``None``."""
    value = connection.execute(_READ_TENANT).scalar()
    return None if value is None else str(value)


@contextmanager
def tenant_savepoint(connection: Connection, tenant_id: str | None) -> Iterator[Connection]:
    """A SAVEPOINT during which the transaction names another tenant; the outer one is back after.

    PostgreSQL undoes a setting made inside a savepoint only when the savepoint rolls back; a
    released savepoint would keep it for the rest of the transaction. This block restores the
    outer tenant on both paths.
    """
    outer = read_tenant_setting(connection)
    with connection.begin_nested():
        set_tenant(connection, tenant_id)
        yield connection
        set_tenant(connection, outer)
