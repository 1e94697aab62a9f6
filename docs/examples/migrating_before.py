"""docs/migrating.md, before: a plain SQLModel app that filters on tenant_id by hand.

Every query must remember ``where tenant_id == tenant``. One route forgets, and any tenant
can read any other tenant's invoice by guessing its id.
"""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from sqlalchemy import Engine, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, select


class LegacyModel(SQLModel, registry=registry()):
    """This app's own registry: the kit refuses to start beside a table with a tenant_id column
    that is not a tenant model, and the tests run this app beside the migrated one."""


# --8<-- [start:models]
class Invoice(LegacyModel, table=True):
    __tablename__ = "legacy_invoice"
    __table_args__ = (UniqueConstraint("tenant_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str | None = Field(default=None, index=True)
    number: str = Field(max_length=20)
    amount: int  # cents


# --8<-- [end:models]


class InvoiceIn(SQLModel):
    number: str
    amount: int


TenantId = Annotated[str, Header(alias="X-Tenant-ID")]


# --8<-- [start:app]
def create_app(engine: Engine) -> FastAPI:
    def get_session() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    SessionDep = Annotated[Session, Depends(get_session)]
    app = FastAPI()

    @app.get("/invoices")
    def list_invoices(tenant: TenantId, session: SessionDep) -> list[Invoice]:
        statement = select(Invoice).where(Invoice.tenant_id == tenant).order_by(col(Invoice.id))
        return list(session.exec(statement).all())

    @app.get("/invoices/{invoice_id}")
    def read_invoice(invoice_id: int, session: SessionDep) -> Invoice:
        invoice = session.get(Invoice, invoice_id)  # the forgotten filter: any tenant's row
        if invoice is None:
            raise HTTPException(404, "Invoice not found.")
        return invoice

    @app.post("/invoices", status_code=201)
    def create_invoice(body: InvoiceIn, tenant: TenantId, session: SessionDep) -> Invoice:
        invoice = Invoice(number=body.number, amount=body.amount, tenant_id=tenant)
        session.add(invoice)
        session.commit()
        session.refresh(invoice)
        return invoice

    return app


# --8<-- [end:app]
