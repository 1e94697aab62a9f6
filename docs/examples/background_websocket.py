"""A websocket bound to its handshake's tenant for its whole life: docs/background-work.md.

Each text message files a ticket; the answer is the tenant's ticket titles so far.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from sqlalchemy import Engine

from docs.examples.background_threads import Ticket, ticket_titles
from fastapi_tenancy import HeaderResolver, Tenancy


def create_app(engine: Engine) -> FastAPI:
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()])
    app = FastAPI()
    tenancy.install(app)

    def file_ticket(title: str) -> list[str]:
        with tenancy.session() as session:
            session.add(Ticket(title=title))
            session.commit()
        return ticket_titles(tenancy)

    # --8<-- [start:websocket]
    @app.websocket("/tickets/live")
    async def live_tickets(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                title = await websocket.receive_text()
                # Every message is handled as the handshake's tenant; to_thread copies it.
                titles = await anyio.to_thread.run_sync(file_ticket, title)
                await websocket.send_json(titles)
        except WebSocketDisconnect:
            pass

    # --8<-- [end:websocket]

    return app
