"""Named row policies (docs/policies.md): archived documents hidden from everyone but the
tenant's records managers.

Tokens are HS256 JWTs with the tenant in ``tenant``, the user in ``sub`` and ``"records"`` in
``roles`` for the tenant's records managers.
"""

# No "from __future__ import annotations": SQLModel reads the real annotations.

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import ColumnElement, Engine, MetaData, false
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, select

from fastapi_tenancy import (
    JWTClaimResolver,
    RowPolicy,
    Tenancy,
    TenantContext,
    TenantScoped,
    TenantSession,
    lifted_session,
)

rows_registry = registry()


class RowsModel(SQLModel, registry=rows_registry):
    """Base of this sample's tables: a registry of their own."""


metadata: MetaData = rows_registry.metadata


# --8<-- [start:models]
def live(cls: type["Document"]) -> ColumnElement[bool]:
    """The rows a tenant's users work with: those not archived."""
    return col(cls.archived) == false()


class Document(RowsModel, TenantScoped, table=True):
    """A tenant's documents; its users read and write the live ones only."""

    __tablename__ = "policies_document"
    __row_policies__ = (RowPolicy("live", live),)

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=200)
    archived: bool = False


# --8<-- [end:models]


class DocumentIn(SQLModel):
    title: str
    archived: bool = False


# --8<-- [start:switch]
def is_records_manager(context: TenantContext) -> bool:
    return "records" in context.claims.get("roles", ())


EveryDocument = Annotated[Session, Depends(lifted_session("live", allow=is_records_manager))]
# --8<-- [end:switch]


def create_app(engine: Engine, *, secret: str) -> FastAPI:
    tenancy = Tenancy(engine, resolvers=[JWTClaimResolver(key=secret, algorithms=["HS256"])])
    app = FastAPI()
    tenancy.install(app)

    # --8<-- [start:routes]
    @app.get("/documents")
    def documents(session: TenantSession) -> list[Document]:
        return list(session.exec(select(Document).order_by(col(Document.id))).all())

    @app.post("/documents", status_code=201)
    def add_document(body: DocumentIn, session: TenantSession) -> Document:
        document = Document.model_validate(body)  # archived=True: 403 row_policy_violation
        session.add(document)
        session.commit()
        return document

    @app.post("/documents/{document_id}/archive")
    def archive(document_id: int, session: EveryDocument) -> Document:
        document = session.get(Document, document_id)
        if document is None:
            raise HTTPException(404, "No such document.")
        document.archived = True
        session.commit()
        return document

    @app.get("/archive")
    def archive_listing(session: EveryDocument) -> list[Document]:
        query = select(Document).where(col(Document.archived)).order_by(col(Document.id))
        return list(session.exec(query).all())

    # --8<-- [end:routes]

    return app
