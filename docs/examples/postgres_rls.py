"""docs/postgres-rls.md, as code: the migration step and the app with both walls on."""

from collections.abc import Callable

from fastapi import FastAPI
from sqlalchemy import Engine, MetaData, select
from sqlmodel import SQLModel

from fastapi_tenancy import AdminSession, HeaderResolver, Tenancy, TenantContext, TenantSession
from fastapi_tenancy.postgres import apply_rls

ROLES_SQL = """
CREATE ROLE app LOGIN PASSWORD '...';                -- the application: no owner, no bypass
GRANT USAGE ON SCHEMA public TO app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app;
CREATE ROLE app_admin LOGIN BYPASSRLS PASSWORD '...'; -- the admin switch's engine only
GRANT USAGE ON SCHEMA public TO app_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_admin;
"""


# --8<-- [start:migrate]
def migrate(owner_engine: Engine, metadata: MetaData = SQLModel.metadata) -> None:
    """Run as the tables' owner: create the tables, then turn the wall on (idempotent)."""
    metadata.create_all(owner_engine)
    apply_rls(owner_engine, metadata)  # run it again after every migration: it is idempotent


# --8<-- [end:migrate]


def create_app(
    app_engine: Engine,
    admin_engine: Engine,
    model: type[SQLModel],
    is_admin: Callable[[TenantContext], bool],
) -> FastAPI:
    """An app whose tenant sessions are scoped by the ORM and by PostgreSQL."""
    # --8<-- [start:tenancy]
    tenancy = Tenancy(
        app_engine,  # connects as "app"
        resolvers=[HeaderResolver()],
        require_tenant=False,  # /admin/items needs none; tenant routes still do
        rls=True,  # the one step: every transaction names its tenant to the policies
        admin_engine=admin_engine,  # connects as "app_admin"; only the admin switch uses it
        is_admin=is_admin,
    )
    # --8<-- [end:tenancy]
    app = FastAPI()
    tenancy.install(app)

    @app.get("/items")
    def items(session: TenantSession) -> list[str]:
        return list(session.execute(select(model.name)).scalars())  # type: ignore[attr-defined]

    @app.get("/admin/items")
    def all_items(session: AdminSession) -> list[str]:
        return list(session.execute(select(model.name)).scalars())  # type: ignore[attr-defined]

    return app
