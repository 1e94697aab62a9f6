"""docs/models-and-scoping.md, typed tenant keys: organizations keyed by UUID, end to end.

The tenants are the rows of the app's own ``tk_organization`` table, and every tenant table
points at it with a UUID foreign key. A bearer token names the organization in its ``org``
claim; the kit parses the claim as a UUID, looks the organization up (unknown: 404, inactive:
403) and scopes the request's session to it. tests/docs/test_typed_keys_docs.py runs this app
on SQLite, PostgreSQL and MariaDB, and on PostgreSQL with row-level security on the schema that
docs/examples/typed_keys_migrations/tk_0001_organizations.py migrates.
"""

# No "from __future__ import annotations": SQLModel resolves its fields from real annotations.

from uuid import UUID, uuid4

from fastapi import FastAPI, HTTPException
from sqlalchemy import Engine, MetaData
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, select

from fastapi_tenancy import (
    CurrentTenant,
    JWTClaimResolver,
    Tenancy,
    TenantScoped,
    TenantSession,
    TenantTableLookup,
    tenant_field,
    tenant_foreign_key,
    tenant_unique,
    with_tenant,
)

typed_keys_registry = registry()


class TypedKeysModel(SQLModel, registry=typed_keys_registry):
    """Base of this sample's tables, in a registry of their own (an app inherits SQLModel)."""


metadata: MetaData = typed_keys_registry.metadata


# --8<-- [start:organization]
class Organization(TypedKeysModel, table=True):
    """The tenants table: one row per tenant, keyed by a UUID."""

    __tablename__ = "tk_organization"

    id: UUID = Field(default_factory=uuid4, primary_key=True)
    slug: str = Field(max_length=63, unique=True)
    active: bool = True

    @property
    def __tenant_key__(self) -> UUID:
        """The key an organization stands for: with_tenant(org) binds org.id."""
        return self.id


# --8<-- [end:organization]


# --8<-- [start:models]
class OrgScoped(TypedKeysModel, TenantScoped[UUID]):
    """The base of the tenant tables: their tenant_id is a foreign key to tk_organization."""

    tenant_id: UUID = tenant_field(UUID, foreign_key="tk_organization.id")


class Customer(OrgScoped, table=True):
    __tablename__ = "tk_customer"
    __table_args__ = (
        tenant_unique("email"),  # UNIQUE (tenant_id, email)
        tenant_unique("id"),  # UNIQUE (tenant_id, id): what the invoices' foreign key points at
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    email: str = Field(max_length=200)


class Invoice(OrgScoped, table=True):
    __tablename__ = "tk_invoice"
    # FOREIGN KEY (tenant_id, customer_id) REFERENCES tk_customer (tenant_id, id)
    __table_args__ = (tenant_foreign_key("customer_id", "tk_customer.id"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(index=True)
    total_cents: int


# --8<-- [end:models]


# --8<-- [start:bodies]
class CustomerCreate(SQLModel):
    """What a client sends: no tenant_id (one sent anyway is ignored)."""

    name: str = Field(max_length=100)
    email: str = Field(max_length=200)


class CustomerRecord(CustomerCreate):
    """A row of an export from another system, which names its organization."""

    tenant_id: UUID


class CustomerUpdate(SQLModel):
    name: str | None = Field(default=None, max_length=100)
    email: str | None = Field(default=None, max_length=200)


class InvoiceCreate(SQLModel):
    customer_id: int
    total_cents: int


# --8<-- [end:bodies]


def create_tenancy(engine: Engine, *, jwt_secret: str, rls: bool = False) -> Tenancy:
    """The app's Tenancy; ``rls=True`` on PostgreSQL, on the migration's policies."""
    # --8<-- [start:tenancy]
    tenancy = Tenancy(
        engine,
        resolvers=[JWTClaimResolver(claim="org", key=jwt_secret, algorithms=["HS256"])],
        key_type=UUID,  # the claim is parsed as a UUID, in its one spelling: else 400
        lookup=TenantTableLookup(Organization, key="id", active="active"),
        rls=rls,  # PostgreSQL: the policies compare tenant_id with the session's UUID
    )
    # --8<-- [end:tenancy]
    return tenancy


def create_app(engine: Engine, *, jwt_secret: str, rls: bool = False) -> FastAPI:
    """The organizations' customers and invoices, on ``engine``."""
    tenancy = create_tenancy(engine, jwt_secret=jwt_secret, rls=rls)
    app = FastAPI()
    tenancy.install(app)
    app.state.tenancy = tenancy

    @app.get("/me")
    def me(tenant: CurrentTenant) -> dict[str, str]:
        organization: Organization = tenant.record  # what the lookup found: read it only
        return {"org": str(tenant.id), "slug": organization.slug}

    # --8<-- [start:create]
    @app.post("/customers", status_code=201)
    def create_customer(body: CustomerCreate, session: TenantSession) -> Customer:
        customer = Customer.model_validate(body)  # no tenant_id needed: stamped at flush
        session.add(customer)
        session.commit()
        session.refresh(customer)
        return customer

    @app.post("/customers/import", status_code=201)
    def import_records(records: list[CustomerRecord], session: TenantSession) -> list[Customer]:
        customers = [Customer.model_validate(record) for record in records]
        session.add_all(customers)  # one naming another organization: 403, none written
        session.commit()
        for customer in customers:
            session.refresh(customer)
        return customers

    # --8<-- [end:create]

    # --8<-- [start:routes]
    @app.get("/customers")
    def list_customers(session: TenantSession) -> list[Customer]:
        return list(session.exec(select(Customer).order_by(col(Customer.id))).all())

    @app.get("/customers/{customer_id}")
    def read_customer(customer_id: int, session: TenantSession) -> Customer:
        customer = session.get(Customer, customer_id)  # another organization's: None
        if customer is None:
            raise HTTPException(status_code=404, detail="No such customer.")
        return customer

    @app.patch("/customers/{customer_id}")
    def update_customer(customer_id: int, body: CustomerUpdate, session: TenantSession) -> Customer:
        customer = session.get(Customer, customer_id)
        if customer is None:
            raise HTTPException(status_code=404, detail="No such customer.")
        customer.sqlmodel_update(body.model_dump(exclude_unset=True))
        session.add(customer)
        session.commit()
        session.refresh(customer)
        return customer

    # --8<-- [end:routes]

    @app.post("/invoices", status_code=201)
    def create_invoice(body: InvoiceCreate, session: TenantSession) -> Invoice:
        invoice = Invoice.model_validate(body)  # another organization's customer: 403
        session.add(invoice)
        session.commit()
        session.refresh(invoice)
        return invoice

    @app.get("/invoices")
    def list_invoices(session: TenantSession) -> list[Invoice]:
        return list(session.exec(select(Invoice).order_by(col(Invoice.id))).all())

    return app


def create_organization(engine: Engine, slug: str, *, active: bool = True) -> Organization:
    """A new tenant: a row of the tenants table, which no tenant session scopes."""
    with Session(engine, expire_on_commit=False) as session:
        organization = Organization(slug=slug, active=active)
        session.add(organization)
        session.commit()
        return organization


# --8<-- [start:script]
def import_customers(tenancy: Tenancy, org: Organization, rows: list[dict[str, str]]) -> int:
    """A job outside any request: the organization record itself names the tenant."""
    with with_tenant(org), tenancy.session() as session:
        for row in rows:
            session.add(Customer.model_validate(row))  # stamped with org.id at flush
        session.commit()
        return len(session.exec(select(Customer)).all())


def customer_names(tenancy: Tenancy, org: Organization) -> list[str]:
    """The same without binding anything: a session scoped to the record it is given."""
    with tenancy.session(tenant=org) as session:
        return list(session.exec(select(Customer.name).order_by(Customer.name)).all())


# --8<-- [end:script]
