"""Every statement of a tenant session audited and tagged with its tenant and principal.

``Tenancy(..., audit_statements=True, tag_statements=True)``; a handler writes each
``statement_scoped`` record as one JSON line, for an audit store.
"""

from __future__ import annotations

import json
import logging
from typing import TextIO

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Field, SQLModel, select

from fastapi_tenancy import JWTClaimResolver, Tenancy, TenantScoped, TenantSession


class Ledger(TenantScoped, table=True):
    __tablename__ = "audit_ledger"

    id: int | None = Field(default=None, primary_key=True)
    memo: str = Field(max_length=100)


class LedgerIn(SQLModel):
    memo: str


def create_app(engine: Engine, *, jwt_secret: str) -> FastAPI:
    # --8<-- [start:tenancy]
    tenancy = Tenancy(
        engine,
        resolvers=[JWTClaimResolver(claim="tenant", key=jwt_secret, algorithms=["HS256"])],
        principal_claim="sub",  # the default: who the records and tags name
        audit_statements=True,  # one record per statement on fastapi_tenancy.audit
        tag_statements=True,  # /*principal='...',tenant='...'*/ at the end of its SQL
    )
    # --8<-- [end:tenancy]
    app = FastAPI()
    tenancy.install(app)

    @app.get("/ledger")
    def entries(session: TenantSession) -> list[Ledger]:
        return list(session.exec(select(Ledger)).all())

    @app.post("/ledger", status_code=201)
    def add(entry: LedgerIn, session: TenantSession) -> Ledger:
        row = Ledger(memo=entry.memo)
        session.add(row)
        session.commit()
        return row

    return app


# --8<-- [start:records]
class StatementRecord(logging.Formatter):
    """One JSON line per statement the wall let through."""

    def format(self, record: logging.LogRecord) -> str:
        fields = vars(record)  # the record's tenancy_* attributes
        return json.dumps(
            {
                "tenant": str(fields["tenancy_tenant"]),
                "principal": fields["tenancy_principal"],
                "tables": fields["tenancy_tables"],
                "scopes": fields["tenancy_scopes"],
            }
        )


def write_statement_records(stream: TextIO) -> logging.Handler:
    """Send the statement records of ``fastapi_tenancy.audit`` to ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(StatementRecord())
    handler.addFilter(lambda record: getattr(record, "tenancy_event", "") == "statement_scoped")
    audit = logging.getLogger("fastapi_tenancy.audit")
    audit.setLevel(logging.INFO)
    audit.addHandler(handler)
    return handler


# --8<-- [end:records]
