"""Getting started, step two: the tenant from a verified token, and members only.

The quick-start app trusted a header. Here the tenant comes from the ``tenant`` claim of an
HS256 bearer token; users in several tenants leave the claim out and pick one with the
``X-Tenant-ID`` header, and a membership rule decides whether they may.
"""

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Field, SQLModel, col, select

from fastapi_tenancy import (
    CurrentTenant,
    HeaderResolver,
    JWTClaimResolver,
    Tenancy,
    TenantContext,
    TenantScoped,
    TenantSession,
    tenant_unique,
)


class Document(TenantScoped, table=True):
    __tablename__ = "gs_document"
    __table_args__ = (tenant_unique("title"),)

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=100)


class DocumentIn(SQLModel):
    title: str


# --8<-- [start:membership]
MEMBERS: dict[str, set[str]] = {
    "ann@acme.test": {"acme"},
    "cat@example.test": {"acme", "globex"},
}


def is_member(context: TenantContext) -> bool:
    """Whether the token's subject belongs to the bound tenant (a table, in a real app)."""
    return context.id in MEMBERS.get(str(context.claims.get("sub")), set())


# --8<-- [end:membership]


def create_app(engine: Engine, *, jwt_secret: str) -> FastAPI:
    # --8<-- [start:tenancy]
    tenancy = Tenancy(
        engine,
        resolvers=[
            JWTClaimResolver(claim="tenant", key=jwt_secret, algorithms=["HS256"]),
            HeaderResolver("X-Tenant-ID"),
        ],
        membership=is_member,
    )
    # --8<-- [end:tenancy]
    app = FastAPI()
    tenancy.install(app)

    # --8<-- [start:routes]
    @app.get("/me")
    def me(tenant: CurrentTenant) -> dict[str, str | None]:
        return {"user": tenant.claims.get("sub"), "tenant": tenant.id, "source": tenant.source}

    @app.get("/documents")
    def list_documents(session: TenantSession) -> list[Document]:
        return list(session.exec(select(Document).order_by(col(Document.id))).all())

    @app.post("/documents", status_code=201)
    def create_document(body: DocumentIn, session: TenantSession) -> Document:
        document = Document(title=body.title)
        session.add(document)
        session.commit()
        return document

    # --8<-- [end:routes]
    return app
