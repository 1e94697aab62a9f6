"""docs/resolvers.md: two resolvers of your own, a function and a class.

Browsers name the tenant in the path (``/t/acme/...``); machine clients send an API key,
which a table maps to its tenant.
"""

import hashlib

import anyio.to_thread
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel
from starlette.requests import HTTPConnection

from fastapi_tenancy import (
    AmbiguousTenant,
    CallableResolver,
    CurrentTenant,
    InvalidToken,
    Resolution,
    Tenancy,
    TenancyUnavailable,
)


# --8<-- [start:path]
def tenant_from_path(conn: HTTPConnection) -> str | None:
    """``/t/acme/...`` names acme; other paths have no opinion. Runs on the event loop: no I/O."""
    path = conn.url.path
    if not path.startswith("/t/"):
        return None
    return path.removeprefix("/t/").partition("/")[0]


# --8<-- [end:path]


# --8<-- [start:api_key]
class ApiKey(SQLModel, table=True):
    """A machine client's key; only its SHA-256 is stored."""

    __tablename__ = "rs_api_key"
    __tenancy_exempt__ = True  # read before any tenant is bound: not a tenant model

    key_hash: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(max_length=63)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyResolver:
    """The tenant of the API key in the ``X-API-Key`` header."""

    source = "api_key"

    def __init__(self, engine: Engine, header: str = "X-API-Key") -> None:
        self.engine = engine
        self.header = header

    async def resolve(self, conn: HTTPConnection) -> Resolution | None:
        keys = conn.headers.getlist(self.header)
        if not keys:
            return None  # no opinion: another resolver may name the tenant
        if len(set(keys)) > 1:
            raise AmbiguousTenant(f"The {self.header} header was sent with different values.")
        tenant = await anyio.to_thread.run_sync(self._tenant_of, keys[0])
        if tenant is None:
            raise InvalidToken("The API key is not valid.")  # present but bad: never ignored
        return Resolution(tenant, self.source)

    def _tenant_of(self, key: str) -> str | None:
        try:
            with Session(self.engine) as session:
                api_key = session.get(ApiKey, hash_api_key(key))
        except SQLAlchemyError as error:
            raise TenancyUnavailable() from error  # fail closed
        return None if api_key is None else api_key.tenant_id


# --8<-- [end:api_key]


def create_app(engine: Engine) -> FastAPI:
    # --8<-- [start:tenancy]
    tenancy = Tenancy(
        engine,
        resolvers=[
            ApiKeyResolver(engine),
            CallableResolver(tenant_from_path, source="path"),
        ],
    )
    # --8<-- [end:tenancy]
    app = FastAPI()
    tenancy.install(app)

    @app.get("/whoami")
    @app.get("/t/{tenant_key}/whoami")
    def whoami(tenant: CurrentTenant) -> dict[str, str | None]:
        return {"tenant": tenant.id, "source": tenant.source}

    return app
