"""The Celery app of tests/test_celery.py, which runs it in a real worker process.

``create_celery_app`` builds it for the test process (to publish and read results); the worker
(``celery -A tests.celery_tasks worker``) builds the module's ``app`` from the environment
variables the test sets.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from sqlmodel import Field, create_engine, select

from fastapi_tenancy import Tenancy, TenantScoped, get_current_tenant, get_tenant_context
from fastapi_tenancy import with_tenant as bind_tenant
from fastapi_tenancy.integrations.celery import TenantTask

WORKER_ENV = "TENANCY_CELERY_WORKER"  # "broker|queue|database URL", set only for the worker


class CeleryNote(TenantScoped, table=True):
    __tablename__ = "celery_note"

    id: int | None = Field(default=None, primary_key=True)
    text: str = Field(max_length=100)


def create_celery_app(broker_url: str, queue: str, database_url: str) -> Celery:
    app = Celery("tenancy_tests", broker=broker_url, backend=broker_url, task_cls=TenantTask)
    app.conf.update(
        task_default_queue=queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    tenancy = Tenancy(create_engine(database_url), resolvers=[])

    @app.task(shared=False, name="tenancy_tests.whoami")
    def whoami() -> dict[str, Any]:
        context = get_tenant_context()
        return {
            "tenant": None if context is None else context.id,
            "source": None if context is None else context.source,
        }

    @app.task(shared=False, name="tenancy_tests.note")
    def note(text: str) -> dict[str, Any]:
        """Write a note through a scoped session and answer the notes this tenant sees."""
        with tenancy.session() as session:
            session.add(CeleryNote(text=text))
            session.commit()
            visible = session.exec(select(CeleryNote.text).order_by(CeleryNote.id)).all()
        return {"tenant": get_current_tenant(), "visible": list(visible)}

    @app.task(shared=False, name="tenancy_tests.ping", tenantless=True)
    def ping() -> dict[str, Any]:
        return {"tenant": get_current_tenant()}

    @app.task(shared=False, name="tenancy_tests.count_notes", tenantless=True)
    def count_notes() -> int:
        """A tenant-less task: tenant-scoped queries still fail closed in it."""
        with tenancy.session() as session:
            return len(session.exec(select(CeleryNote)).all())

    @app.task(shared=False, name="tenancy_tests.spawn")
    def spawn(text: str) -> str:
        """Queue a sub-task from inside a task: it inherits this task's tenant."""
        return str(note.delay(text).id)

    @app.task(shared=False, name="tenancy_tests.fan_out", tenantless=True)
    def fan_out(tenants: list[str], text: str) -> list[str]:
        """A tenant-less job queueing one job per tenant, each bound explicitly."""
        ids = []
        for tenant in tenants:
            with bind_tenant(tenant):
                ids.append(str(note.delay(text).id))
        return ids

    return app


if os.environ.get(WORKER_ENV):
    _broker, _queue, _database = os.environ[WORKER_ENV].split("|", 2)
    app = create_celery_app(_broker, _queue, _database)
