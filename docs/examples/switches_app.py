"""An app using the switches of docs/switches.md: shared plans, a template gallery, admin pages.

Tokens are HS256 JWTs with the tenant in their ``tenant`` claim, the user in ``sub`` and
``"admin"`` in ``roles`` for platform admins.
"""

# No "from __future__ import annotations": SQLModel reads the real annotations.

from fastapi import FastAPI
from sqlalchemy import Engine, MetaData
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, col, select
from starlette.requests import HTTPConnection

from fastapi_tenancy import (
    AdminSession,
    GlobalSession,
    JWTClaimResolver,
    Tenancy,
    TenantContext,
    TenantScoped,
    TenantSession,
)

switches_registry = registry()


class SwitchesModel(SQLModel, registry=switches_registry):
    """Base of this sample's tables: a registry of their own."""


metadata: MetaData = switches_registry.metadata


class Plan(SwitchesModel, table=True):
    """Shared reference data: no tenant column."""

    __tablename__ = "switches_plan"

    code: str = Field(primary_key=True, max_length=20)
    name: str = Field(max_length=50)


class Template(SwitchesModel, TenantScoped, table=True):
    """Published by one tenant, browsable by anyone through the global-access switch."""

    __tablename__ = "switches_template"
    __global_access__ = True

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=100)


class Project(SwitchesModel, TenantScoped, table=True):
    __tablename__ = "switches_project"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)


class TemplateIn(SQLModel):
    title: str


class ProjectIn(SQLModel):
    name: str


# --8<-- [start:config]
def is_admin(context: TenantContext) -> bool:
    """Platform admins carry "admin" in their verified token's roles."""
    return "admin" in context.claims.get("roles", ())


TENANT_OPTIONAL = frozenset({"/plans", "/templates", "/admin/projects"})


def tenant_required(conn: HTTPConnection) -> bool:
    return conn.url.path not in TENANT_OPTIONAL


def create_tenancy(engine: Engine, *, secret: str) -> Tenancy:
    return Tenancy(
        engine,
        resolvers=[JWTClaimResolver(key=secret, algorithms=["HS256"])],
        is_admin=is_admin,
        require_tenant=tenant_required,
    )


# --8<-- [end:config]


def create_app(engine: Engine, *, secret: str) -> FastAPI:
    app = FastAPI()
    create_tenancy(engine, secret=secret).install(app)

    # --8<-- [start:global]
    @app.get("/plans")
    def list_plans(session: GlobalSession) -> list[Plan]:
        # Plan has no tenant column: the same rows for everyone, with or without a tenant.
        return list(session.exec(select(Plan).order_by(Plan.code)).all())

    @app.get("/templates")
    def browse_templates(session: GlobalSession) -> list[Template]:
        # No tenant bound: every tenant's templates (a __global_access__ model).
        # A tenant bound: that tenant's own, as in a tenant session.
        return list(session.exec(select(Template).order_by(col(Template.id))).all())

    @app.post("/templates", status_code=201)
    def publish_template(body: TemplateIn, session: GlobalSession) -> Template:
        # Stamped with the caller's tenant; with no tenant bound the write is refused (400).
        template = Template(title=body.title)
        session.add(template)
        session.commit()
        session.refresh(template)
        return template

    # --8<-- [end:global]

    # --8<-- [start:tenant]
    @app.get("/projects")
    def list_projects(session: TenantSession) -> list[Project]:
        return list(session.exec(select(Project).order_by(col(Project.id))).all())

    @app.post("/projects", status_code=201)
    def create_project(body: ProjectIn, session: TenantSession) -> Project:
        project = Project(name=body.name)
        session.add(project)
        session.commit()
        session.refresh(project)
        return project

    # --8<-- [end:tenant]

    # --8<-- [start:admin]
    @app.get("/admin/projects")
    def every_project(session: AdminSession) -> list[Project]:
        # Admins only (403 admin_required otherwise); each use is logged on
        # the fastapi_tenancy.audit logger.
        return list(session.exec(select(Project).order_by(col(Project.id))).all())

    # --8<-- [end:admin]

    return app
