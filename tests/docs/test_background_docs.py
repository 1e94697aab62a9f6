"""docs/background-work.md: the tenant in thread pools, queues, Celery, websockets, logs, OpenAPI.

Two tenants file tickets; every piece of work that leaves the request must act for the tenant
that started it, and work whose tenant cannot be restored must not run at all.
"""

from __future__ import annotations

import json
import logging
import logging.config
import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import col, create_engine, select
from starlette.websockets import WebSocketDisconnect

import docs.examples.background_celery as background_celery
import docs.examples.background_openapi as background_openapi
import docs.examples.background_queue as background_queue
import docs.examples.background_threads as background_threads
import docs.examples.background_websocket as background_websocket
from docs.examples.background_logging import LOGGING
from docs.examples.background_threads import Ticket, close_acme_tickets, metadata
from fastapi_tenancy import (
    InvalidTenantKey,
    Tenancy,
    TenantRequired,
    carry_tenant,
    get_current_tenant,
    with_tenant,
    without_tenant,
)
from fastapi_tenancy.integrations.celery import TENANT_HEADER
from fastapi_tenancy.logging import structlog_processor

ACME = {"X-Tenant-ID": "acme"}
GLOBEX = {"X-Tenant-ID": "globex"}
SECRET = "a-background-test-secret-of-at-least-32-bytes"


@pytest.fixture
def tables(engine: Engine, create_tables: Any) -> Engine:
    create_tables(engine, metadata)
    return engine


@pytest.fixture
def tenancy(tables: Engine) -> Tenancy:
    """A Tenancy of the worker or script side: it resolves nothing."""
    return Tenancy(tables, resolvers=[])


@pytest.fixture
def tickets(tenancy: Tenancy) -> None:
    """acme files two tickets, globex one."""
    for tenant, titles in (("acme", ["printer jam", "vpn down"]), ("globex", ["no coffee"])):
        with with_tenant(tenant), tenancy.session() as session:
            session.add_all([Ticket(title=title) for title in titles])
            session.commit()


def open_tickets(tenancy: Tenancy) -> list[tuple[str, str]]:
    with without_tenant(reason="test snapshot"), tenancy.session() as session:
        rows = session.exec(select(Ticket).where(col(Ticket.open)).order_by(col(Ticket.id)))
        return [(t.tenant_id, t.title) for t in rows.all()]


# --------------------------------------------------------------------------------------------
# carry_tenant and as_tenant


def test_an_export_in_a_thread_pool_runs_as_the_requests_tenant(tables: Engine) -> None:
    with TestClient(background_threads.create_app(tables)) as client:
        for headers, title in ((ACME, "printer jam"), (GLOBEX, "no coffee"), (ACME, "vpn")):
            r = client.post("/tickets", json={"title": title}, headers=headers)
            assert r.status_code == 201, r.text
        assert client.get("/tickets/export", headers=ACME).json() == ["printer jam", "vpn"]
        assert client.get("/tickets/export", headers=GLOBEX).json() == ["no coffee"]


def test_a_plain_pool_thread_sees_no_tenant_and_a_carried_function_does() -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        with with_tenant("acme"):
            assert pool.submit(get_current_tenant).result() is None
            assert pool.submit(carry_tenant(get_current_tenant)).result() == "acme"
        assert pool.submit(get_current_tenant).result() is None  # nothing stays behind


def test_a_job_decorated_with_as_tenant_acts_for_that_tenant_only(
    tenancy: Tenancy, tickets: None
) -> None:
    assert close_acme_tickets(tenancy) == 2
    assert get_current_tenant() is None
    assert open_tickets(tenancy) == [("globex", "no coffee")]


# --------------------------------------------------------------------------------------------
# capture and restore


def test_a_report_queued_by_a_request_runs_as_that_tenant_in_the_worker(
    tables: Engine, tenancy: Tenancy, tickets: None
) -> None:
    jobs: background_queue.Jobs = queue.Queue()
    client = TestClient(background_queue.create_app(tables, jobs))
    assert client.post("/reports/1", headers=ACME).status_code == 202
    assert client.post("/reports/2", headers=GLOBEX).status_code == 202
    assert json.loads(jobs.queue[0])["tenant"] == {"v": 1, "tenant": "acme", "source": "header"}

    with ThreadPoolExecutor(max_workers=1) as worker:  # a thread with no tenant of its own
        done = [worker.submit(background_queue.handle_next, tenancy, jobs).result() for _ in "12"]

    assert done == [
        {"report": 1, "tenant": "acme", "open_tickets": 2},
        {"report": 2, "tenant": "globex", "open_tickets": 1},
    ]


def test_a_message_without_a_tenant_or_with_a_forged_one_is_not_run(
    tenancy: Tenancy, tickets: None
) -> None:
    jobs: background_queue.Jobs = queue.Queue()
    with without_tenant(reason="a bypass does not travel"):
        background_queue.queue_report(jobs, 3)
    jobs.put(json.dumps({"report": 4, "tenant": {"v": 1, "tenant": "ACME; --"}}))
    jobs.put(json.dumps({"report": 5, "tenant": {"v": 2, "tenant": "acme"}}))

    with pytest.raises(TenantRequired):
        background_queue.handle_next(tenancy, jobs)
    for _ in range(2):
        with pytest.raises(InvalidTenantKey):
            background_queue.handle_next(tenancy, jobs)
    assert get_current_tenant() is None


# --------------------------------------------------------------------------------------------
# Celery, eager: the tasks run in this process, with no broker and no worker


@pytest.fixture
def celery_app(tenancy: Tenancy) -> Iterator[Celery]:
    app = background_celery.create_celery_app(tenancy, "memory://")
    app.conf.update(task_always_eager=True, task_store_eager_result=False)
    yield app
    app.close()


def test_a_job_queued_by_a_request_closes_only_that_tenants_tickets(
    tables: Engine, tenancy: Tenancy, tickets: None, celery_app: Celery
) -> None:
    client = TestClient(background_celery.create_app(tables, celery_app))
    r = client.post("/tickets/close", headers=GLOBEX)
    assert r.status_code == 202, r.text
    assert open_tickets(tenancy) == [("acme", "printer jam"), ("acme", "vpn down")]


def test_a_job_with_no_tenant_or_a_forged_one_fails_before_its_body_runs(
    tenancy: Tenancy, tickets: None, celery_app: Celery
) -> None:
    before = open_tickets(tenancy)
    task = celery_app.tasks["helpdesk.close_open_tickets"]

    result = task.apply()
    assert result.failed()
    assert isinstance(result.result, TenantRequired)
    forged = task.apply(headers={TENANT_HEADER: {"v": 1, "tenant": "Not A Key"}})
    assert isinstance(forged.result, InvalidTenantKey)
    assert open_tickets(tenancy) == before


def test_a_tenantless_fan_out_queues_one_job_per_tenant(
    tenancy: Tenancy, tickets: None, celery_app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_tenancy.audit")

    result = celery_app.tasks["helpdesk.close_everywhere"].delay()

    assert sorted(result.get()) == ["acme", "globex"]
    assert open_tickets(tenancy) == []
    reasons = [getattr(r, "tenancy_reason", None) for r in caplog.records]
    assert "nightly close" in reasons


# --------------------------------------------------------------------------------------------
# WebSockets


def test_each_websocket_files_tickets_as_its_handshakes_tenant(tables: Engine) -> None:
    client = TestClient(background_websocket.create_app(tables))
    with (
        client.websocket_connect("/tickets/live", headers=ACME) as acme,
        client.websocket_connect("/tickets/live", headers=GLOBEX) as globex,
    ):
        acme.send_text("printer jam")
        assert acme.receive_json() == ["printer jam"]
        globex.send_text("no coffee")
        assert globex.receive_json() == ["no coffee"]
        acme.send_text("vpn down")
        assert acme.receive_json() == ["printer jam", "vpn down"]
    assert get_current_tenant() is None


@pytest.mark.backends("sqlite")
def test_a_websocket_handshake_without_a_tenant_is_closed_with_1008(tables: Engine) -> None:
    client = TestClient(background_websocket.create_app(tables))
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/tickets/live"):
        pass  # pragma: no cover - the handshake is refused
    assert (refused.value.code, refused.value.reason) == (1008, "tenant_required")


# --------------------------------------------------------------------------------------------
# Logs and audit


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """dictConfig changes process-wide loggers: put them back as they were."""
    root = logging.getLogger()
    audit = logging.getLogger("fastapi_tenancy.audit")
    saved = [(log, log.handlers[:], log.level, log.propagate) for log in (root, audit)]
    try:
        yield
    finally:
        for log, handlers, level, propagate in saved:
            for handler in log.handlers[:]:
                if handler not in handlers:
                    log.removeHandler(handler)
                    handler.close()
            for handler in handlers:
                if handler not in log.handlers:
                    log.addHandler(handler)
            log.setLevel(level)
            log.propagate = propagate


def test_log_lines_carry_the_tenant_and_audit_lines_their_fields(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.config.dictConfig(LOGGING)
    log = logging.getLogger("helpdesk")

    with with_tenant("acme", source="header"):
        log.info("ticket filed")
    log.info("started")
    with without_tenant(reason="nightly close"):
        pass

    assert capsys.readouterr().err.splitlines() == [
        "INFO [acme] helpdesk: ticket filed",
        "INFO [-] helpdesk: started",
        "AUDIT without_tenant principal=None tenant=None path=None reason=nightly close",
    ]


def test_the_structlog_processor_adds_the_tenant_only_when_one_is_bound() -> None:
    with with_tenant("acme", source="jwt"):
        event = structlog_processor(None, "info", {"event": "ticket filed"})
    assert event == {"event": "ticket filed", "tenant": "acme", "tenant_source": "jwt"}
    assert structlog_processor(None, "info", {"event": "started"}) == {"event": "started"}


# --------------------------------------------------------------------------------------------
# OpenAPI


def test_the_openapi_document_offers_each_resolvers_scheme() -> None:
    engine = create_engine("sqlite://")
    with TestClient(background_openapi.create_app(engine, secret=SECRET)) as client:
        document = client.get("/openapi.json").json()
    engine.dispose()

    assert document["components"]["securitySchemes"] == {
        "BearerToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "X-Tenant-ID": {"type": "apiKey", "in": "header", "name": "X-Tenant-ID"},
    }
    assert document["security"] == [{"BearerToken": []}, {"X-Tenant-ID": []}]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert "security" not in document["paths"]["/tickets"]["get"]
