"""docs/operations.md's statement audit sample: each statement of a request leaves one JSON
record naming its tenant, principal, tables and scopes, and reaches the database tagged."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from docs.examples import statement_audit

SECRET = "a-statement-audit-secret-of-32-bytes-or-more"


def token(**claims: Any) -> dict[str, str]:
    payload = {"exp": int(time.time()) + 300, **claims}
    return {"Authorization": f"Bearer {jwt.encode(payload, SECRET, algorithm='HS256')}"}


@pytest.fixture
def records() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = statement_audit.write_statement_records(stream)
    audit = logging.getLogger("fastapi_tenancy.audit")
    try:
        yield stream
    finally:
        audit.removeHandler(handler)
        audit.setLevel(logging.NOTSET)


def test_each_statement_is_recorded_and_tagged(
    engine: Engine, create_tables: Any, records: io.StringIO
) -> None:
    create_tables(engine, statement_audit.Ledger)
    client = TestClient(statement_audit.create_app(engine, jwt_secret=SECRET))
    sent: list[str] = []

    def after(conn, cursor, statement, parameters, context, executemany) -> None:
        sent.append(statement)

    event.listen(engine, "after_cursor_execute", after)
    try:
        ann = token(sub="ann@acme.test", tenant="acme")
        assert client.post("/ledger", json={"memo": "rent"}, headers=ann).status_code == 201
        bob = token(sub="bob@globex.test", tenant="globex")
        assert client.get("/ledger", headers=bob).json() == []
    finally:
        event.remove(engine, "after_cursor_execute", after)

    lines = [json.loads(line) for line in records.getvalue().splitlines()]
    assert lines == [
        {
            "tenant": "acme",
            "principal": "ann@acme.test",
            "tables": ["audit_ledger"],
            "scopes": ["writes audit_ledger.tenant_id = :tenant_id (the tenant)"],
        },
        {
            "tenant": "globex",
            "principal": "bob@globex.test",
            "tables": ["audit_ledger"],
            "scopes": ["audit_ledger.tenant_id = :fastapi_tenancy_tenant_id"],
        },
    ]
    tags = [sql[sql.rindex(" /*") :].replace("%%", "%") for sql in sent]
    assert tags == [
        " /*principal='ann%40acme.test',tenant='acme'*/",
        " /*principal='bob%40globex.test',tenant='globex'*/",
    ]
