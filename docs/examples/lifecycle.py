"""docs/lifecycle.md: a tenants table, sign-up through hooks, suspend, offboard, export, clone
and rename.

The app keeps its organizations in its own table; ``TenantRegistry`` tells the kit which
columns are the key and the active flag, and what happens around a creation.
"""

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, select

from fastapi_tenancy import (
    HeaderResolver,
    Tenancy,
    TenancyError,
    TenantKey,
    TenantRegistry,
    TenantScoped,
    TenantSession,
)
from fastapi_tenancy.purge import PurgeReport
from fastapi_tenancy.transfer import TransferReport


# --8<-- [start:models]
class Organization(SQLModel, table=True):
    __tablename__ = "lc_organization"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(sa_type=TenantKey, unique=True, max_length=63)
    name: str = Field(max_length=100)
    plan: str = Field(default="free", max_length=20)
    active: bool = True
    created_at: datetime | None = None
    suspended_at: datetime | None = None


class Project(TenantScoped, table=True):
    __tablename__ = "lc_project"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)


# --8<-- [end:models]


# --8<-- [start:hooks]
RESERVED = {"admin", "api", "www"}


class SlugReserved(TenancyError):
    """A refusal of your own: any TenancyError answers with its status and code."""

    code = "slug_reserved"
    status_code = 422
    default_detail = "This name is reserved."


def check_signup(key: str, fields: dict[str, Any]) -> None:
    """Before the row is written: refuse, or fill in fields."""
    if key in RESERVED:
        raise SlugReserved()
    fields.setdefault("plan", "trial")


def seed_tenant(record: Organization, session: Session) -> None:
    """After the row is written, in the same transaction, with the new tenant bound."""
    session.add(Project(name="Getting started"))


registry = TenantRegistry(
    Organization,
    key="slug",
    active="active",
    created_at="created_at",
    suspended_at="suspended_at",
    max_tenants=10_000,
    before_create=check_signup,
    after_create=seed_tenant,
)
# --8<-- [end:hooks]


class SignUp(BaseModel):
    slug: str
    name: str


def create_app(engine: Engine) -> FastAPI:
    # --8<-- [start:tenancy]
    tenancy = Tenancy(
        engine,
        resolvers=[HeaderResolver("X-Tenant-ID")],
        registry=registry,  # also the lookup: unknown 404, suspended 403
        exclude_paths=("/signup", "/docs", "/openapi.json"),  # no tenant yet
    )
    # --8<-- [end:tenancy]
    app = FastAPI()
    tenancy.install(app)
    app.state.tenancy = tenancy

    # --8<-- [start:signup]
    @app.post("/signup", status_code=201)
    def signup(body: SignUp) -> dict[str, str]:
        organization: Organization = tenancy.tenants.create(body.slug, name=body.name)
        return {"slug": organization.slug, "plan": organization.plan}

    # --8<-- [end:signup]

    @app.get("/projects")
    def projects(session: TenantSession) -> list[str]:
        return [project.name for project in session.exec(select(Project))]

    return app


# --8<-- [start:offboard]
def suspend(tenancy: Tenancy, slug: str) -> None:
    """From a script or an admin task: every request of that tenant answers 403 at once."""
    tenancy.tenants.suspend(slug)


def offboard(tenancy: Tenancy, slug: str) -> PurgeReport:
    """A customer leaves: refuse its requests, count what goes, then delete it all."""
    tenancy.tenants.suspend(slug)
    planned = tenancy.tenants.purge(slug, dry_run=True)
    print(f"deleting {planned.total} rows of {slug}: {planned.rows}")
    return tenancy.tenants.purge(slug, resumable=True)


# --8<-- [end:offboard]


# --8<-- [start:export]
def export_for_customer(tenancy: Tenancy, slug: str, directory: Path) -> Path:
    """A customer asks for its data: every row, one JSON Lines file per table, zipped."""
    archive = directory / f"{slug}.zip"
    report: TransferReport = tenancy.tenants.export(slug, archive)
    print(f"exported {report.total} rows of {slug}: {report.rows}")
    return archive


def sign_up_from_template(tenancy: Tenancy, slug: str, name: str) -> TransferReport:
    """A new tenant starts with a copy of a template tenant's rows (new ids, same shape)."""
    return tenancy.tenants.clone("template", slug, name=name)


# --8<-- [end:export]


# --8<-- [start:rename]
def rename(tenancy: Tenancy, slug: str, new_slug: str) -> None:
    """A customer changes its subdomain: no request runs while its rows move."""
    tenancy.tenants.suspend(slug)
    tenancy.tenants.rename(slug, new_slug)
    tenancy.tenants.resume(new_slug)


# --8<-- [end:rename]
