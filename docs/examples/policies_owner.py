"""Owner-only rows (docs/policies.md): private notes inside a team, and a second row scope.

Tokens are HS256 JWTs with the tenant in ``tenant``, the user in ``sub``, the user's team in
``team`` and ``"owner"`` in ``roles`` for the tenant's own admins.
"""

# No "from __future__ import annotations": SQLModel reads the real annotations.

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import Engine, MetaData
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, select

from fastapi_tenancy import (
    JWTClaimResolver,
    Tenancy,
    TenantContext,
    TenantScoped,
    TenantSession,
    lifted_session,
    owner_field,
    row_scope_field,
)

policies_registry = registry()


class PoliciesModel(SQLModel, registry=policies_registry):
    """Base of this sample's tables: a registry of their own."""


metadata: MetaData = policies_registry.metadata


# --8<-- [start:models]
class PrivateNote(PoliciesModel, TenantScoped, table=True):
    """Seen, changed and deleted by its author only, inside the tenant."""

    __tablename__ = "policies_private_note"

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str | None = owner_field()  # the principal: the token's "sub"
    body: str = Field(max_length=200)


class TeamBoard(PoliciesModel, TenantScoped, table=True):
    """Scoped by the tenant and by the team named in the token."""

    __tablename__ = "policies_team_board"

    id: int | None = Field(default=None, primary_key=True)
    team: str | None = row_scope_field("team")
    title: str = Field(max_length=100)


# --8<-- [end:models]


# --8<-- [start:public]
class Post(PoliciesModel, TenantScoped, table=True):
    """Read by its author, and by every user of the tenant once published."""

    __tablename__ = "policies_post"

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str | None = owner_field(public="published")  # public OR owned
    published: bool = False
    title: str = Field(max_length=100)


# --8<-- [end:public]


class PostIn(SQLModel):
    title: str
    published: bool = False


class NoteIn(SQLModel):
    body: str


class BoardIn(SQLModel):
    title: str


# --8<-- [start:switch]
def is_tenant_admin(context: TenantContext) -> bool:
    return "owner" in context.claims.get("roles", ())


EveryOwner = Annotated[Session, Depends(lifted_session("owner", allow=is_tenant_admin))]
# --8<-- [end:switch]


def create_app(engine: Engine, *, secret: str) -> FastAPI:
    # --8<-- [start:tenancy]
    tenancy = Tenancy(
        engine,
        resolvers=[JWTClaimResolver(key=secret, algorithms=["HS256"])],
        row_scopes={"team": lambda context: context.claims.get("team")},
    )
    # --8<-- [end:tenancy]
    app = FastAPI()
    tenancy.install(app)

    # --8<-- [start:routes]
    @app.get("/notes")
    def my_notes(session: TenantSession) -> list[PrivateNote]:
        return list(session.exec(select(PrivateNote).order_by(col(PrivateNote.id))).all())

    @app.post("/notes", status_code=201)
    def write_note(body: NoteIn, session: TenantSession) -> PrivateNote:
        note = PrivateNote(body=body.body)  # owner_id: stamped with the principal
        session.add(note)
        session.commit()
        return note

    @app.delete("/notes/{note_id}", status_code=204)
    def delete_note(note_id: int, session: TenantSession) -> None:
        note = session.get(PrivateNote, note_id)  # another owner's note: None, as a missing one
        if note is None:
            raise HTTPException(404, "No such note.")
        session.delete(note)
        session.commit()

    @app.get("/team-notes")
    def every_note_of_the_tenant(session: EveryOwner) -> list[PrivateNote]:
        return list(session.exec(select(PrivateNote).order_by(col(PrivateNote.id))).all())

    # --8<-- [end:routes]

    @app.get("/boards")
    def boards(session: TenantSession) -> list[TeamBoard]:
        return list(session.exec(select(TeamBoard).order_by(col(TeamBoard.id))).all())

    @app.post("/boards", status_code=201)
    def add_board(body: BoardIn, session: TenantSession) -> TeamBoard:
        board = TeamBoard(title=body.title)
        session.add(board)
        session.commit()
        return board

    # --8<-- [start:public-routes]
    @app.get("/posts")
    def posts(session: TenantSession) -> list[Post]:  # mine, and everyone's published ones
        return list(session.exec(select(Post).order_by(col(Post.id))).all())

    @app.post("/posts", status_code=201)
    def write_post(body: PostIn, session: TenantSession) -> Post:
        post = Post(title=body.title, published=body.published)
        session.add(post)
        session.commit()
        return post

    @app.patch("/posts/{post_id}")
    def edit_post(post_id: int, body: PostIn, session: TenantSession) -> Post:
        post = session.get(Post, post_id)
        if post is None:
            raise HTTPException(404, "No such post.")
        post.title, post.published = body.title, body.published
        session.commit()  # another user's published post: 403 cross_scope_write
        return post

    # --8<-- [end:public-routes]

    return app
