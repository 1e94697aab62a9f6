"""docs/resolvers.md: from a key to a tenant record, and members only.

A ``tenants`` table says which tenants exist and which are active; a ``memberships`` table
says who may act in which. Keys come from a token, or from the ``X-Tenant-ID`` header for
users in several tenants.
"""

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, select

from fastapi_tenancy import (
    CurrentTenant,
    HeaderResolver,
    JWTClaimResolver,
    LookupCache,
    Tenancy,
    TenantContext,
    TenantKey,
    TenantTableLookup,
)


# --8<-- [start:models]
class Tenant(SQLModel, table=True):
    __tablename__ = "rs_tenant"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(sa_type=TenantKey, unique=True, max_length=63)
    name: str = Field(max_length=100)
    active: bool = True


class Membership(SQLModel, table=True):
    __tablename__ = "rs_membership"

    user: str = Field(primary_key=True, max_length=100)  # the token's "sub"
    tenant: str = Field(sa_type=TenantKey, primary_key=True, max_length=63)


# --8<-- [end:models]


def create_app(engine: Engine, *, jwt_secret: str) -> FastAPI:
    # --8<-- [start:tenancy]
    def is_member(context: TenantContext) -> bool:
        """A sync predicate runs in the thread pool, so it may query the database."""
        user = context.claims.get("sub")
        if not isinstance(user, str):
            return False  # no verified user: a header alone makes nobody a member
        with Session(engine) as session:
            return session.get(Membership, (user, context.id)) is not None

    tenancy = Tenancy(
        engine,
        resolvers=[
            JWTClaimResolver(key=jwt_secret, algorithms=["HS256"]),
            HeaderResolver("X-Tenant-ID"),
        ],
        lookup=TenantTableLookup(Tenant, key="slug", active="active"),
        lookup_cache=LookupCache(maxsize=1000, ttl=60),
        membership=is_member,
    )
    # --8<-- [end:tenancy]
    app = FastAPI()
    tenancy.install(app)
    app.state.tenancy = tenancy

    # --8<-- [start:route]
    @app.get("/tenant")
    def tenant(context: CurrentTenant) -> dict[str, str]:
        record: Tenant = context.record  # what the lookup found, shared: read it only
        return {"slug": record.slug, "name": record.name}

    # --8<-- [end:route]
    return app


def create_preloading_app(engine: Engine) -> FastAPI:
    """Many tenants: every one loaded as the app starts, none looked up on a request."""
    # --8<-- [start:preload]
    tenancy = Tenancy(
        engine,
        resolvers=[HeaderResolver("X-Tenant-ID")],
        lookup=TenantTableLookup(Tenant, key="slug", active="active"),
        lookup_cache=LookupCache(preload=True, ttl=60.0),
    )
    # --8<-- [end:preload]
    app = FastAPI()
    tenancy.install(app)
    app.state.tenancy = tenancy

    @app.get("/tenant")
    def tenant(context: CurrentTenant) -> dict[str, str]:
        record: Tenant = context.record
        return {"slug": record.slug, "name": record.name}

    return app


# --8<-- [start:deactivate]
def deactivate_tenant(engine: Engine, tenancy: Tenancy, slug: str) -> None:
    """Switch a tenant off now, rather than when its cached lookup expires."""
    with Session(engine) as session:
        record = session.exec(select(Tenant).where(Tenant.slug == slug)).one()
        record.active = False
        session.add(record)
        session.commit()
    if tenancy.lookup is not None:
        tenancy.lookup.invalidate(slug)


# --8<-- [end:deactivate]
