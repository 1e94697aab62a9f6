"""docs/resolvers.md: every worker forgets a changed tenant at once.

The tenants table of ``resolvers_lookup``; the channel is Redis pub/sub or PostgreSQL
LISTEN/NOTIFY. The change is committed first, then every worker is told.
"""

from fastapi import FastAPI
from sqlalchemy import Engine, update
from sqlmodel import col

from docs.examples.resolvers_lookup import Tenant
from fastapi_tenancy import CurrentTenant, HeaderResolver, Tenancy, TenantTableLookup
from fastapi_tenancy.postgres.notify import PostgresChanges, notify_tenant_changed
from fastapi_tenancy.redis_changes import RedisChanges


def create_app(engine: Engine, redis_url: str) -> FastAPI:
    # --8<-- [start:redis]
    tenancy = Tenancy(
        engine,
        resolvers=[HeaderResolver("X-Tenant-ID")],
        lookup=TenantTableLookup(Tenant, key="slug", active="active"),
        tenant_changes=RedisChanges(redis_url),
    )
    # --8<-- [end:redis]
    return _app(tenancy)


# --8<-- [start:suspend-redis]
def suspend_tenant(engine: Engine, changes: RedisChanges, slug: str) -> None:
    """From a script, a CLI or a task: commit the change, then tell every worker."""
    with engine.begin() as conn:
        conn.execute(update(Tenant).where(col(Tenant.slug) == slug).values(active=False))
    changes.publish_sync(slug)


# --8<-- [end:suspend-redis]


def create_postgres_app(engine: Engine) -> FastAPI:
    # --8<-- [start:postgres]
    tenancy = Tenancy(
        engine,
        resolvers=[HeaderResolver("X-Tenant-ID")],
        lookup=TenantTableLookup(Tenant, key="slug", active="active"),
        tenant_changes=PostgresChanges(engine),
    )
    # --8<-- [end:postgres]
    return _app(tenancy)


# --8<-- [start:suspend-postgres]
def suspend_tenant_in_postgres(engine: Engine, slug: str) -> None:
    """The message rides in the transaction: delivered at its commit, dropped by a rollback."""
    with engine.begin() as conn:
        conn.execute(update(Tenant).where(col(Tenant.slug) == slug).values(active=False))
        notify_tenant_changed(conn, slug)


# --8<-- [end:suspend-postgres]


def _app(tenancy: Tenancy) -> FastAPI:
    app = FastAPI()
    tenancy.install(app)
    app.state.tenancy = tenancy

    @app.get("/tenant")
    def tenant(context: CurrentTenant) -> dict[str, str]:
        record: Tenant = context.record
        return {"slug": record.slug, "name": record.name}

    return app
