"""The tenant on log lines: the logging filter, audit records, and the structlog processor."""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import create_engine

from fastapi_tenancy import (
    AdminSession,
    HeaderResolver,
    Tenancy,
    TenantLogFilter,
    mutable_tenant,
    with_tenant,
    without_tenant,
)
from fastapi_tenancy.logging import AUDIT_FIELDS, AUDIT_LOGGER, structlog_processor


class Capture(logging.Handler):
    """Keeps the records it handles, after its filters ran."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    handler.addFilter(TenantLogFilter())
    logger = logging.getLogger("tests.logging")
    audit = logging.getLogger(AUDIT_LOGGER)
    saved = [(log, log.level, log.propagate) for log in (logger, audit)]
    for log in (logger, audit):
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        yield handler
    finally:
        for log, level, propagate in saved:
            log.removeHandler(handler)
            log.setLevel(level)
            log.propagate = propagate


def test_the_filter_adds_the_bound_tenant_and_its_source_to_each_record(
    captured: Capture,
) -> None:
    log = logging.getLogger("tests.logging")
    log.info("outside")
    with with_tenant("acme", source="cron"):
        log.info("inside")
    log.info("after")
    assert [(r.getMessage(), r.tenant, r.tenant_source) for r in captured.records] == [
        ("outside", "-", "-"),
        ("inside", "acme", "cron"),
        ("after", "-", "-"),
    ]


def test_the_filter_keeps_a_tenant_given_in_extra_and_never_drops_records() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.tenant = "given"
    with with_tenant("acme"):
        assert TenantLogFilter().filter(record) is True
    assert record.tenant == "given"


def test_the_filter_default_for_no_tenant_is_configurable() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    TenantLogFilter(default="none").filter(record)
    assert (record.tenant, record.tenant_source) == ("none", "none")


def test_the_filter_works_from_dict_config_and_in_a_format_string() -> None:
    stream = io.StringIO()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"tenant": {"()": "fastapi_tenancy.logging.TenantLogFilter"}},
            "formatters": {"plain": {"format": "%(tenant)s|%(tenant_source)s|%(message)s"}},
            "handlers": {
                "memory": {
                    "class": "logging.StreamHandler",
                    "stream": stream,
                    "filters": ["tenant"],
                    "formatter": "plain",
                }
            },
            "loggers": {
                "tests.dictconfig": {"handlers": ["memory"], "level": "INFO", "propagate": False}
            },
        }
    )
    log = logging.getLogger("tests.dictconfig")
    try:
        with with_tenant("globex", source="header"):
            log.info("hello")
        log.info("bye")
    finally:
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()
    assert stream.getvalue().splitlines() == ["globex|header|hello", "-|-|bye"]


def test_audit_records_carry_every_audit_field(captured: Capture) -> None:
    with with_tenant("acme"), mutable_tenant(reason="merging accounts"):
        pass
    with without_tenant(reason="nightly report"):
        pass
    mutable, bypass = captured.records
    assert {field: getattr(mutable, field) for field in AUDIT_FIELDS} == {
        "tenancy_event": "mutable_tenant",
        "tenancy_principal": None,
        "tenancy_tenant": "acme",
        "tenancy_path": None,
        "tenancy_reason": "merging accounts",
        "tenancy_tables": None,
        "tenancy_scopes": None,
    }
    assert bypass.tenancy_event == "without_tenant"
    assert bypass.tenancy_reason == "nightly report"
    assert bypass.tenancy_tenant is None


def test_an_audited_admin_bypass_names_principal_tenant_and_path(captured: Capture) -> None:
    import jwt

    from fastapi_tenancy import JWTClaimResolver

    secret = "a-logging-test-secret-long-enough-for-hs256"
    tenancy = Tenancy(
        create_engine("sqlite://"),
        resolvers=[JWTClaimResolver(key=secret, algorithms=["HS256"])],
        require_tenant=False,
        is_admin=lambda context: "admin" in context.claims.get("roles", ()),
    )
    app = FastAPI()
    tenancy.install(app)

    @app.get("/admin/things")
    def things(session: AdminSession) -> list[str]:
        return []

    token = jwt.encode({"sub": "root@example.test", "roles": ["admin"], "exp": 2**31}, secret)
    with TestClient(app) as client:
        r = client.get("/admin/things", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    (record,) = [r for r in captured.records if r.name == AUDIT_LOGGER]
    assert record.tenancy_event == "admin_bypass"
    assert record.tenancy_principal == "root@example.test"
    assert record.tenancy_path == "/admin/things"
    assert record.tenancy_tenant is None
    assert record.tenant == "-"


def test_records_logged_by_a_route_carry_the_requests_tenant(captured: Capture) -> None:
    app = FastAPI()
    Tenancy(create_engine("sqlite://"), resolvers=[HeaderResolver()]).install(app)

    @app.get("/hello")
    def hello() -> None:
        logging.getLogger("tests.logging").info("in the route")

    with TestClient(app) as client:
        for tenant in ("acme", "globex"):
            assert client.get("/hello", headers={"X-Tenant-ID": tenant}).status_code == 200
    assert [(r.tenant, r.tenant_source) for r in captured.records] == [
        ("acme", "header"),
        ("globex", "header"),
    ]


def test_the_structlog_processor_adds_the_tenant_only_when_one_is_bound() -> None:
    event: dict[str, Any] = {"event": "hi"}
    assert structlog_processor(None, "info", event) == {"event": "hi"}
    with with_tenant("acme", source="jwt"):
        assert structlog_processor(None, "info", {"event": "hi"}) == {
            "event": "hi",
            "tenant": "acme",
            "tenant_source": "jwt",
        }
        kept = structlog_processor(None, "info", {"event": "hi", "tenant": "given"})
    assert kept["tenant"] == "given"


def test_importing_the_logging_module_does_not_import_structlog() -> None:
    import subprocess
    import sys

    code = "import sys, fastapi_tenancy.logging; print('structlog' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
