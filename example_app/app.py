"""The application factory: the kit's configuration in one place.

``create_app(engine)`` builds a new app around an engine it is given (tests hand it their own
database); with no engine it reads the environment like ``python -m example_app``. Nothing is
created at import time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from pwdlib import PasswordHash
from sqlalchemy import Engine
from starlette.requests import HTTPConnection

from fastapi_tenancy import HeaderResolver, JWTClaimResolver, SubdomainResolver, Tenancy

from .auth import (
    DEFAULT_TOKEN_TTL,
    JWT_ALGORITHM,
    LoginLimits,
    PasswordHasher,
    TokenIssuer,
    is_platform_admin,
    membership_check,
)
from .errors import install_error_handlers
from .lifecycle import tenant_registry
from .middleware import AccessLogMiddleware, BearerRequiredMiddleware
from .placement import isolation_for
from .rls import prepare_rls
from .routes import Services, admin_router, public_router, team_router, tenant_router
from .settings import Settings, make_engine

__all__ = [
    "DOCS_PATHS",
    "PUBLIC_PATHS",
    "TENANT_OPTIONAL_PATHS",
    "TENANT_OPTIONAL_PREFIXES",
    "create_app",
]

logger = logging.getLogger("example_app")

DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
PUBLIC_PATHS = ("/", "/healthz", "/readyz", "/plans", "/auth/login", "/signup", *DOCS_PATHS)
"""Served without a token. All other paths need one (401 ``not_authenticated``)."""
UNRESOLVED_PATHS = ("/healthz", "/readyz", "/auth/login", "/signup", *DOCS_PATHS)
"""Served without tenant resolution at all: a stale token must not stop a new login, and a
sign-up's tenant does not exist yet.
("/" cannot be listed: the kit reads paths ending in "/" as prefixes.)"""
TENANT_OPTIONAL_PATHS = frozenset({"/", "/plans", "/me"})
"""Resolved as usual (a tenant they name is checked) but served without one."""
TENANT_OPTIONAL_PREFIXES = ("/admin/",)
"""The same, for every path under these: the platform admin's routes work across tenants."""

DESCRIPTION = """\
A small multi-tenant SaaS API built on **fastapi_tenancy**.

1. `POST /auth/login` with `{"email": "alice@acme.test", "password": "alice-pass"}`
   (or `POST /signup` a tenant of your own: its answer has a token too).
2. Press **Authorize** and paste the `access_token`.
3. Users in several tenants (carol@example.test) choose one per request with the
   `X-Tenant-ID` header or a subdomain (`acme.example.test`).

The tenant comes from, in order: the token's `tenant` claim, the subdomain, `X-Tenant-ID`.
Sources that disagree are refused (403), and you may act only in your own tenants.
"""


def _tenant_required(conn: HTTPConnection) -> bool:
    path = conn.url.path
    return path not in TENANT_OPTIONAL_PATHS and not path.startswith(TENANT_OPTIONAL_PREFIXES)


def create_app(
    engine: Engine | None = None,
    *,
    jwt_secret: str | None = None,
    base_domain: str | None = None,
    password_hash: PasswordHash | None = None,
    login_limits: LoginLimits | None = None,
    token_ttl: timedelta = DEFAULT_TOKEN_TTL,
    admin_engine: Engine | None = None,
    rls: bool = False,
    own_engines: bool = False,
    max_tenants: int | None = None,
    schema_tenants: Collection[str] | None = None,
) -> FastAPI:
    """Build the example API on ``engine``.

    ``jwt_secret`` is the HS256 key (at least 32 bytes); ``base_domain`` the domain whose
    subdomains name tenants; ``password_hash`` a pwdlib ``PasswordHash`` (Argon2id by default);
    ``login_limits`` bounds the password hashes that logins run at once (see
    :class:`~example_app.auth.LoginLimits`).
    ``rls=True`` (PostgreSQL) adds row-level security under the ORM wall: ``engine`` must then
    connect as an ordinary role and ``admin_engine`` (the owner, a superuser or ``BYPASSRLS``)
    serves the admin routes' sessions; :mod:`example_app.rls` prepares both.
    ``max_tenants`` caps the tenants ``POST /signup`` may bring the database to (see
    :mod:`example_app.lifecycle`); none by default. ``schema_tenants`` names the tenants whose
    data is in a schema of their own (see :mod:`example_app.placement`; made by
    :func:`~example_app.seed.init_database`).
    Arguments left out come from the environment (see :class:`~example_app.settings.Settings`).
    The app's shutdown disposes of the engines it made itself, and of ``engine`` and
    ``admin_engine`` too with ``own_engines=True`` (``python -m example_app`` hands its engines
    over so: code after ``uvicorn.run`` does not run on SIGTERM). The tables must exist: see
    :func:`~example_app.seed.init_database`.

        app = create_app(engine, jwt_secret=secret, base_domain="example.test")
    """
    owned: list[Engine] = []
    if engine is None or jwt_secret is None or base_domain is None:
        settings = Settings.from_env()
        if engine is None:
            engine = make_engine(settings.database_url)
            owned.append(engine)
            if settings.rls:
                admin_engine, rls = engine, True
                engine = make_engine(prepare_rls(admin_engine, password=settings.role_password))
                owned.append(engine)
        jwt_secret = jwt_secret or settings.jwt_secret
        base_domain = base_domain or settings.base_domain
        if max_tenants is None:
            max_tenants = settings.max_tenants
        if schema_tenants is None:
            schema_tenants = settings.schema_tenants
    schema_tenants = tuple(schema_tenants or ())
    if own_engines:
        owned += [each for each in (engine, admin_engine) if each is not None and each not in owned]

    tenancy = Tenancy(
        engine,
        resolvers=[
            JWTClaimResolver(
                claim="tenant",
                key=jwt_secret,
                algorithms=[JWT_ALGORITHM],
                require=("exp", "sub"),
            ),
            SubdomainResolver(base_domain),
            HeaderResolver("X-Tenant-ID"),
        ],
        # The tenants table: the lookup (unknown 404, suspended 403 tenant_inactive), and
        # tenancy.tenants, which signs tenants up through its hooks and offboards them.
        registry=tenant_registry(engine, max_tenants=max_tenants),
        membership=membership_check(engine),
        is_admin=is_platform_admin,
        require_tenant=_tenant_required,
        exclude_paths=UNRESOLVED_PATHS,
        rls=rls,
        admin_engine=admin_engine,
        # Each tenant's projects, tasks and notes: in the shared tables, or in a schema of its
        # own for the tenants of EXAMPLE_SCHEMA_TENANTS.
        isolation=isolation_for(schema_tenants),
        # A committed write is answered from the values it wrote: a re-read after the commit
        # could find the row deleted meanwhile and answer a write that happened as failed.
        session_options={"expire_on_commit": False},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for owned_engine in owned:
                owned_engine.dispose()
            if owned:
                logger.info("shutdown: database connections closed")

    app = FastAPI(
        title="fastapi_tenancy example app",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = Services(
        engine=engine,
        tokens=TokenIssuer(jwt_secret, token_ttl),
        passwords=PasswordHasher(password_hash, limits=login_limits),
        tenants=tenancy.tenants,
    )
    app.state.tenancy = tenancy
    app.state.schema_tenants = schema_tenants
    app.include_router(public_router)
    app.include_router(tenant_router)
    app.include_router(team_router(engine))
    app.include_router(admin_router)
    install_error_handlers(app)
    tenancy.install(app)  # TenancyMiddleware, and the {"detail", "code"} error handler
    app.add_middleware(BearerRequiredMiddleware, public_paths=PUBLIC_PATHS)
    app.add_middleware(AccessLogMiddleware)
    return app
