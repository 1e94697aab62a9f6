"""OpenAPI: each resolver contributes its security scheme, so /docs offers "Authorize"."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Security
from fastapi.security import APIKeyQuery
from fastapi.testclient import TestClient
from sqlmodel import create_engine

from fastapi_tenancy import (
    CallableResolver,
    HeaderResolver,
    JWTClaimResolver,
    SubdomainResolver,
    Tenancy,
)

SECRET = "an-openapi-test-secret-long-enough-for-hs256"


def build_app(resolvers: list[Any], **options: Any) -> FastAPI:
    app = FastAPI()
    options.setdefault("trust_unverified_sources", True)
    Tenancy(create_engine("sqlite://"), resolvers=resolvers, **options).install(app)

    @app.get("/projects")
    def projects() -> list[str]:
        return []

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def document(app: FastAPI) -> dict[str, Any]:
    with TestClient(app) as client:
        r = client.get("/openapi.json")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_the_document_offers_a_bearer_token_and_the_tenant_header() -> None:
    app = build_app(
        [
            JWTClaimResolver(key=SECRET, algorithms=["HS256"]),
            SubdomainResolver("example.test"),
            HeaderResolver("X-Tenant-ID"),
        ]
    )
    schema = document(app)
    assert schema["components"]["securitySchemes"] == {
        "BearerToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "X-Tenant-ID": {"type": "apiKey", "in": "header", "name": "X-Tenant-ID"},
    }
    # Alternatives: either scheme names the tenant.
    assert schema["security"] == [{"BearerToken": []}, {"X-Tenant-ID": []}]


def test_the_docs_page_is_served_without_a_tenant_and_loads_the_document() -> None:
    app = build_app([HeaderResolver()])
    with TestClient(app) as client:
        r = client.get("/docs")
    assert r.status_code == 200, r.text
    assert "/openapi.json" in r.text


def test_excluded_paths_need_no_credentials_in_the_document() -> None:
    app = build_app([HeaderResolver()], exclude_paths=("/healthz", "/docs", "/openapi.json"))
    schema = document(app)
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    assert "security" not in schema["paths"]["/projects"]["get"]


def test_an_optional_tenant_lists_the_empty_requirement_too() -> None:
    schema = document(build_app([HeaderResolver("X-Org")], require_tenant=False))
    assert schema["security"] == [{"X-Org": []}, {}]


def test_a_token_in_another_header_is_an_api_key_scheme() -> None:
    resolver = JWTClaimResolver(key=SECRET, algorithms=["HS256"], header="X-Token")
    schema = document(build_app([resolver]))
    assert schema["components"]["securitySchemes"] == {
        "X-Token": {"type": "apiKey", "in": "header", "name": "X-Token"}
    }


def test_subdomain_and_callable_resolvers_contribute_no_scheme() -> None:
    app = build_app(
        [SubdomainResolver("example.test"), CallableResolver(lambda conn: None)],
    )
    schema = document(app)
    assert "security" not in schema
    assert "securitySchemes" not in schema.get("components", {})


def test_the_apps_own_schemes_and_operation_security_are_kept() -> None:
    app = build_app([HeaderResolver()])
    key = APIKeyQuery(name="key", scheme_name="QueryKey")

    @app.get("/reports")
    def reports(api_key: str = Security(key)) -> list[str]:
        return []

    schema = document(app)
    schemes = schema["components"]["securitySchemes"]
    assert schemes["QueryKey"] == {"type": "apiKey", "in": "query", "name": "key"}
    assert schemes["X-Tenant-ID"]["in"] == "header"
    assert schema["paths"]["/reports"]["get"]["security"] == [{"QueryKey": []}]


def test_the_document_is_generated_once_and_served_from_the_cache() -> None:
    app = build_app([HeaderResolver()])
    first = app.openapi()
    assert app.openapi() is first
    assert app.openapi_schema is first
    assert first["security"] == [{"X-Tenant-ID": []}]


def test_every_operation_declares_the_kits_error_answers() -> None:
    app = build_app(
        [JWTClaimResolver(key=SECRET, algorithms=["HS256"])],
        exclude_paths=["/healthz", "/openapi.json"],
        lookup=lambda key: {"key": key},
    )

    @app.post("/projects", responses={409: {"description": "the app's own words"}})
    def create() -> None:  # pragma: no cover - only documented
        return None

    doc = document(app)
    error = {"$ref": "#/components/schemas/TenancyError"}
    assert doc["components"]["schemas"]["TenancyError"]["required"] == ["detail", "code"]
    listing = doc["paths"]["/projects"]["get"]["responses"]
    assert set(listing) == {"200", "400", "401", "403", "404", "500", "503"}
    assert listing["403"]["content"]["application/json"]["schema"] == error
    assert "`not_a_member`" in listing["403"]["description"]
    assert "`database_busy`" in listing["503"]["description"]
    assert "Retry-After" in listing["503"]["headers"]
    creating = doc["paths"]["/projects"]["post"]["responses"]
    assert creating["409"]["description"] == "the app's own words"  # the app's kept
    assert "`cross_tenant_write`" in creating["403"]["description"]
    health = doc["paths"]["/healthz"]["get"]["responses"]
    assert set(health) == {"200", "500", "503"}  # served without tenant resolution


def test_without_a_token_resolver_or_a_lookup_there_is_no_401_or_404() -> None:
    doc = document(build_app([HeaderResolver()]))
    assert set(doc["paths"]["/projects"]["get"]["responses"]) == {"200", "400", "403", "500", "503"}
