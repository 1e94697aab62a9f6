"""The tenant in the OpenAPI document: each resolver's security scheme, so "Authorize" works.

``tenancy.install(app)`` calls :func:`install_openapi`. A resolver contributes a scheme through
an ``openapi_scheme()`` method answering ``(name, scheme)``: ``JWTClaimResolver`` a bearer JWT
(``BearerToken``), ``HeaderResolver`` an API key in its header (named after the header). The
subdomain resolver has no OpenAPI form and contributes nothing.

The schemes are alternatives (the document's top-level ``security`` lists one requirement per
scheme), operations on paths served without tenant resolution (``exclude_paths``) get an
empty ``security``, and when a tenant is optional an empty requirement is listed too. Schemes
and requirements the application declared itself are kept: an operation with its own
``security`` is left alone, and a scheme name already taken is not overwritten.

An app that builds its document with its own function (``app.openapi = custom_openapi``) should
assign it before ``tenancy.install(app)``, which then wraps it, or call :func:`add_security` on
the schema it builds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .tenancy import Tenancy

__all__ = ["add_security", "install_openapi", "security_schemes"]

_OPERATIONS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def security_schemes(tenancy: Tenancy) -> dict[str, dict[str, Any]]:
    """The OpenAPI security schemes of ``tenancy``'s resolvers, by name, in chain order."""
    schemes: dict[str, dict[str, Any]] = {}
    for resolver in tenancy.chain.resolvers:
        describe: Callable[[], tuple[str, dict[str, Any]] | None] | None = getattr(
            resolver, "openapi_scheme", None
        )
        if describe is None:
            continue
        answer = describe()
        if answer is None:
            continue
        name, scheme = answer
        schemes.setdefault(name, dict(scheme))
    return schemes


def install_openapi(app: FastAPI, tenancy: Tenancy) -> None:
    """Make ``app``'s OpenAPI document carry ``tenancy``'s security schemes.

    Wraps ``app.openapi`` the way FastAPI documents for extending the schema; the document is
    still generated once and cached in ``app.openapi_schema``.
    """
    generate = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        schema = generate()
        if not done:
            add_security(schema, tenancy)
            done = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_security(schema: dict[str, Any], tenancy: Tenancy) -> None:
    """Add ``tenancy``'s schemes and requirements to an OpenAPI ``schema``, in place."""
    schemes = security_schemes(tenancy)
    if not schemes:
        return
    components = schema.setdefault("components", {})
    declared = components.setdefault("securitySchemes", {})
    for name, scheme in schemes.items():
        declared.setdefault(name, scheme)
    requirements: list[dict[str, list[str]]] = [{name: []} for name in schemes]
    if tenancy.require_tenant is not True:
        requirements.append({})
    schema.setdefault("security", requirements)
    for path, item in schema.get("paths", {}).items():
        if not tenancy.is_excluded(path):
            continue
        for method, operation in item.items():
            if method in _OPERATIONS and isinstance(operation, dict):
                operation.setdefault("security", [])
