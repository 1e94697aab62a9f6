"""assert_tenant_isolation: passes on a scoped app, and catches each way an app can leak."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, func, select

from fastapi_tenancy import (
    HeaderResolver,
    JWTClaimResolver,
    Tenancy,
    TenantScoped,
    TenantSession,
    tenant_unique,
    without_tenant,
)
from fastapi_tenancy.testing import IsolationRoute, TenantClients, assert_tenant_isolation

SECRET = "an-isolation-test-secret-long-enough-for-hs256"
TENANTS = ["acme", "globex", "initech"]
ROUTES: list[Any] = [
    ("POST /projects", {"name": "{marker}"}),
    "GET /projects",
    "GET /projects/{id}",
    "GET /stats",
]


class IsolatedProject(TenantScoped, table=True):
    __tablename__ = "isolation_project"
    __table_args__ = (tenant_unique("name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)


class ProjectIn(SQLModel):
    name: str


def build_app(engine: Engine, *, leak: str | None = None) -> FastAPI:
    """The projects API; ``leak`` names the route that forgets its tenant."""
    tenancy = Tenancy(
        engine,
        resolvers=[JWTClaimResolver(key=SECRET, algorithms=["HS256"]), HeaderResolver()],
        trust_unverified_sources=True,  # a bare header names the tenant in these tests
    )
    app = FastAPI()
    tenancy.install(app)

    def unscoped() -> Session:
        with without_tenant(reason="a bug under test"):
            return tenancy.session()

    @app.post("/projects", status_code=201)
    def create(body: ProjectIn, session: TenantSession) -> IsolatedProject:
        project = IsolatedProject(name=body.name)
        session.add(project)
        session.commit()
        session.refresh(project)
        return project

    @app.get("/projects")
    def listing(session: TenantSession) -> list[IsolatedProject]:
        if leak == "list":
            with unscoped() as everything:
                return list(everything.exec(select(IsolatedProject)).all())
        return list(session.exec(select(IsolatedProject)).all())

    @app.get("/projects/{project_id}")
    def detail(project_id: int, session: TenantSession) -> IsolatedProject:
        if leak == "detail":
            with unscoped() as everything:
                found = everything.get(IsolatedProject, project_id)
        else:
            found = session.get(IsolatedProject, project_id)
        if found is None:
            raise HTTPException(404, "No such project.")
        return found

    @app.get("/stats")
    def stats(session: TenantSession) -> dict[str, int]:
        return {"projects": session.exec(select(func.count(IsolatedProject.id))).one()}

    return app


@pytest.fixture
def app(engine: Engine, create_tables: Any) -> FastAPI:
    create_tables(engine, IsolatedProject)
    return build_app(engine)


def test_a_scoped_app_passes_the_isolation_check(app: FastAPI) -> None:
    assert_tenant_isolation(app, tenants=TENANTS, routes=ROUTES)


def test_the_check_runs_through_the_plugins_clients_and_by_header(app: FastAPI) -> None:
    clients = TenantClients(app)
    routes = [IsolationRoute.parse(route) for route in ROUTES]
    assert routes[0] == IsolationRoute("POST", "/projects", {"name": "{marker}"})
    assert IsolationRoute.parse("/stats") == IsolationRoute("GET", "/stats")
    assert_tenant_isolation(clients, tenants=["acme", "globex"], routes=routes)


@pytest.mark.backends("sqlite")
def test_a_list_route_that_reads_every_tenant_is_caught(engine: Engine, create_tables: Any) -> None:
    create_tables(engine, IsolatedProject)
    with pytest.raises(AssertionError, match="Tenant isolation failed") as failed:
        assert_tenant_isolation(build_app(engine, leak="list"), tenants=TENANTS, routes=ROUTES)
    message = str(failed.value)
    assert "GET /projects as acme answered 200 with data of globex" in message
    assert "GET /projects as globex answered 200 with data of initech" in message
    assert "/projects/" not in message  # the detail route is fine


@pytest.mark.backends("sqlite")
def test_a_detail_route_that_serves_another_tenants_id_is_caught(
    engine: Engine, create_tables: Any
) -> None:
    create_tables(engine, IsolatedProject)
    with pytest.raises(AssertionError) as failed:
        assert_tenant_isolation(
            build_app(engine, leak="detail"), tenants=["acme", "globex"], routes=ROUTES
        )
    message = str(failed.value)
    assert "as acme, with an id of globex, answered 200, not one of (403, 404)" in message
    assert "with data of globex" in message


@pytest.mark.backends("sqlite")
def test_a_check_that_never_sees_the_tenants_own_data_fails(app: FastAPI) -> None:
    with pytest.raises(AssertionError, match="no GET route showed acme its own data"):
        assert_tenant_isolation(app, tenants=["acme", "globex"], routes=[ROUTES[0], "GET /stats"])


@pytest.mark.backends("sqlite")
def test_a_create_route_that_fails_stops_the_check_with_its_response(app: FastAPI) -> None:
    with pytest.raises(AssertionError, match="acme could not create data with POST /projects"):
        assert_tenant_isolation(
            app,
            tenants=["acme", "globex"],
            routes=[("POST /projects", {"title": "{marker}"}), "GET /projects"],
        )


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    ("tenants", "routes", "match"),
    [
        (["acme"], ROUTES, "two different tenants"),
        (["acme", "acme"], ROUTES, "two different tenants"),
        (TENANTS, ["GET /projects"], "one route that creates data"),
        (TENANTS, [("POST /projects", {"name": "fixed"}), "GET /projects"], "{marker}"),
    ],
)
def test_a_check_that_could_prove_nothing_is_refused(
    app: FastAPI, tenants: list[str], routes: list[Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        assert_tenant_isolation(app, tenants=tenants, routes=routes)
