"""Handing the tenant to another process: ``capture()`` in the request, ``restore()`` there.

The queue stands for any message transport (a broker, a table of jobs, a subprocess's stdin):
what travels is a JSON string, so nothing but the captured dict carries the tenant.
"""

from __future__ import annotations

import json
import queue
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine, func
from sqlmodel import col, select

from docs.examples.background_threads import Ticket
from fastapi_tenancy import HeaderResolver, Tenancy, capture, get_current_tenant, restore

Jobs = queue.Queue[str]


# --8<-- [start:send]
def queue_report(jobs: Jobs, report_id: int) -> None:
    """In the request: the message carries the tenant as a plain dict."""
    jobs.put(json.dumps({"report": report_id, "tenant": capture()}))


# --8<-- [end:send]


# --8<-- [start:receive]
def handle_next(tenancy: Tenancy, jobs: Jobs) -> dict[str, Any]:
    """In the worker: bind the message's tenant, then work as that tenant."""
    message = json.loads(jobs.get())
    with restore(message["tenant"]):  # raises, and runs nothing, if it cannot be restored
        return build_report(tenancy, message["report"])


# --8<-- [end:receive]


def build_report(tenancy: Tenancy, report_id: int) -> dict[str, Any]:
    with tenancy.session() as session:
        open_tickets = session.exec(
            select(func.count(col(Ticket.id))).where(col(Ticket.open))
        ).one()
    return {"report": report_id, "tenant": get_current_tenant(), "open_tickets": open_tickets}


def create_app(engine: Engine, jobs: Jobs) -> FastAPI:
    app = FastAPI()
    Tenancy(engine, resolvers=[HeaderResolver()]).install(app)

    @app.post("/reports/{report_id}", status_code=202)
    def request_report(report_id: int) -> None:
        queue_report(jobs, report_id)

    return app
