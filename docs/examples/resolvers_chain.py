"""docs/resolvers.md: a verified token, a subdomain and a header in one chain.

The token's ``tenant`` claim comes first, then the subdomain of the Host under
``base_domain``, then the ``X-Tenant-ID`` header. All three are asked on every request; where
two name different tenants the request is refused.
"""

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.requests import HTTPConnection

from fastapi_tenancy import (
    CurrentTenant,
    HeaderResolver,
    JWTClaimResolver,
    SubdomainResolver,
    Tenancy,
    get_current_tenant,
)


# --8<-- [start:required]
def tenant_required(conn: HTTPConnection) -> bool:
    """Every path needs a tenant but the public catalogue, which serves tenants and guests."""
    return not conn.url.path.startswith("/catalogue")


# --8<-- [end:required]


def create_app(engine: Engine, *, jwt_secret: str, base_domain: str = "example.test") -> FastAPI:
    # --8<-- [start:tenancy]
    tenancy = Tenancy(
        engine,
        resolvers=[
            JWTClaimResolver(
                claim="tenant",
                key=jwt_secret,
                algorithms=["HS256"],
                audience="projects-api",
                issuer="https://auth.example.test/",
                leeway=30,  # seconds of clock skew allowed on exp, nbf and iat
            ),
            SubdomainResolver(base_domain),  # acme.example.test -> "acme"
            HeaderResolver("X-Tenant-ID"),
        ],
        require_tenant=tenant_required,
        exclude_paths=("/healthz", "/docs", "/openapi.json"),
        # No membership rule here: any caller may name any tenant by subdomain or header.
        # With real users, give membership= instead (see "Membership" below).
        trust_unverified_sources=True,
    )
    # --8<-- [end:tenancy]
    app = FastAPI()
    tenancy.install(app)

    # --8<-- [start:routes]
    @app.get("/whoami")
    def whoami(tenant: CurrentTenant) -> dict[str, str | None]:
        return {"tenant": tenant.id, "source": tenant.source}

    @app.get("/catalogue")
    def catalogue() -> dict[str, str | None]:
        return {"tenant": get_current_tenant()}  # None for a guest

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # --8<-- [end:routes]
    return app
