"""The tenant in the OpenAPI document: each resolver's security scheme, so "Authorize" works,
and the kit's error answers on every operation.

``tenancy.install(app)`` calls :func:`install_openapi`. A resolver contributes a scheme through
an ``openapi_scheme()`` method answering ``(name, scheme)``: ``JWTClaimResolver`` a bearer JWT
(``BearerToken``), ``HeaderResolver`` an API key in its header (named after the header). The
subdomain resolver has no OpenAPI form and contributes nothing.

The schemes are alternatives (the document's top-level ``security`` lists one requirement per
scheme), operations on paths served without tenant resolution (``exclude_paths``) get an
empty ``security``, and when a tenant is optional an empty requirement is listed too. Schemes
and requirements the application declared itself are kept: an operation with its own
``security`` is left alone, and a scheme name already taken is not overwritten.

Every operation lists the kit's answers its clients may get, all in the ``TenancyError`` shape
``{"detail", "code"}`` with the codes each status stands for: ``500`` and ``503`` everywhere;
on paths with tenant resolution ``400``, ``403``, ``401`` with a token resolver and ``404``
with a tenant lookup; ``409`` on writing methods. Responses an operation declares itself are
kept.

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

__all__ = ["add_error_responses", "add_security", "install_openapi", "security_schemes"]

_OPERATIONS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
_WRITES = frozenset({"put", "post", "delete", "patch"})
ERROR_SCHEMA_NAME = "TenancyError"
"""The name of the ``{"detail", "code"}`` schema in the document's components."""
_ERROR_SCHEMA: dict[str, Any] = {
    "title": ERROR_SCHEMA_NAME,
    "type": "object",
    "required": ["detail", "code"],
    "properties": {
        "detail": {"type": "string", "title": "Detail"},
        "code": {"type": "string", "title": "Code"},
    },
}


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
            add_error_responses(schema, tenancy)
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


def _error_codes(tenancy: Tenancy, excluded: bool, method: str) -> dict[str, list[str]]:
    """The codes each status may answer for one operation, by status."""
    from .resolvers import JWTClaimResolver

    codes: dict[str, list[str]] = {}
    if not excluded:
        codes["400"] = ["tenant_required", "invalid_tenant_key", "ambiguous_tenant"]
        if any(isinstance(r, JWTClaimResolver) for r in tenancy.chain.resolvers):
            codes["401"] = ["invalid_token"]
        codes["403"] = ["tenant_mismatch", "not_a_member", "tenant_inactive", "admin_required"]
        if tenancy.lookup is not None:
            codes["404"] = ["tenant_not_found"]
    if method in _WRITES:
        codes["409"] = ["write_conflict", "already_exists"]
        codes.setdefault("403", []).append("cross_tenant_write")
    codes["500"] = ["internal_error"]
    codes["503"] = ["database_unavailable", "database_busy", "tenancy_unavailable"]
    return codes


def add_error_responses(schema: dict[str, Any], tenancy: Tenancy) -> None:
    """Declare the kit's error answers on every operation of an OpenAPI ``schema``, in place."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).setdefault(ERROR_SCHEMA_NAME, _ERROR_SCHEMA)
    body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}}
    for path, item in schema.get("paths", {}).items():
        excluded = tenancy.is_excluded(path)
        for method, operation in item.items():
            if method not in _OPERATIONS or not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for status, codes in _error_codes(tenancy, excluded, method).items():
                described = ", ".join(f"`{code}`" for code in codes)
                response: dict[str, Any] = {"description": f"Refused: {described}", "content": body}
                if int(status) >= 500:
                    response["description"] = f"Failed: {described}"
                if status == "503":
                    response["headers"] = {
                        "Retry-After": {
                            "description": "Seconds to wait before retrying",
                            "schema": {"type": "integer"},
                        }
                    }
                responses.setdefault(status, response)
