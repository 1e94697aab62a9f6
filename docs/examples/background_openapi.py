"""The resolvers' security schemes in the OpenAPI document: docs/background-work.md."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import Engine

from fastapi_tenancy import HeaderResolver, JWTClaimResolver, Tenancy


def create_app(engine: Engine, *, secret: str) -> FastAPI:
    app = FastAPI()
    Tenancy(
        engine,
        resolvers=[JWTClaimResolver(key=secret, algorithms=["HS256"]), HeaderResolver()],
        exclude_paths=("/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"),
        trust_unverified_sources=True,  # a sample: give membership= to a real app
    ).install(app)  # adds a BearerToken and an X-Tenant-ID scheme; /docs offers "Authorize"

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/tickets")
    def list_tickets() -> list[str]:
        return []

    return app
