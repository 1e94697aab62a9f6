"""Getting started with an AsyncEngine: the same app with async routes and sessions."""

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import Field, SQLModel, col, select

from fastapi_tenancy import AsyncTenantSession, HeaderResolver, Tenancy, TenantScoped


class Note(TenantScoped, table=True):
    __tablename__ = "gs_async_note"

    id: int | None = Field(default=None, primary_key=True)
    text: str = Field(max_length=200)


class NoteIn(SQLModel):
    text: str


# --8<-- [start:init]
async def init_db(engine: AsyncEngine) -> None:
    """Create the table (in a real app, your migrations do this)."""
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all, tables=[Note.__table__])


# --8<-- [end:init]


# --8<-- [start:app]
def create_app(engine: AsyncEngine | None = None) -> FastAPI:
    engine = engine or create_async_engine("sqlite+aiosqlite:///notes.db")
    app = FastAPI()
    Tenancy(engine, resolvers=[HeaderResolver("X-Tenant-ID")]).install(app)

    @app.get("/notes")
    async def list_notes(session: AsyncTenantSession) -> list[Note]:
        result = await session.exec(select(Note).order_by(col(Note.id)))
        return list(result.all())  # only this tenant's notes

    @app.post("/notes", status_code=201)
    async def create_note(body: NoteIn, session: AsyncTenantSession) -> Note:
        note = Note(text=body.text)  # tenant_id is stamped on flush
        session.add(note)
        await session.commit()
        return note

    return app


# --8<-- [end:app]
