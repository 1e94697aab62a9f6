"""docs/resolvers.md: tokens from an identity provider, verified with its published keys.

The provider signs RS256 tokens and publishes its public keys as a JWKS; the tenant is a
nested claim, ``{"org": {"slug": "acme"}}``.
"""

from fastapi import FastAPI
from sqlalchemy import Engine

from fastapi_tenancy import CurrentTenant, JWTClaimResolver, Tenancy


def create_app(engine: Engine, *, issuer: str) -> FastAPI:
    # --8<-- [start:resolver]
    resolver = JWTClaimResolver(
        claim="org.slug",  # a dotted path into nested claims
        jwks_url=f"{issuer}/.well-known/jwks.json",  # fetched in a thread, cached 5 minutes
        algorithms=["RS256"],
        audience="projects-api",
        issuer=issuer,
    )
    # --8<-- [end:resolver]
    app = FastAPI()
    Tenancy(engine, resolvers=[resolver]).install(app)

    @app.get("/whoami")
    def whoami(tenant: CurrentTenant) -> dict[str, str | None]:
        return {"tenant": tenant.id, "user": tenant.claims.get("sub")}

    return app
