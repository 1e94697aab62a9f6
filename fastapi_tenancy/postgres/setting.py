"""The tenant named to PostgreSQL per transaction, never per connection.

A session made by a :class:`~fastapi_tenancy.Tenancy` with ``rls=True`` is an
:class:`RLSSession`: every transaction it begins (the first, and each one after a ``commit()``)
first names both settings the policies read, in one message::

    SET LOCAL fastapi_tenancy.tenant_id = 'acme'; SET LOCAL fastapi_tenancy.global_read = ''

``tenant_id`` is the session's tenant, or ``''`` when it has none; ``global_read`` is ``on`` in
the global-access switch with no tenant, ``''`` otherwise. When models declare row scopes, the
same message also names, for every row scope declared in the process,
``fastapi_tenancy.scope.<name>`` (the session's value as text, ``''`` when it has none or lifts
the scope) and ``fastapi_tenancy.lift.<name>`` (``on`` when it lifts it), which the restrictive
row-scope policies read; a named row policy (``__row_policies__``) is named the same way, its
value always ``''``, its lift read by its restrictive policy. An app without row scopes or
row policies sends the two settings alone. When models
read their tenant's family (``__tenant_reads__``), it names ``fastapi_tenancy.ancestors`` and
``fastapi_tenancy.descendants`` too: the session's family of each direction, as a PostgreSQL
array literal (``{"initech","umbrella"}``, ``''`` when none), which the SELECT policies of those
models read. The policies read the tenant and global read through ``NULLIF(..., '')``, so
``''`` means no tenant and no global read (see :mod:`~fastapi_tenancy.postgres.policies`).
``LOCAL`` makes them transaction-local: they end with the COMMIT or ROLLBACK, so nothing the kit
sets survives into the next use of a pooled connection, a transaction that raised leaves
nothing behind, and a pooler in transaction mode sees one self-contained transaction.

``SET LOCAL`` takes no bound parameters, so each value is written as a string constant, quoted
by :func:`quote_setting`. We chose it over ``SELECT set_config(..., :value, true)``, which
binds its values, for Citus: with ``citus.propagate_set_commands = local`` it passes a
transaction's ``SET LOCAL`` on to the workers that run its statements, and a ``set_config()``
never.

Both are named in every transaction, a tenant's, the global switch's and one with no tenant
alike, because a transaction-local value hides whatever the connection holds at session level.
Trusted code on the application's role (a raw connection, a ``without_tenant()`` session with no
admin engine) may run ``set_config(..., false)`` or ``SET``; PostgreSQL keeps that value for the
connection's life, and the pool hands the connection on. Were the kit to name only what it
needs, a leftover ``tenant_id`` would admit a tenant's rows to a session with none, and a
leftover ``global_read = on`` every tenant's rows of global-access models to a tenant session.

We chose this over clearing such values when the connection goes back to the pool (a
``checkin`` or ``reset`` hook running ``RESET``): that costs a round trip at every checkin, the
normal path included, while the names above travel in a message that is sent anyway; and it
would not reach a value set and then used within one checkout (a session bound to a connection
its caller holds), nor one that another client of a pooler in transaction mode left on the
server's connection. Naming both per transaction covers all of these.

The settings cost no round trip of their own on psycopg 3: psycopg opens each transaction with a
``BEGIN`` of its own round trip, and the kit sends that ``BEGIN`` itself, with the ``SET LOCAL``
commands in the same message (see :mod:`~fastapi_tenancy.postgres.begin`). On other drivers
(asyncpg) the commands are a message of their own: one round trip per transaction, the
fail-closed transaction of a session with no tenant included; see ``docs/postgres-rls.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.util import await_only

from ..exceptions import TenancyMisuse
from ..hierarchy import NO_FAMILY, TenantFamily, TenantReads, family_setting_value
from ..keys import tenant_key_of
from ..models import family_reads
from ..row_policies import declared_row_policies
from ..row_scopes import declared_row_scopes, is_row_scope_name
from ..scope import Access, SessionScope
from ..session import TenantScopedSession, scope_of
from .policies import (
    _QUOTE,
    FAMILY_SETTINGS,
    GLOBAL_READ_SETTING,
    TENANT_SETTING,
    lift_setting,
    scope_setting,
)

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


Scopes = tuple[tuple[str, str, bool], ...]
"""Each row scope named: its name, its value as text (``''``: none) and whether it is lifted."""

Family = tuple[str, str] | None
"""The family settings' values, ancestors then descendants (``''``: none); ``None``: not named."""


@functools.lru_cache(maxsize=4096)
def setting_commands(
    tenant_id: str | None, *, global_read: bool, scopes: Scopes = (), family: Family = None
) -> str:
    """The ``SET LOCAL`` commands naming, for the current transaction, the tenant (``None``:
    ``''``, none), the global read, each row scope of ``scopes`` (its value and its lift) and
    the ``family`` (ancestors, descendants; ``None``: not named), joined by ``;``.

    Values are written as string constants (:func:`quote_setting`): ``SET`` takes no bound
    parameters. ``SET LOCAL``, not ``set_config()``, because Citus passes it on to the workers
    that run the transaction's statements (with ``citus.propagate_set_commands = local``).
    Kept for the last 4,096 combinations: a transaction of a recent tenant pays a look-up.
    """
    pairs = [
        (TENANT_SETTING, tenant_id or ""),
        (GLOBAL_READ_SETTING, "on" if global_read else ""),
    ]
    for name, value, lifted in scopes:
        pairs += [(scope_setting(name), value), (lift_setting(name), "on" if lifted else "")]
    if family is not None:  # ancestors, then descendants, as FAMILY_SETTINGS lists them
        pairs += zip(FAMILY_SETTINGS.values(), family, strict=True)
    return "; ".join(f"SET LOCAL {_setting_name(n)} = {quote_setting(v)}" for n, v in pairs)


def quote_setting(value: str) -> str:
    """``value`` as a PostgreSQL string constant, whatever ``standard_conforming_strings``
    says: quotes doubled, and in an ``E''`` constant backslashes doubled; a NUL is refused
    (no constant can hold one)."""
    if "\x00" in value:
        raise ValueError("a setting cannot hold a NUL character")
    quoted = value.replace("'", "''")
    if "\\" in value:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return f"'{quoted}'"


def _setting_name(name: str) -> str:
    """A dotted setting name for ``SET``, each part quoted when it must be (a row scope named
    like a reserved word, ``user``)."""
    return ".".join(_QUOTE.quote(part) for part in name.split("."))


_DIRECTIONS: tuple[TenantReads, ...] = ("ancestors", "descendants")


def send_setting_commands(dbapi_connection: Any, commands: str) -> None:
    """Run ``commands`` (no parameters) on a raw driver connection, in the transaction its
    SQLAlchemy connection has begun: several commands in one message, on every driver.

    psycopg runs a statement without parameters with the simple query protocol, which takes
    several commands. asyncpg prepares every statement its SQLAlchemy adapter sends, and a
    prepared statement holds one command, so there the adapter's transaction is opened first
    and the commands go on asyncpg's own simple query (SQLAlchemy's adapter internals, pinned
    by the asyncpg tests of ``tests/postgres``).
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    if type(driver).__module__.startswith("asyncpg"):
        await_only(_send_asyncpg(dbapi_connection, commands))
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(commands)
    finally:
        cursor.close()


async def _send_asyncpg(adapter: Any, commands: str) -> None:
    async with adapter._execute_mutex:
        if adapter._transaction is None:
            await adapter._start_transaction()
        try:
            await adapter.driver_connection.execute(commands)
        except Exception as error:
            adapter._handle_exception(error)


def _family_values(tenant_id: Any, family: TenantFamily | None) -> tuple[str, str]:
    """The family settings' values: ``family``'s ancestors and descendants, none without a
    tenant."""
    if tenant_id is None or family is None:
        return ("", "")
    return (family_setting_value(family.ancestors), family_setting_value(family.descendants))


def _scopes_of(scope: SessionScope) -> Scopes:
    """Every declared row scope, with this session's value (``''`` when none or lifted), and
    every declared row policy (no value: only whether the session lifts it)."""
    found = []
    for name in sorted(declared_row_scopes() | declared_row_policies()):
        lifted = name in scope.lifted
        value = None if lifted else scope.row_value(name)
        found.append((name, "" if value is None else str(value), lifted))
    return tuple(found)


def _family_of(scope: SessionScope) -> Family:
    """The session's family settings, or ``None`` when no model of the process reads one."""
    if not family_reads():
        return None
    return _family_values(scope.tenant_id, scope.family)


_READ_TENANT = text(f"SELECT NULLIF(current_setting('{TENANT_SETTING}', true), '')")


@dataclass(frozen=True)
class RowLevelSecurity:
    """Options of the PostgreSQL wall, for ``Tenancy(engine, ..., rls=RowLevelSecurity(...))``.

    ``rls=True`` means the defaults. ``with_begin`` sends the settings in the same message as
    the transaction's ``BEGIN`` where the driver allows it (psycopg 3, sync and async): no
    round trip of their own; off, or on other drivers (asyncpg), they are a statement of their
    own. ``check_role`` refuses connections whose role would bypass row-level security without
    a word (see :mod:`fastapi_tenancy.postgres.guard`).
    """

    with_begin: bool = True
    check_role: bool = True


class TenantSetting:
    """How one engine's sessions name their settings; made by :func:`enable_tenant_setting`.

    With ``with_begin`` (psycopg 3) the ``SET LOCAL`` commands open the transaction together
    with its ``BEGIN``. Otherwise they run at once on the driver's connection, in one message.
    """

    def __init__(self, *, with_begin: bool = False) -> None:
        self.with_begin = with_begin
        self._begin_with_setting: Callable[[Any, str], bool] | None = None
        if with_begin:  # psycopg is importable: the engine's dialect uses it
            from .begin import begin_with_setting

            self._begin_with_setting = begin_with_setting

    def begin(
        self,
        connection: Connection,
        tenant_id: str | None,
        *,
        global_read: bool,
        scopes: Scopes = (),
        family: Family = None,
    ) -> None:
        """Name the tenant (``None``: none), the global read, each row scope of ``scopes`` and
        the ``family`` (ancestors, descendants; ``None``: not named) for the transaction
        ``connection`` just began: all, always, so no session-level value shows through."""
        commands = setting_commands(
            tenant_id, global_read=global_read, scopes=scopes, family=family
        )
        dbapi_connection = connection.connection.dbapi_connection
        begin = self._begin_with_setting
        if begin is not None and begin(connection.connection.driver_connection, commands):
            return
        send_setting_commands(dbapi_connection, commands)


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
    with_begin = options.with_begin and sync_engine.dialect.driver == "psycopg"
    if options.check_role:
        from .guard import install_role_guard

        install_role_guard(sync_engine)
    return TenantSetting(with_begin=with_begin)


class RLSSession(TenantScopedSession):
    """A :class:`~fastapi_tenancy.session.TenantScopedSession` that names its tenant to
    PostgreSQL at the start of every transaction it begins.

    ``fastapi_tenancy.tenant_id`` names the session's tenant, or ``''`` (none: the policies
    admit no row); ``fastapi_tenancy.global_read`` is ``on`` in the global-access switch with no
    tenant, ``''`` otherwise; each declared row scope's value and lift are named beside them,
    and the tenant's family when some model reads it. All are named in every transaction, so a
    value some earlier user of the connection left at session level never counts. A session
    made by hand (without a :class:`TenantSetting` in its ``info``) sends them as a statement of
    its own.
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
    tenant = scope.tenant_id
    global_read = scope.access is Access.GLOBAL and tenant is None
    # the setting carries the key's spelling; the policies cast it to the column's type
    setting.begin(
        connection,
        None if tenant is None else str(tenant),
        global_read=global_read,
        scopes=_scopes_of(scope),
        family=_family_of(scope),
    )


def set_tenant(
    connection: Connection,
    tenant_id: Any,
    *,
    row_values: Mapping[str, Any] | None = None,
    lift: Iterable[str] = (),
    family: TenantFamily | None = None,
) -> None:
    """Name ``tenant_id`` (a key of any type, a tenant record, or ``None``) for the rest of
    ``connection``'s current transaction, global read off, with the row scopes' values
    ``row_values`` (``{"owner": "alice"}``), the row scopes ``lift`` lifted, and the tenant's
    ``family`` (a :class:`~fastapi_tenancy.TenantFamily`), whose rows the models reading their
    family admit too.

    For trusted code on a raw connection (scripts, jobs): the settings are transaction-local, so
    run it inside the transaction it is for; all are named (every row scope declared in this
    process, and the family when a model of it reads one), so a value left at session level on
    the connection does not count. ``None`` names no tenant; a row scope with no value and not
    lifted admits no row of its tables; no ``family`` reads the tenant's own rows only.
    Async: ``await conn.run_sync(set_tenant, "acme")``.
    """
    values = dict(row_values or {})
    lifted = frozenset(lift)
    names = declared_row_scopes() | declared_row_policies() | values.keys() | lifted
    for name in names:
        if not is_row_scope_name(name):
            raise ValueError(f"not a row scope name: {name!r}")
    scopes = tuple(
        (
            name,
            "" if name in lifted or values.get(name) is None else str(values[name]),
            name in lifted,
        )
        for name in sorted(names)
    )
    named: Family = None
    if family is not None or family_reads():
        if tenant_id is None and family not in (None, NO_FAMILY):
            raise ValueError("a family is named with its tenant; this names no tenant")
        named = _family_values(tenant_id, family or NO_FAMILY)
    _name(connection, tenant_id, global_read=False, scopes=scopes, family=named)


def _name(
    connection: Connection,
    tenant_id: Any,
    *,
    global_read: bool,
    scopes: Scopes,
    family: Family = None,
) -> None:
    key = tenant_key_of(tenant_id)
    tenant = None if key is None else str(key)
    commands = setting_commands(tenant, global_read=global_read, scopes=scopes, family=family)
    if connection.dialect.driver == "asyncpg":
        send_setting_commands(connection.connection.dbapi_connection, commands)
    else:  # through the connection, so its events (echo, logging) see the commands
        connection.exec_driver_sql(commands)


def read_tenant_setting(connection: Connection) -> str | None:
    """The tenant the current transaction names to the policies, or ``None``."""
    value = connection.execute(_READ_TENANT).scalar()
    return None if value is None else str(value)


@contextmanager
def tenant_savepoint(
    connection: Connection,
    tenant_id: Any,
    *,
    row_values: Mapping[str, Any] | None = None,
    lift: Iterable[str] = (),
    family: TenantFamily | None = None,
) -> Iterator[Connection]:
    """A SAVEPOINT during which the transaction names another tenant (and no global read), with
    ``row_values``, ``lift`` and ``family`` as :func:`set_tenant` takes them (no ``family``: the
    tenant's own rows only); the outer settings, row scopes and family included, are back after.

    PostgreSQL undoes a setting made inside a savepoint only when the savepoint rolls back; a
    released savepoint would keep it for the rest of the transaction. This block restores the
    outer settings on both paths.
    """
    names = sorted(declared_row_scopes())
    read = [
        f"NULLIF(current_setting('{TENANT_SETTING}', true), '')",
        f"current_setting('{GLOBAL_READ_SETTING}', true)",
    ]
    read += [f"current_setting('{FAMILY_SETTINGS[d]}', true)" for d in _DIRECTIONS]
    for name in names:
        read += [
            f"current_setting('{scope_setting(name)}', true)",
            f"current_setting('{lift_setting(name)}', true)",
        ]
    tenant, global_read, ancestors, descendants, *rest = connection.execute(
        text("SELECT " + ", ".join(read))
    ).one()
    scopes = tuple(
        (name, rest[2 * i] or "", rest[2 * i + 1] == "on") for i, name in enumerate(names)
    )
    outer = (ancestors or "", descendants or "")
    with connection.begin_nested():
        set_tenant(
            connection, tenant_id, row_values=row_values, lift=lift, family=family or NO_FAMILY
        )
        yield connection
        _name(connection, tenant, global_read=global_read == "on", scopes=scopes, family=outer)
