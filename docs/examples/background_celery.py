"""Celery jobs that run as the tenant that queued them: docs/background-work.md.

``create_celery_app`` builds the Celery app with its tasks; the web app and the worker build it
the same way (the worker's module: ``celery_app = create_celery_app(tenancy, broker_url)``,
started with ``celery -A that.module worker``).
"""

from __future__ import annotations

from celery import Celery
from fastapi import FastAPI
from sqlalchemy import Engine, update
from sqlmodel import col, select

from docs.examples.background_threads import Ticket
from fastapi_tenancy import HeaderResolver, Tenancy, with_tenant, without_tenant
from fastapi_tenancy.integrations.celery import TenantTask, carry_tenant_in_messages


# --8<-- [start:tasks]
def create_celery_app(tenancy: Tenancy, broker_url: str) -> Celery:
    celery_app = Celery("helpdesk", broker=broker_url, task_cls=TenantTask)
    carry_tenant_in_messages()  # also stamps app.send_task("name"), through before_task_publish

    # shared=False: the task belongs to this app only, whichever app the factory builds.
    @celery_app.task(name="helpdesk.close_open_tickets", shared=False)
    def close_open_tickets() -> int:
        with tenancy.session() as session:  # scoped to the tenant that queued the job
            result = session.exec(update(Ticket).where(col(Ticket.open)).values(open=False))
            session.commit()
            return result.rowcount

    @celery_app.task(name="helpdesk.close_everywhere", shared=False, tenantless=True)
    def close_everywhere() -> list[str]:
        # A tenant-less job: it finds the tenants on purpose, then queues one job per tenant.
        with without_tenant(reason="nightly close"), tenancy.session() as session:
            tenants = list(session.exec(select(Ticket.tenant_id).distinct()).all())
        for tenant in tenants:
            with with_tenant(tenant):
                close_open_tickets.delay()
        return tenants

    return celery_app


# --8<-- [end:tasks]


def create_app(engine: Engine, celery_app: Celery) -> FastAPI:
    app = FastAPI()
    Tenancy(engine, resolvers=[HeaderResolver()]).install(app)
    close_open_tickets = celery_app.tasks["helpdesk.close_open_tickets"]

    # --8<-- [start:route]
    @app.post("/tickets/close", status_code=202)
    def close_tickets() -> None:
        close_open_tickets.delay()  # the request's tenant goes with the message

    # --8<-- [end:route]

    return app
