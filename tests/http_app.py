"""The tiny multi-tenant app the HTTP tests drive, built around the engine under test.

``build_app(engine)`` answers a FastAPI app and its :class:`Tenancy`: sync ``def`` routes with
the sync dependencies on a sync ``Engine``, ``async def`` routes with the async twins on an
``AsyncEngine``, the same paths and JSON either way, so one test covers both kinds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jwt
from fastapi import APIRouter, FastAPI, HTTPException, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel, select
from starlette.concurrency import run_in_threadpool

from fastapi_tenancy import (
    AdminSession,
    AsyncAdminSession,
    AsyncGlobalSession,
    AsyncTenantSession,
    CurrentTenant,
    GlobalSession,
    HeaderResolver,
    JWTClaimResolver,
    Tenancy,
    TenantContext,
    TenantScoped,
    TenantSession,
    get_current_tenant,
    tenant_unique,
)

SECRET = "a-test-only-hs256-secret-long-enough-for-hs512-too-0123456789abcdef"
TENANTS = ("acme", "globex", "initech")


class Project(TenantScoped, table=True):
    __tablename__ = "http_project"
    __table_args__ = (tenant_unique("name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)


class Template(TenantScoped, table=True):
    """Rows any tenant may publish and, through the global-access switch, everyone may read."""

    __tablename__ = "http_template"
    __global_access__ = True

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)


class Tenant(SQLModel, table=True):
    """The tenant table the lookup reads (not tenant-scoped itself)."""

    __tablename__ = "http_tenant"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, max_length=63)
    active: bool = True
    plan: str = Field(default="free", max_length=20)


TABLES = (Project, Template, Tenant)


class ProjectIn(SQLModel):
    name: str
    tenant_id: str | None = None


class ProjectPatch(SQLModel):
    name: str | None = None
    tenant_id: str | None = None


class Boom(Exception):
    """What a route raises on purpose, after it has touched its session."""


def token(*, exp_in: float = 6 * 3600, **claims: Any) -> str:
    """An HS256 token signed with :data:`SECRET`, expiring in ``exp_in`` seconds.

    The default outlives any test run: modules build their tokens when they are imported, at
    collection, which can be many minutes before their tests run.
    """
    return jwt.encode({"exp": int(time.time() + exp_in), **claims}, SECRET, algorithm="HS256")


def bearer(**claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(**claims)}"}


def tenant_header(tenant: str) -> dict[str, str]:
    return {"X-Tenant-ID": tenant}


def jwt_resolver() -> JWTClaimResolver:
    return JWTClaimResolver(key=SECRET, algorithms=["HS256"])


def is_admin(context: TenantContext) -> bool:
    return "admin" in context.claims.get("roles", ())


def build_app(
    engine: Engine | AsyncEngine,
    *,
    resolvers: Sequence[Any] | None = None,
    **options: Any,
) -> tuple[FastAPI, Tenancy]:
    """The app on ``engine``: token then header by default, admins by the ``admin`` role."""
    options.setdefault("is_admin", is_admin)
    options.setdefault("trust_unverified_sources", True)  # tests send bare headers on purpose
    tenancy = Tenancy(
        engine,
        resolvers=[jwt_resolver(), HeaderResolver()] if resolvers is None else resolvers,
        **options,
    )
    app = FastAPI()
    app.state.tenancy = tenancy
    app.state.sessions = []
    tenancy.install(app)
    app.include_router(_async_routes() if tenancy.is_async else _sync_routes())
    app.include_router(_common_routes())
    return app, tenancy


def project_json(project: Project) -> dict[str, Any]:
    return {"id": project.id, "name": project.name, "tenant_id": project.tenant_id}


def template_json(template: Template) -> dict[str, Any]:
    return {"id": template.id, "name": template.name, "tenant_id": template.tenant_id}


def _not_found() -> HTTPException:
    return HTTPException(status_code=404, detail="No such project.")


def _refusal() -> HTTPException:
    return HTTPException(status_code=422, detail="Refused after the flush.")


def _common_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/whoami")
    async def whoami() -> dict[str, Any]:
        return {"tenant": get_current_tenant()}

    @router.get("/tenant")
    def tenant(context: CurrentTenant) -> dict[str, Any]:
        return jsonable_encoder(
            {
                "id": context.id,
                "source": context.source,
                "claims": dict(context.claims),
                "record": context.record,
            }
        )

    return router


def _sync_routes() -> APIRouter:
    # response_model=None: FastAPI validates a sync route's return value in the thread pool,
    # one more hop while the session still holds its pooled connection. Under a burst larger
    # than the pool plus the thread pool, every worker thread then waits for a connection held
    # by a request that waits for a thread, until pool_timeout (the pattern of FastAPI #3205).
    router = APIRouter()

    @router.get("/projects", response_model=None)
    def list_projects(session: TenantSession) -> list[dict[str, Any]]:
        return [project_json(p) for p in session.exec(select(Project).order_by(Project.name))]

    @router.get("/projects/{project_id}", response_model=None)
    def get_project(project_id: int, session: TenantSession) -> dict[str, Any]:
        project = session.get(Project, project_id)
        if project is None:
            raise _not_found()
        return project_json(project)

    @router.post("/projects", status_code=201, response_model=None)
    def create_project(body: ProjectIn, session: TenantSession) -> dict[str, Any]:
        project = Project(**body.model_dump(exclude_none=True))
        session.add(project)
        session.commit()
        return project_json(project)

    @router.patch("/projects/{project_id}", response_model=None)
    def update_project(
        project_id: int, body: ProjectPatch, session: TenantSession
    ) -> dict[str, Any]:
        project = session.get(Project, project_id)
        if project is None:
            raise _not_found()
        for name, value in body.model_dump(exclude_unset=True).items():
            setattr(project, name, value)
        session.commit()
        return project_json(project)

    @router.post("/projects/raise-after-add", response_model=None)
    def raise_after_add(body: ProjectIn, session: TenantSession) -> None:
        session.add(Project(name=body.name))
        raise Boom("after add")

    @router.post("/projects/raise-after-flush", response_model=None)
    def raise_after_flush(body: ProjectIn, session: TenantSession, http: bool = False) -> None:
        session.add(Project(name=body.name))
        session.flush()
        raise _refusal() if http else Boom("after flush")

    @router.get("/sessions/keep", response_model=None)
    def keep_session(request: Request, session: TenantSession) -> int:
        request.app.state.sessions.append(session)
        return len(session.exec(select(Project)).all())

    @router.post("/templates", status_code=201, response_model=None)
    def create_template(body: ProjectIn, session: TenantSession) -> dict[str, Any]:
        template = Template(name=body.name)
        session.add(template)
        session.commit()
        return template_json(template)

    @router.get("/global/templates", response_model=None)
    def global_templates(session: GlobalSession) -> list[dict[str, Any]]:
        statement = select(Template).order_by(Template.tenant_id, Template.name)
        return [template_json(t) for t in session.exec(statement)]

    @router.get("/global/projects", response_model=None)
    def global_projects(session: GlobalSession) -> list[dict[str, Any]]:
        return [project_json(p) for p in session.exec(select(Project).order_by(Project.name))]

    @router.post("/global/projects", status_code=201, response_model=None)
    def global_create_project(body: ProjectIn, session: GlobalSession) -> dict[str, Any]:
        project = Project(**body.model_dump(exclude_none=True))
        session.add(project)
        session.commit()
        return project_json(project)

    @router.get("/admin/projects", response_model=None)
    def admin_projects(session: AdminSession) -> list[dict[str, Any]]:
        statement = select(Project).order_by(Project.tenant_id, Project.name)
        return [project_json(p) for p in session.exec(statement)]

    @router.websocket("/ws/projects")
    async def ws_projects(websocket: WebSocket, session: TenantSession) -> None:
        await websocket.accept()
        statement = select(Project).order_by(Project.name)
        rows = await run_in_threadpool(lambda: list(session.exec(statement)))
        await websocket.send_json([project_json(p) for p in rows])
        await websocket.close()

    return router


def _async_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/projects")
    async def list_projects(session: AsyncTenantSession) -> list[dict[str, Any]]:
        result = await session.exec(select(Project).order_by(Project.name))
        return [project_json(p) for p in result]

    @router.get("/projects/{project_id}")
    async def get_project(project_id: int, session: AsyncTenantSession) -> dict[str, Any]:
        project = await session.get(Project, project_id)
        if project is None:
            raise _not_found()
        return project_json(project)

    @router.post("/projects", status_code=201)
    async def create_project(body: ProjectIn, session: AsyncTenantSession) -> dict[str, Any]:
        project = Project(**body.model_dump(exclude_none=True))
        session.add(project)
        await session.commit()
        return project_json(project)

    @router.patch("/projects/{project_id}")
    async def update_project(
        project_id: int, body: ProjectPatch, session: AsyncTenantSession
    ) -> dict[str, Any]:
        project = await session.get(Project, project_id)
        if project is None:
            raise _not_found()
        for name, value in body.model_dump(exclude_unset=True).items():
            setattr(project, name, value)
        await session.commit()
        return project_json(project)

    @router.post("/projects/raise-after-add")
    async def raise_after_add(body: ProjectIn, session: AsyncTenantSession) -> None:
        session.add(Project(name=body.name))
        raise Boom("after add")

    @router.post("/projects/raise-after-flush")
    async def raise_after_flush(
        body: ProjectIn, session: AsyncTenantSession, http: bool = False
    ) -> None:
        session.add(Project(name=body.name))
        await session.flush()
        raise _refusal() if http else Boom("after flush")

    @router.get("/sessions/keep")
    async def keep_session(request: Request, session: AsyncTenantSession) -> int:
        request.app.state.sessions.append(session)
        return len((await session.exec(select(Project))).all())

    @router.post("/templates", status_code=201)
    async def create_template(body: ProjectIn, session: AsyncTenantSession) -> dict[str, Any]:
        template = Template(name=body.name)
        session.add(template)
        await session.commit()
        return template_json(template)

    @router.get("/global/templates")
    async def global_templates(session: AsyncGlobalSession) -> list[dict[str, Any]]:
        statement = select(Template).order_by(Template.tenant_id, Template.name)
        return [template_json(t) for t in await session.exec(statement)]

    @router.get("/global/projects")
    async def global_projects(session: AsyncGlobalSession) -> list[dict[str, Any]]:
        result = await session.exec(select(Project).order_by(Project.name))
        return [project_json(p) for p in result]

    @router.post("/global/projects", status_code=201)
    async def global_create_project(body: ProjectIn, session: AsyncGlobalSession) -> dict[str, Any]:
        project = Project(**body.model_dump(exclude_none=True))
        session.add(project)
        await session.commit()
        return project_json(project)

    @router.get("/admin/projects")
    async def admin_projects(session: AsyncAdminSession) -> list[dict[str, Any]]:
        statement = select(Project).order_by(Project.tenant_id, Project.name)
        return [project_json(p) for p in await session.exec(statement)]

    @router.websocket("/ws/projects")
    async def ws_projects(websocket: WebSocket, session: AsyncTenantSession) -> None:
        await websocket.accept()
        result = await session.exec(select(Project).order_by(Project.name))
        await websocket.send_json([project_json(p) for p in result])
        await websocket.close()

    return router


def client(app: FastAPI, **kwargs: Any) -> TestClient:
    """A TestClient that answers server errors as 500 responses instead of raising them."""
    kwargs.setdefault("raise_server_exceptions", False)
    return TestClient(app, **kwargs)


def seed_projects(client: TestClient, projects: dict[str, Sequence[str]]) -> None:
    """Create projects through the app, each as its own tenant."""
    for tenant, names in projects.items():
        for name in names:
            r = client.post("/projects", json={"name": name}, headers=tenant_header(tenant))
            assert r.status_code == 201, r.text


def names(response: Any) -> list[str]:
    return [row["name"] for row in response.json()]
