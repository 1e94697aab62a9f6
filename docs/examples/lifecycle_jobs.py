"""docs/lifecycle.md: a job for every tenant, in-process and as a Celery beat schedule.

``create_celery_app`` builds the Celery app the web app, the worker and beat share (started with
``celery -A that.module worker`` and ``celery -A that.module beat``).
"""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab
from sqlalchemy import func
from sqlmodel import select

from docs.examples.lifecycle import Project
from fastapi_tenancy import Tenancy
from fastapi_tenancy.integrations.celery import TenantTask, carry_tenant_in_messages
from fastapi_tenancy.jobs import JobReport


# --8<-- [start:for_each]
def count_projects(tenancy: Tenancy) -> dict[str, int]:
    """Every active tenant's project count, four tenants at a time."""
    counts: dict[str, int] = {}

    def count(slug: str) -> None:
        with tenancy.session() as session:  # scoped to ``slug``, bound for this call
            counts[slug] = session.exec(select(func.count()).select_from(Project)).one()

    report: JobReport = tenancy.tenants.for_each(count, concurrency=4)
    for slug, error in report.failed.items():  # also logged, with the tenant
        print(f"{slug}: {error}")
    return counts


# --8<-- [end:for_each]


# --8<-- [start:celery]
def create_celery_app(tenancy: Tenancy, broker_url: str) -> Celery:
    celery_app = Celery("lifecycle", broker=broker_url, task_cls=TenantTask)
    carry_tenant_in_messages()

    @celery_app.task(name="lifecycle.send_digest", shared=False)
    def send_digest() -> int:
        with tenancy.session() as session:  # the tenant that queued it: one per message
            return len(session.exec(select(Project)).all())

    @celery_app.task(name="lifecycle.digest_every_tenant", shared=False, tenantless=True)
    def digest_every_tenant() -> list[str]:
        # One message per active tenant, each carrying its tenant; returns who failed to queue.
        report = tenancy.tenants.for_each(lambda slug: send_digest.delay())
        return sorted(report.failed)

    celery_app.conf.beat_schedule = {
        "digest-every-tenant": {
            "task": "lifecycle.digest_every_tenant",
            "schedule": crontab(hour=6, minute=0),
        },
    }
    return celery_app


# --8<-- [end:celery]
