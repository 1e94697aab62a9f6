"""Trusted scripts of docs/switches.md: a report across tenants, and moving a project.

They run outside any request, on the app's models and a ``Tenancy`` of their own
(``Tenancy(engine, resolvers=[])``: a script resolves nothing).
"""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select

from docs.examples.switches_app import Project
from fastapi_tenancy import Tenancy, mutable_tenant, without_tenant


# --8<-- [start:report]
def projects_per_tenant(tenancy: Tenancy) -> dict[str, int]:
    """How many projects each tenant has: one query across every tenant."""
    with without_tenant(reason="monthly usage report"), tenancy.session() as session:
        statement = select(Project.tenant_id, func.count(col(Project.id))).group_by(
            Project.tenant_id
        )
        return {tenant: count for tenant, count in session.exec(statement).all()}


# --8<-- [end:report]


# --8<-- [start:move]
def move_project(tenancy: Tenancy, project_id: int, to_tenant: str, *, reason: str) -> None:
    """Hand one project over to another tenant (a customer merger, a support request)."""
    with (
        without_tenant(reason=reason),  # read the project whoever owns it
        mutable_tenant(reason=reason),  # and allow its tenant_id to change
        tenancy.session() as session,
    ):
        project = session.get(Project, project_id)
        if project is None:
            raise LookupError(f"no project {project_id}")
        project.tenant_id = to_tenant
        session.commit()


# --8<-- [end:move]
