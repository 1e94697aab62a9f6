"""A small JWT-based notes API, the app that docs/examples/test_team_notes.py tests.

Tenants come from the token's ``tenant`` claim or, for users in several teams, the
``X-Tenant-ID`` header; a user acts only in their own teams; admins (``"admin"`` in the
token's ``roles``) may list every team's notes.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from sqlalchemy import Engine
from sqlmodel import Field, SQLModel, col, select

from fastapi_tenancy import (
    AdminSession,
    CurrentTenant,
    HeaderResolver,
    JWTClaimResolver,
    Tenancy,
    TenantContext,
    TenantScoped,
    TenantSession,
    tenant_unique,
)

MEMBERS = {
    "ann@acme.test": {"acme"},
    "bob@globex.test": {"globex"},
    "cat@both.test": {"acme", "globex"},
}


class Note(TenantScoped, table=True):
    __tablename__ = "team_note"
    __table_args__ = (tenant_unique("title"),)

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=100)


class NoteIn(SQLModel):
    title: str


def is_member(context: TenantContext) -> bool:
    return context.id in MEMBERS.get(str(context.claims.get("sub")), set())


def is_admin(context: TenantContext) -> bool:
    return "admin" in context.claims.get("roles", ())


def create_app(engine: Engine, *, secret: str) -> FastAPI:
    SQLModel.metadata.create_all(engine, tables=[Note.__table__])
    tenancy = Tenancy(
        engine,
        resolvers=[JWTClaimResolver(key=secret, algorithms=["HS256"]), HeaderResolver()],
        membership=is_member,
        is_admin=is_admin,
        require_tenant=lambda conn: not conn.url.path.startswith("/admin/"),
        exclude_paths=("/healthz", "/docs", "/openapi.json"),
    )
    app = FastAPI()
    tenancy.install(app)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/me")
    def me(tenant: CurrentTenant) -> dict[str, str | None]:
        return {"tenant": tenant.id, "user": tenant.claims.get("sub")}

    @app.get("/notes")
    def list_notes(session: TenantSession) -> list[Note]:
        return list(session.exec(select(Note).order_by(col(Note.id))).all())

    @app.post("/notes", status_code=201)
    def create_note(body: NoteIn, session: TenantSession) -> Note:
        note = Note(title=body.title)
        session.add(note)
        session.commit()
        session.refresh(note)
        return note

    @app.get("/notes/{note_id}")
    def read_note(note_id: int, session: TenantSession) -> Note:
        note = session.get(Note, note_id)
        if note is None:
            raise HTTPException(404, "No such note.")
        return note

    @app.get("/admin/notes")
    def every_note(session: AdminSession) -> list[Note]:
        return list(session.exec(select(Note).order_by(col(Note.id))).all())

    return app
