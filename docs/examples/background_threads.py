"""Work that leaves the request, in one process: docs/background-work.md.

A help desk: each tenant files tickets. ``GET /tickets/export`` builds its export in a thread
pool that copies no contextvars, so it hands the tenant over with ``carry_tenant``; a script
closes one tenant's tickets with ``as_tenant``. The other background samples use the same
``Ticket`` model.
"""

# No "from __future__ import annotations": SQLModel reads the real annotations.

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine, MetaData, update
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, col, select

from fastapi_tenancy import (
    HeaderResolver,
    Tenancy,
    TenantScoped,
    TenantSession,
    as_tenant,
    carry_tenant,
)

background_registry = registry()


class BackgroundModel(SQLModel, registry=background_registry):
    """Base of the background samples' tables: a registry of their own."""


metadata: MetaData = background_registry.metadata


class Ticket(BackgroundModel, TenantScoped, table=True):
    __tablename__ = "background_ticket"

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=100)
    open: bool = True


class TicketIn(SQLModel):
    title: str


def ticket_titles(tenancy: Tenancy) -> list[str]:
    """The bound tenant's ticket titles; blocking, so it runs in a thread."""
    with tenancy.session() as session:
        return list(session.exec(select(Ticket.title).order_by(col(Ticket.id))).all())


def create_app(engine: Engine) -> FastAPI:
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()])
    pool = ThreadPoolExecutor(max_workers=4)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            pool.shutdown()

    app = FastAPI(lifespan=lifespan)
    tenancy.install(app)

    @app.post("/tickets", status_code=201)
    def file_ticket(body: TicketIn, session: TenantSession) -> Ticket:
        ticket = Ticket(title=body.title)
        session.add(ticket)
        session.commit()
        return ticket

    # --8<-- [start:carry]
    @app.get("/tickets/export")
    async def export_tickets() -> list[str]:
        loop = asyncio.get_running_loop()
        # The pool's threads see no tenant; carry_tenant takes the request's along.
        return await loop.run_in_executor(pool, carry_tenant(ticket_titles), tenancy)

    # --8<-- [end:carry]

    return app


# --8<-- [start:as_tenant]
@as_tenant("acme")
def close_acme_tickets(tenancy: Tenancy) -> int:
    """A scheduled job that always acts for acme."""
    with tenancy.session() as session:
        result = session.exec(update(Ticket).where(col(Ticket.open)).values(open=False))
        session.commit()
        return result.rowcount


# --8<-- [end:as_tenant]
