"""Tenant changes over PostgreSQL ``LISTEN``/``NOTIFY``: no other service needed.

A ``NOTIFY`` sent inside a transaction is delivered when that transaction commits, and not at
all if it rolls back: :func:`notify_tenant_changed` in the transaction that suspends a tenant
tells the workers exactly when the change is visible. :func:`tenant_change_trigger` sends it
from the database itself, for changes made outside the app (a console, another service).
The listener holds one connection per worker, outside the app's pool (psycopg 3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import Engine, Table, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ..changes import EVERY_TENANT, OnChange
from ..isolation.placement import stored_schema
from .policies import _QUOTE

__all__ = ["PostgresChanges", "notify_tenant_changed", "tenant_change_trigger"]

DEFAULT_CHANNEL = "fastapi_tenancy_tenants"

_NOTIFY = text("SELECT pg_notify(:channel, :key)")


class PostgresChanges:
    """``Tenancy(..., tenant_changes=PostgresChanges(engine))``: the workers listen on
    ``channel`` with a connection of their own to the engine's database."""

    def __init__(self, engine: Engine | AsyncEngine | URL | str, *, channel: str = DEFAULT_CHANNEL):
        url = engine.url if isinstance(engine, (Engine, AsyncEngine)) else make_url(engine)
        if url.get_backend_name() != "postgresql":
            raise ValueError(f"PostgresChanges needs a PostgreSQL database, not {url.drivername}")
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.channel = channel

    async def publish(self, key: str) -> None:
        """Tell every listening worker that tenant ``key`` changed (in a transaction of its
        own: use :func:`notify_tenant_changed` to send it with the change itself)."""
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
            await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, key))

    def publish_sync(self, key: str) -> None:
        """:meth:`publish` for sync code."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (self.channel, key))

    async def listen(self, on_change: OnChange, on_subscribed: Callable[[], None]) -> None:
        """``LISTEN`` and hand every notification to ``on_change``; raises when the connection
        is lost."""
        async with await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, application_name=f"fastapi_tenancy {self.channel}"[:63]
        ) as conn:
            await conn.execute(
                psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self.channel))
            )
            on_subscribed()
            async for notification in conn.notifies():
                on_change(notification.payload)

    def __repr__(self) -> str:
        return f"PostgresChanges(channel={self.channel!r})"


def notify_tenant_changed(
    connection: Any, key: str = EVERY_TENANT, *, channel: str = DEFAULT_CHANNEL
) -> Any:
    """Send the change of ``key`` in ``connection``'s transaction (a SQLAlchemy ``Connection``,
    ``Session``, or their async twins: await the result), delivered at its commit."""
    return connection.execute(_NOTIFY, {"channel": channel, "key": key})


def tenant_change_trigger(table: Table, key: str, *, channel: str = DEFAULT_CHANNEL) -> list[str]:
    """The DDL of a trigger that notifies ``channel`` of every inserted, updated or deleted row
    of ``table`` (by its ``key`` column), and of every tenant on ``TRUNCATE``: run it in a
    migration. Idempotent (``CREATE OR REPLACE``)."""
    preparer = _QUOTE
    name = f"fastapi_tenancy_notify_{table.name}"
    function = preparer.quote(name)
    schema = stored_schema(table.schema)
    if schema:
        function = f"{preparer.quote_schema(schema)}.{function}"
    qualified = preparer.format_table(table)
    column = preparer.quote(key)
    literal = "'" + channel.replace("'", "''") + "'"
    every = "'" + EVERY_TENANT + "'"
    return [
        f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify({literal}, {every});
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify({literal}, OLD.{column}::text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify({literal}, NEW.{column}::text);
    END IF;
    RETURN NULL;
END
$$""",
        f"DROP TRIGGER IF EXISTS {preparer.quote(name)} ON {qualified}",
        f"CREATE TRIGGER {preparer.quote(name)} AFTER INSERT OR UPDATE OR DELETE ON {qualified} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
        f"DROP TRIGGER IF EXISTS {preparer.quote(name + '_truncate')} ON {qualified}",
        f"CREATE TRIGGER {preparer.quote(name + '_truncate')} AFTER TRUNCATE ON {qualified} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ]
