"""The README's 20-line app: one tenant-scoped model, two routes, tenant from a header."""

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Field, SQLModel, create_engine, select

from fastapi_tenancy import HeaderResolver, Tenancy, TenantScoped, TenantSession, tenant_unique


class Project(TenantScoped, table=True):
    __table_args__ = (tenant_unique("name"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str


class ProjectIn(SQLModel):
    name: str


def create_app(engine: Engine | None = None) -> FastAPI:
    engine = engine or create_engine("sqlite:///quickstart.db")
    SQLModel.metadata.create_all(engine)
    app = FastAPI()
    Tenancy(engine, resolvers=[HeaderResolver("X-Tenant-ID")]).install(app)

    @app.get("/projects")
    def list_projects(session: TenantSession) -> list[Project]:
        return list(session.exec(select(Project)).all())  # only this tenant's rows

    @app.post("/projects", status_code=201)
    def create_project(body: ProjectIn, session: TenantSession) -> Project:
        project = Project(name=body.name)  # tenant_id is stamped on flush
        session.add(project)
        session.commit()
        return project

    return app
