"""docs/migrating.md, after: the same app on fastapi_tenancy.

The manual filters are gone, and so is the bug: ``read_invoice`` is unchanged, but its
``session.get`` now runs in a tenant session, so another tenant's id finds nothing.
"""

from fastapi import FastAPI, HTTPException
from sqlalchemy import Engine, func
from sqlmodel import Field, SQLModel, col, select

from fastapi_tenancy import (
    HeaderResolver,
    Tenancy,
    TenantScoped,
    TenantSession,
    tenant_unique,
    with_tenant,
    without_tenant,
)


# --8<-- [start:models]
class Invoice(TenantScoped, table=True):
    __tablename__ = "mig_invoice"
    __table_args__ = (tenant_unique("number"),)

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=20)
    amount: int  # cents


# --8<-- [end:models]


class InvoiceIn(SQLModel):
    number: str
    amount: int


# --8<-- [start:app]
def create_app(engine: Engine) -> FastAPI:
    tenancy = Tenancy(engine, resolvers=[HeaderResolver("X-Tenant-ID")])
    app = FastAPI()
    tenancy.install(app)
    app.state.tenancy = tenancy  # for scripts and jobs, below

    @app.get("/invoices")
    def list_invoices(session: TenantSession) -> list[Invoice]:
        return list(session.exec(select(Invoice).order_by(col(Invoice.id))).all())

    @app.get("/invoices/{invoice_id}")
    def read_invoice(invoice_id: int, session: TenantSession) -> Invoice:
        invoice = session.get(Invoice, invoice_id)  # another tenant's id: None
        if invoice is None:
            raise HTTPException(404, "Invoice not found.")
        return invoice

    @app.post("/invoices", status_code=201)
    def create_invoice(body: InvoiceIn, session: TenantSession) -> Invoice:
        invoice = Invoice(number=body.number, amount=body.amount)  # tenant_id stamped on flush
        session.add(invoice)
        session.commit()
        return invoice

    return app


# --8<-- [end:app]


# --8<-- [start:jobs]
def tenant_total(tenancy: Tenancy, tenant: str) -> int:
    """A job for one tenant: bind it, then open a session scoped like a request's."""
    with with_tenant(tenant), tenancy.session() as session:
        total = session.exec(select(func.coalesce(func.sum(Invoice.amount), 0))).one()
    return int(total)  # MariaDB sums to a Decimal


def invoices_per_tenant(tenancy: Tenancy) -> dict[str, int]:
    """An operator's report across tenants: scoping off, on purpose, and audited."""
    with without_tenant(reason="invoice report"), tenancy.session() as session:
        statement = select(Invoice.tenant_id, func.count()).group_by(Invoice.tenant_id)
        return {tenant: count for tenant, count in session.exec(statement).all()}


# --8<-- [end:jobs]
