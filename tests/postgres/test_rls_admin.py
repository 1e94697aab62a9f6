"""The admin bypass goes through its own role and engine, and nothing else switches the wall off.

The application's role can run any SQL it likes, settings included, so no setting may open the
wall: the only way across tenants is the admin engine, whose role has ``BYPASSRLS``, used by the
admin-bypass switch and ``without_tenant()``. And the kit refuses to start on a role that would
bypass the policies without a word.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from rls_models import ACME, GLOBEX, KEY_TYPE, Project, Task, Template
from rls_support import World, as_owner
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from fastapi_tenancy import (
    Access,
    AdminSession,
    HeaderResolver,
    JWTClaimResolver,
    SessionScope,
    Tenancy,
    TenancyMisuse,
    TenantSession,
    without_tenant,
)
from fastapi_tenancy.postgres import RowLevelSecurity, UnsafeDatabaseRole

pytestmark = pytest.mark.backends("postgres")


SECRET = "rls-admin-test-secret-of-32-bytes!"


def token(**claims) -> dict[str, str]:
    claims["exp"] = int(time.time()) + 60
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


@pytest.fixture
def admin_tenancy(app_role, app_engine) -> Tenancy:
    admin_role = app_role.make_role("BYPASSRLS")
    admin_engine = app_role.engine(admin_role)
    return Tenancy(
        app_engine,
        resolvers=[JWTClaimResolver(claim="tenant", key=SECRET, algorithms=["HS256"])],
        require_tenant=False,
        rls=True,
        admin_engine=admin_engine,
        key_type=KEY_TYPE,
        is_admin=lambda context: context.claims.get("admin") is True,
    )


def project_names(session) -> list[str]:
    return sorted(session.execute(select(Project.name)).scalars())


def test_the_admin_switch_reads_every_tenant_through_the_admin_engine(admin_tenancy, world):
    with admin_tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        assert session.get_bind() is admin_tenancy.admin_engine
        assert project_names(session) == ["apollo", "zeus"]


def test_without_tenant_uses_the_admin_engine(admin_tenancy, world):
    with without_tenant(), admin_tenancy.session() as session:
        assert session.execute(text("SELECT count(*) FROM rls_task")).scalar_one() == 2


def test_tenant_sessions_never_use_the_admin_engine(admin_tenancy, world):
    with admin_tenancy.make_session(SessionScope(ACME)) as session:
        assert session.get_bind() is admin_tenancy.engine
        assert project_names(session) == ["apollo"]


def test_admin_route_crosses_tenants_and_tenant_route_does_not(admin_tenancy, world):
    app = FastAPI()
    admin_tenancy.install(app)

    @app.get("/admin/projects")
    def admin_projects(session: AdminSession) -> list[str]:
        return project_names(session)

    @app.get("/projects")
    def projects(session: TenantSession) -> list[str]:
        return project_names(session)

    with TestClient(app) as client:
        admin = client.get("/admin/projects", headers=token(admin=True))
        refused = client.get("/admin/projects", headers=token(tenant=str(ACME)))
        own = client.get("/projects", headers=token(tenant=str(ACME), admin=True))

    assert admin.json() == ["apollo", "zeus"]
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "admin_required"
    assert own.json() == ["apollo"]  # an admin's tenant route is a tenant route


def test_an_ordinary_session_cannot_switch_row_security_off(wall, world):
    with wall(ACME) as session:
        session.execute(text("SET LOCAL row_security = off"))
        with pytest.raises(DBAPIError) as caught:
            session.execute(text("SELECT * FROM rls_project")).all()

    assert "row-level security" in str(caught.value)


def test_an_ordinary_session_cannot_become_the_admin_role(wall, app_role, world):
    admin_role = app_role.make_role("BYPASSRLS")
    with wall(ACME) as session, pytest.raises(DBAPIError) as caught:
        session.execute(text(f"SET ROLE {admin_role}"))

    assert "permission denied" in str(caught.value)


def test_an_ordinary_session_cannot_disable_the_tables_security(wall, world):
    with wall(ACME) as session, pytest.raises(DBAPIError) as caught:
        session.execute(text("ALTER TABLE rls_project DISABLE ROW LEVEL SECURITY"))

    assert "must be owner" in str(caught.value)


def test_the_global_read_setting_opens_only_global_access_tables_and_only_for_reading(
    wall, world: World
):
    with wall(None) as session:
        session.execute(text("SELECT set_config('fastapi_tenancy.global_read', 'on', true)"))
        templates = sorted(session.execute(select(Template.name)).scalars())
        projects = session.execute(select(Project.name)).all()
        tasks = session.execute(select(Task.name)).all()
        with pytest.raises(DBAPIError) as caught:
            session.execute(
                text("INSERT INTO rls_template (tenant_id, name) VALUES (:tenant, 'x')"),
                {"tenant": ACME},
            )

    assert templates == ["acme-template", "globex-template"]
    assert projects == tasks == []
    assert getattr(caught.value.orig, "sqlstate", None) == "42501"


def test_the_global_switch_without_a_tenant_reads_global_models_across_tenants(tenancy, world):
    with tenancy.make_session(SessionScope(None, Access.GLOBAL)) as session:
        templates = sorted(session.execute(select(Template.name)).scalars())

    assert templates == ["acme-template", "globex-template"]


def test_the_global_switch_with_a_tenant_reads_only_that_tenants_rows(tenancy, world):
    with tenancy.make_session(SessionScope(GLOBEX, Access.GLOBAL)) as session:
        templates = session.execute(select(Template.name)).scalars().all()

    assert templates == ["globex-template"]


# --------------------------------------------------------------------------------------------
# The startup refusal


def first_use(tenancy: Tenancy) -> None:
    with tenancy.make_session(SessionScope(ACME)) as session:
        session.execute(select(Project)).all()


def test_the_kit_refuses_to_start_on_a_superuser(database, world):
    engine = create_engine(database.url)
    try:
        tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
        with pytest.raises(UnsafeDatabaseRole) as caught:
            first_use(tenancy)
    finally:
        engine.dispose()

    assert "superuser" in str(caught.value)
    assert "CREATE ROLE app LOGIN" in str(caught.value)
    assert caught.value.code == "unsafe_database_role"


def app_with_lifespan(tenancy: Tenancy, shutdowns: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            shutdowns.append("disposed")

    app = FastAPI(lifespan=lifespan)
    tenancy.install(app)

    @app.get("/projects")
    def projects(session: TenantSession) -> int:
        return len(session.execute(select(Project)).all())

    return app


def test_an_app_on_a_superuser_fails_at_startup_not_at_its_first_request(database, world):
    engine = create_engine(database.url)
    shutdowns: list[str] = []
    try:
        tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
        app = app_with_lifespan(tenancy, shutdowns)
        with pytest.raises(UnsafeDatabaseRole, match="superuser"), TestClient(app):
            pytest.fail("the app started")  # pragma: no cover
    finally:
        engine.dispose()
    assert shutdowns == ["disposed"]  # the app's own clean-up (in finally) still ran


def test_an_app_on_an_ordinary_role_starts_and_serves(tenancy):
    shutdowns: list[str] = []
    with TestClient(app_with_lifespan(tenancy, shutdowns)) as client:
        r = client.get("/projects", headers={"X-Tenant-ID": str(ACME)})
    assert r.status_code == 200, r.text
    assert shutdowns == ["disposed"]


def test_an_app_whose_database_is_down_at_startup_starts_and_checks_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
    with TestClient(app_with_lifespan(tenancy, [])) as client:
        r = client.get("/projects", headers={"X-Tenant-ID": str(ACME)})
    engine.dispose()
    assert r.status_code == 503, r.text
    warnings = [r for r in caplog.records if r.name == "fastapi_tenancy.startup"]
    assert len(warnings) == 1
    assert "checked at the first connection" in warnings[0].getMessage()


def test_the_kit_refuses_to_start_on_a_role_with_bypassrls(app_role, world):
    engine = app_role.engine(app_role.make_role("BYPASSRLS"))
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
    with pytest.raises(UnsafeDatabaseRole, match="BYPASSRLS"):
        first_use(tenancy)


def test_the_kit_refuses_to_start_on_a_role_that_can_become_a_bypassing_role(
    app_role, owner, world
):
    member = app_role.make_role()
    admin = app_role.make_role("BYPASSRLS")
    with as_owner(owner) as conn:
        conn.execute(text(f"GRANT {admin} TO {member}"))
    tenancy = Tenancy(
        app_role.engine(member), resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE
    )
    with pytest.raises(UnsafeDatabaseRole, match=f"SET ROLE {admin}"):
        first_use(tenancy)


def test_the_kit_refuses_to_start_on_the_owner_of_a_tenant_table(app_role, owner, world):
    table_owner = app_role.make_role()
    with as_owner(owner) as conn:
        conn.execute(text(f"ALTER TABLE rls_task OWNER TO {table_owner}"))
    tenancy = Tenancy(
        app_role.engine(table_owner), resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE
    )
    with pytest.raises(UnsafeDatabaseRole, match=r"owns tenant table\(s\) rls_task"):
        first_use(tenancy)


def test_the_kit_refuses_to_start_when_a_tenant_table_has_no_row_security(
    app_role, app_engine, owner, world
):
    with as_owner(owner) as conn:
        conn.execute(text("ALTER TABLE rls_project DISABLE ROW LEVEL SECURITY"))
    tenancy = Tenancy(app_engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
    with pytest.raises(UnsafeDatabaseRole, match=r"rls_project have no row-level security"):
        first_use(tenancy)


def test_the_kit_refuses_an_async_engine_on_a_superuser(database, world):
    engine = database.create_async_engine()
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)

    async def use() -> None:
        async with tenancy.make_async_session(SessionScope(ACME)) as session:
            await session.exec(select(Project))

    import anyio

    with pytest.raises(UnsafeDatabaseRole, match="superuser"):
        anyio.run(use)
    engine.sync_engine.dispose()


def test_the_role_check_can_be_turned_off_explicitly(database, world):
    engine = create_engine(database.url)
    try:
        options = RowLevelSecurity(check_role=False)
        tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=options, key_type=KEY_TYPE)
        first_use(tenancy)  # a superuser: sees everything, which is why the check exists
    finally:
        engine.dispose()


def test_the_ordinary_role_passes_the_check(tenancy, world):
    first_use(tenancy)


def test_row_level_security_needs_postgresql(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    with pytest.raises(TenancyMisuse, match="needs PostgreSQL"):
        Tenancy(engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
    engine.dispose()
