"""WebSockets: the tenant is resolved from the handshake and bound for the connection's life."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, select

from fastapi_tenancy import (
    HeaderResolver,
    JWTClaimResolver,
    Tenancy,
    TenantScoped,
    get_current_tenant,
    get_tenant_context,
)

SECRET = "a-websocket-test-secret-long-enough-for-hs256"


class Message(TenantScoped, table=True):
    __tablename__ = "websocket_message"

    id: int | None = Field(default=None, primary_key=True)
    text: str = Field(max_length=100)


def build_app(engine: Engine | AsyncEngine) -> FastAPI:
    """A chat-like app: ``add:<text>`` stores a message, ``list`` answers the tenant's messages,
    ``whoami`` the bound tenant and its source."""
    tenancy = Tenancy(
        engine,
        resolvers=[JWTClaimResolver(key=SECRET, algorithms=["HS256"]), HeaderResolver()],
        trust_unverified_sources=True,  # a bare header names the tenant in these tests
    )
    app = FastAPI()
    tenancy.install(app)

    def add_sync(text: str) -> None:
        with tenancy.session() as session:
            session.add(Message(text=text))
            session.commit()

    def list_sync() -> list[list[str]]:
        with tenancy.session() as session:
            rows = session.exec(select(Message).order_by(Message.id)).all()
            return [[row.tenant_id, row.text] for row in rows]

    async def add(text: str) -> None:
        if not tenancy.is_async:
            await anyio.to_thread.run_sync(add_sync, text)  # copies the context: same tenant
            return
        async with tenancy.async_session() as session:
            session.add(Message(text=text))
            await session.commit()

    async def listing() -> list[list[str]]:
        if not tenancy.is_async:
            return await anyio.to_thread.run_sync(list_sync)
        async with tenancy.async_session() as session:
            rows = (await session.exec(select(Message).order_by(Message.id))).all()
            return [[row.tenant_id, row.text] for row in rows]

    @app.websocket("/ws")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                command = await websocket.receive_text()
                if command == "whoami":
                    context = get_tenant_context()
                    assert context is not None
                    await websocket.send_json({"tenant": context.id, "source": context.source})
                elif command.startswith("add:"):
                    await add(command.removeprefix("add:"))
                    await websocket.send_json({"ok": True})
                elif command == "list":
                    await websocket.send_json(await listing())
        except WebSocketDisconnect:
            pass

    return app


@pytest.fixture
def tenancy_app(backend: str, any_engine: Engine | AsyncEngine, create_tables: Any) -> FastAPI:
    # ``backend`` is named so that the database fixtures parametrize this fixture's tests.
    create_tables(any_engine, Message)
    return build_app(any_engine)


def ask(websocket: Any, command: str) -> Any:
    websocket.send_text(command)
    return websocket.receive_json()


def test_two_connections_each_see_their_own_tenant_and_rows_for_their_whole_life(
    tenant_client: Callable[..., TestClient],
) -> None:
    acme = tenant_client("acme")  # the tenant goes in a token claim
    globex = tenant_client("globex", via="header")
    with acme.websocket_connect("/ws") as a, globex.websocket_connect("/ws") as g:
        for round_ in range(3):
            assert ask(a, f"add:a{round_}") == {"ok": True}
            assert ask(g, "whoami") == {"tenant": "globex", "source": "header"}
            assert ask(g, f"add:g{round_}") == {"ok": True}
            assert ask(a, "whoami") == {"tenant": "acme", "source": "jwt"}
        assert ask(a, "list") == [["acme", "a0"], ["acme", "a1"], ["acme", "a2"]]
        assert ask(g, "list") == [["globex", "g0"], ["globex", "g1"], ["globex", "g2"]]
    assert get_current_tenant() is None


@pytest.mark.backends("sqlite")
def test_a_handshake_without_a_tenant_is_closed_with_1008(
    tenant_client: Callable[..., TestClient],
) -> None:
    client = tenant_client()
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws"):
        pass  # pragma: no cover - the handshake is refused
    assert refused.value.code == 1008
    assert refused.value.reason == "tenant_required"


@pytest.mark.backends("sqlite")
def test_a_handshake_with_a_bad_token_is_closed_with_1008(
    tenant_client: Callable[..., TestClient], tenancy_token: Callable[..., str]
) -> None:
    expired = tenancy_token("acme", expires_in=-60)
    client = tenant_client(headers={"Authorization": f"Bearer {expired}"})
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws"):
        pass  # pragma: no cover - the handshake is refused
    assert refused.value.code == 1008
    assert refused.value.reason == "invalid_token"


@pytest.mark.backends("sqlite")
def test_a_header_contradicting_the_token_is_refused_at_the_handshake(
    tenant_client: Callable[..., TestClient],
) -> None:
    client = tenant_client("acme", headers={"X-Tenant-ID": "globex"})
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws"):
        pass  # pragma: no cover - the handshake is refused
    assert refused.value.code == 1008
    assert refused.value.reason == "tenant_mismatch"
