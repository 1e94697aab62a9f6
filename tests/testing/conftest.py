"""Fixtures for testing the pytest plugin with pytester.

``plugin_project`` is a pytester directory holding ``inner_app.py`` (``build_app(resolvers)``: a
small app with no tables, answering who it thinks the caller is) and a ``conftest.py`` whose
``tenancy_app`` is one of those; ``run_inner(*args)`` runs
pytest there in-process with the suite's strictness (warnings are errors).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

INNER_APP = """
from fastapi import FastAPI, Request
from sqlmodel import create_engine

from fastapi_tenancy import (
    AdminSession,
    HeaderResolver,
    JWTClaimResolver,
    SubdomainResolver,
    Tenancy,
    get_tenant_context,
)

SECRET = "an-inner-test-secret-long-enough-for-hs256"


def build_app(resolvers, **options):
    app = FastAPI()
    tenancy = Tenancy(
        create_engine("sqlite://"),
        resolvers=resolvers,
        require_tenant=False,
        trust_unverified_sources=True,
        is_admin=lambda context: "admin" in context.claims.get("roles", ()),
        **options,
    )
    tenancy.install(app)

    @app.get("/whoami")
    def whoami(request: Request):
        context = get_tenant_context()
        return {
            "tenant": None if context is None else context.id,
            "source": None if context is None else context.source,
            "sub": None if context is None else context.claims.get("sub"),
            "host": request.headers["host"],
        }

    @app.get("/admin")
    def admin(session: AdminSession):
        return {"admin": True}

    return app


def jwt_resolver(**options):
    return JWTClaimResolver(key=SECRET, algorithms=["HS256"], **options)
"""

INNER_CONFTEST = """
import pytest
from inner_app import HeaderResolver, SubdomainResolver, build_app, jwt_resolver


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@pytest.fixture
def tenancy_app():
    return build_app(
        [
            jwt_resolver(audience="inner-api", issuer="https://issuer.test"),
            SubdomainResolver("example.test"),
            HeaderResolver(),
        ]
    )
"""

INNER_ARGS = ("-p", "no:cacheprovider", "-p", "no:asyncio", "-W", "error", "-q")


@pytest.fixture
def plugin_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(inner_app=INNER_APP)
    pytester.makeconftest(INNER_CONFTEST)
    return pytester


@pytest.fixture
def run_inner(pytester: pytest.Pytester) -> Callable[..., pytest.RunResult]:
    """``run_inner(*args)``: pytest in ``pytester``'s directory, in-process, warnings as errors."""

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_inprocess(*INNER_ARGS, *args)

    return run
