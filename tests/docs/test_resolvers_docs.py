"""docs/resolvers.md's samples, driven over HTTP with real tokens, hosts and headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, update
from sqlmodel import Session, create_engine

from docs.examples import resolvers_chain, resolvers_custom, resolvers_jwks, resolvers_lookup
from fastapi_tenancy import CurrentTenant, SubdomainResolver, Tenancy

pytestmark = pytest.mark.anyio

SECRET = "a-resolvers-page-secret-of-32-bytes-or-more"
TOKEN_LIFETIME = 6 * 3600  # tokens built at collection must outlive the whole run
AUDIENCE = "projects-api"
ISSUER = "https://auth.example.test/"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def hs256(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def chain_claims(**changes: Any) -> dict[str, Any]:
    claims = {
        "sub": "ann@acme.test",
        "tenant": "acme",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": int(time.time()) + TOKEN_LIFETIME,
    }
    return {key: value for key, value in {**claims, **changes}.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any]) -> str:
    """An ``alg: none`` token: no signature at all."""
    header = {"alg": "none", "typ": "JWT"}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


def client_for(app: FastAPI, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


# --------------------------------------------------------------------------------------------
# resolvers_chain.py: token, subdomain, header


@pytest.fixture
def chain_app() -> FastAPI:
    # The chain alone touches no database; Tenancy still wants the engine its sessions use.
    return resolvers_chain.create_app(create_engine("sqlite://"), jwt_secret=SECRET)


async def whoami(app: FastAPI, base_url: str = "http://testserver", **kwargs: Any) -> Any:
    async with client_for(app, base_url) as client:
        return await client.get("/whoami", **kwargs)


@pytest.mark.parametrize(
    ("base_url", "headers", "expected"),
    [
        ("http://testserver", bearer(hs256(chain_claims())), ("acme", "jwt")),
        ("http://acme.example.test", {}, ("acme", "subdomain")),
        ("http://testserver", {"X-Tenant-ID": "acme"}, ("acme", "header")),
        ("http://acme.example.test", bearer(hs256(chain_claims())), ("acme", "jwt")),
        ("http://testserver", {"Host": "ACME.Example.Test.:8443"}, ("acme", "subdomain")),
        ("http://x.acme.example.test", {}, ("acme", "subdomain")),
        ("http://www.acme.example.test", {}, ("acme", "subdomain")),
    ],
    ids=[
        "token",
        "subdomain",
        "header",
        "agreeing sources",
        "host folded",
        "nested host",
        "www ignored",
    ],
)
async def test_each_source_names_the_tenant(
    chain_app: FastAPI, base_url: str, headers: dict[str, str], expected: tuple[str, str]
) -> None:
    r = await whoami(chain_app, base_url, headers=headers)
    assert r.status_code == 200, r.text
    assert (r.json()["tenant"], r.json()["source"]) == expected


async def test_a_header_cannot_override_the_token(chain_app: FastAPI) -> None:
    headers = {**bearer(hs256(chain_claims())), "X-Tenant-ID": "globex"}
    r = await whoami(chain_app, headers=headers)
    assert (r.status_code, r.json()["code"]) == (403, "tenant_mismatch"), r.text


async def test_a_subdomain_cannot_override_the_token(chain_app: FastAPI) -> None:
    r = await whoami(chain_app, "http://globex.example.test", headers=bearer(hs256(chain_claims())))
    assert (r.status_code, r.json()["code"]) == (403, "tenant_mismatch"), r.text


@pytest.mark.parametrize(
    "token",
    [
        hs256(chain_claims(), "another-secret-that-is-also-32-bytes-long"),
        unsigned(chain_claims()),
        hs256(chain_claims(exp=int(time.time()) - 120)),
        hs256(chain_claims(exp=None)),
        hs256(chain_claims(aud="another-api")),
        hs256(chain_claims(iss="https://evil.example.test/")),
        "not-a-token",
    ],
    ids=["signature", "alg none", "expired", "no exp", "audience", "issuer", "garbage"],
)
async def test_a_bad_token_is_401_and_never_falls_through(chain_app: FastAPI, token: str) -> None:
    # The header names the same tenant: were the token skipped, the request would pass.
    r = await whoami(chain_app, headers={**bearer(token), "X-Tenant-ID": "acme"})
    assert (r.status_code, r.json()["code"]) == (401, "invalid_token"), r.text


async def test_leeway_forgives_a_little_clock_skew(chain_app: FastAPI) -> None:
    token = hs256(chain_claims(exp=int(time.time()) - 10))
    r = await whoami(chain_app, headers=bearer(token))
    assert r.status_code == 200, r.text


async def test_a_header_sent_twice_with_different_values_is_ambiguous(
    chain_app: FastAPI,
) -> None:
    r = await whoami(chain_app, headers=[("X-Tenant-ID", "acme"), ("X-Tenant-ID", "globex")])
    assert (r.status_code, r.json()["code"]) == (400, "ambiguous_tenant"), r.text
    r = await whoami(chain_app, headers=[("X-Tenant-ID", "acme"), ("X-Tenant-ID", "acme")])
    assert r.json()["tenant"] == "acme"


@pytest.mark.parametrize("key", ["ACME", "acme corp", "-acme", "a" * 64, ""])
async def test_keys_outside_the_pattern_are_refused(chain_app: FastAPI, key: str) -> None:
    r = await whoami(chain_app, headers={"X-Tenant-ID": key})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_tenant_key"), r.text


@pytest.mark.parametrize(
    "base_url",
    [
        "http://example.test",
        "http://www.example.test",
        "http://other.test",
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
    ],
)
async def test_hosts_without_a_tenant_have_no_opinion(chain_app: FastAPI, base_url: str) -> None:
    r = await whoami(chain_app, base_url)
    assert (r.status_code, r.json()["code"]) == (400, "tenant_required"), r.text


async def test_an_empty_subdomain_label_is_an_invalid_key(chain_app: FastAPI) -> None:
    r = await whoami(chain_app, headers={"Host": ".acme.example.test"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_tenant_key"), r.text


async def test_localhost_subdomains_work_for_development() -> None:
    app = resolvers_chain.create_app(
        create_engine("sqlite://"), jwt_secret=SECRET, base_domain="localhost"
    )
    r = await whoami(app, "http://acme.localhost:8000")
    assert r.json() == {"tenant": "acme", "source": "subdomain"}, r.text


async def test_an_optional_route_serves_guests_but_still_checks_what_is_sent(
    chain_app: FastAPI,
) -> None:
    async with client_for(chain_app) as client:
        guest = await client.get("/catalogue")
        tenant = await client.get("/catalogue", headers={"X-Tenant-ID": "acme"})
        forged = await client.get("/catalogue", headers=bearer(unsigned(chain_claims())))
    assert guest.json() == {"tenant": None}
    assert tenant.json() == {"tenant": "acme"}
    assert (forged.status_code, forged.json()["code"]) == (401, "invalid_token")


async def test_an_excluded_path_resolves_nothing(chain_app: FastAPI) -> None:
    async with client_for(chain_app) as client:
        r = await client.get("/healthz", headers=bearer("not-a-token"))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("host", "last", "first"),
    [
        ("acme.example.test", "acme", "acme"),
        ("eu.acme.example.test", "acme", "eu"),
        ("www.acme.example.test", "acme", "acme"),
    ],
)
async def test_position_picks_the_label_next_to_the_base_domain_or_the_leftmost(
    host: str, last: str, first: str
) -> None:
    # The page's table of hosts, checked against both settings of position.
    for position, expected in (("last", last), ("first", first)):
        app = FastAPI()
        tenancy = Tenancy(
            create_engine("sqlite://"),
            resolvers=[SubdomainResolver("example.test", position=position)],
        )
        tenancy.install(app)

        @app.get("/whoami")
        def tenant_id(tenant: CurrentTenant) -> str | None:
            return tenant.id

        r = await whoami(app, f"http://{host}")
        assert r.json() == expected, (position, host)


# --------------------------------------------------------------------------------------------
# resolvers_jwks.py: RS256 tokens verified with a JWKS served over HTTP


class _JWKSHandler(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path != "/.well-known/jwks.json":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def issuer(signing_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """An identity provider publishing ``signing_key`` as kid ``k1``."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    handler = type("Handler", (_JWKSHandler,), {})
    handler.body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def hand_signed_hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """The key-confusion forgery, which PyJWT refuses to sign: HMAC keyed with a public key."""
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def rs256(key: rsa.RSAPrivateKey, issuer: str, kid: str = "k1", **changes: Any) -> str:
    claims = {
        "sub": "ann@acme.test",
        "org": {"slug": "acme", "name": "Acme"},
        "aud": AUDIENCE,
        "iss": issuer,
        "exp": int(time.time()) + TOKEN_LIFETIME,
        **changes,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def test_a_provider_token_names_the_tenant_in_a_nested_claim(
    issuer: str, signing_key: rsa.RSAPrivateKey
) -> None:
    app = resolvers_jwks.create_app(create_engine("sqlite://"), issuer=issuer)
    with TestClient(app) as client:
        r = client.get("/whoami", headers=bearer(rs256(signing_key, issuer)))
    assert r.status_code == 200, r.text
    assert r.json() == {"tenant": "acme", "user": "ann@acme.test"}


def test_tokens_the_published_keys_do_not_verify_are_refused(
    issuer: str, signing_key: rsa.RSAPrivateKey
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"org": {"slug": "acme"}, "aud": AUDIENCE, "iss": issuer, "exp": time.time() + 60}
    tokens = {
        "stranger's key, known kid": rs256(stranger, issuer),
        "unknown kid": rs256(signing_key, issuer, kid="k2"),
        "other issuer": rs256(signing_key, issuer, iss="https://evil.example.test"),
        "HS256 keyed with the public key": hand_signed_hs256(claims, public_pem, kid="k1"),
    }
    app = resolvers_jwks.create_app(create_engine("sqlite://"), issuer=issuer)
    with TestClient(app) as client:
        for name, token in tokens.items():
            r = client.get("/whoami", headers=bearer(token))
            assert (r.status_code, r.json()["code"]) == (401, "invalid_token"), name


def test_an_unreachable_key_set_fails_closed_with_503(signing_key: rsa.RSAPrivateKey) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        issuer = f"http://127.0.0.1:{probe.getsockname()[1]}"
    app = resolvers_jwks.create_app(create_engine("sqlite://"), issuer=issuer)
    with TestClient(app) as client:
        r = client.get("/whoami", headers=bearer(rs256(signing_key, issuer)))
    assert (r.status_code, r.json()["code"]) == (503, "tenancy_unavailable"), r.text


# --------------------------------------------------------------------------------------------
# resolvers_custom.py: a path prefix (function) and an API-key table (class)


@pytest.fixture
def custom_app(engine: Engine, create_tables: Any) -> FastAPI:
    create_tables(engine, resolvers_custom.ApiKey)
    with Session(engine) as session:
        session.add(
            resolvers_custom.ApiKey(
                key_hash=resolvers_custom.hash_api_key("sk-acme-1"), tenant_id="acme"
            )
        )
        session.commit()
    return resolvers_custom.create_app(engine)


async def test_an_api_key_names_its_tenant(custom_app: FastAPI) -> None:
    r = await whoami(custom_app, headers={"X-API-Key": "sk-acme-1"})
    assert r.json() == {"tenant": "acme", "source": "api_key"}, r.text


async def test_an_unknown_api_key_is_401_even_with_a_path_tenant(custom_app: FastAPI) -> None:
    async with client_for(custom_app) as client:
        r = await client.get("/t/acme/whoami", headers={"X-API-Key": "sk-guessed"})
    assert (r.status_code, r.json()["code"]) == (401, "invalid_token"), r.text


async def test_the_path_prefix_names_the_tenant(custom_app: FastAPI) -> None:
    async with client_for(custom_app) as client:
        r = await client.get("/t/globex/whoami")
        shouting = await client.get("/t/GLOBEX/whoami")
        empty = await client.get("/t//whoami")
    assert r.json() == {"tenant": "globex", "source": "path"}, r.text
    assert (shouting.status_code, shouting.json()["code"]) == (400, "invalid_tenant_key")
    assert (empty.status_code, empty.json()["code"]) == (400, "invalid_tenant_key")


async def test_an_api_key_and_a_path_must_agree(custom_app: FastAPI) -> None:
    async with client_for(custom_app) as client:
        same = await client.get("/t/acme/whoami", headers={"X-API-Key": "sk-acme-1"})
        other = await client.get("/t/globex/whoami", headers={"X-API-Key": "sk-acme-1"})
    assert same.json() == {"tenant": "acme", "source": "api_key"}
    assert (other.status_code, other.json()["code"]) == (403, "tenant_mismatch"), other.text


async def test_an_api_key_sent_twice_differently_is_ambiguous(custom_app: FastAPI) -> None:
    r = await whoami(custom_app, headers=[("X-API-Key", "sk-acme-1"), ("X-API-Key", "sk-x")])
    assert (r.status_code, r.json()["code"]) == (400, "ambiguous_tenant"), r.text


async def test_the_api_key_table_unavailable_fails_closed(engine: Engine) -> None:
    app = resolvers_custom.create_app(engine)  # the table was never created
    r = await whoami(app, headers={"X-API-Key": "sk-acme-1"})
    assert (r.status_code, r.json()["code"]) == (503, "tenancy_unavailable"), r.text


# --------------------------------------------------------------------------------------------
# resolvers_lookup.py: tenant table with an active flag, membership table, cache


@pytest.fixture
def lookup_app(engine: Engine, create_tables: Any) -> FastAPI:
    Tenant, Membership = resolvers_lookup.Tenant, resolvers_lookup.Membership
    create_tables(engine, Tenant, Membership)
    with Session(engine) as session:
        session.add_all(
            [
                Tenant(slug="acme", name="Acme Corporation"),
                Tenant(slug="globex", name="Globex"),
                Tenant(slug="initech", name="Initech", active=False),
                Membership(user="ann@acme.test", tenant="acme"),
                Membership(user="ann@acme.test", tenant="initech"),
            ]
        )
        session.commit()
    return resolvers_lookup.create_app(engine, jwt_secret=SECRET)


def user(sub: str = "ann@acme.test", **claims: Any) -> dict[str, str]:
    return bearer(hs256({"sub": sub, "exp": int(time.time()) + TOKEN_LIFETIME, **claims}))


async def get_tenant(app: FastAPI, headers: dict[str, str]) -> httpx.Response:
    async with client_for(app) as client:
        return await client.get("/tenant", headers=headers)


async def test_the_lookup_hands_the_route_the_tenant_record(lookup_app: FastAPI) -> None:
    r = await get_tenant(lookup_app, user(tenant="acme"))
    assert r.json() == {"slug": "acme", "name": "Acme Corporation"}, r.text


@pytest.mark.parametrize(
    ("tenant", "status", "code"),
    [
        ("nope", 404, "tenant_not_found"),
        ("initech", 403, "tenant_inactive"),
        ("globex", 403, "not_a_member"),
    ],
)
async def test_unknown_inactive_and_foreign_tenants_are_refused(
    lookup_app: FastAPI, tenant: str, status: int, code: str
) -> None:
    r = await get_tenant(lookup_app, {**user(), "X-Tenant-ID": tenant})
    assert (r.status_code, r.json()["code"]) == (status, code), r.text


async def test_a_header_without_a_token_makes_nobody_a_member(lookup_app: FastAPI) -> None:
    r = await get_tenant(lookup_app, {"X-Tenant-ID": "acme"})
    assert (r.status_code, r.json()["code"]) == (403, "not_a_member"), r.text


async def test_lookups_are_cached_until_invalidated(lookup_app: FastAPI, engine: Engine) -> None:
    assert (await get_tenant(lookup_app, user(tenant="acme"))).status_code == 200
    with engine.begin() as conn:  # switched off behind the cache's back
        conn.execute(
            update(resolvers_lookup.Tenant)
            .where(resolvers_lookup.Tenant.slug == "acme")
            .values(active=False)
        )
    assert (await get_tenant(lookup_app, user(tenant="acme"))).status_code == 200

    tenancy: Tenancy = lookup_app.state.tenancy
    resolvers_lookup.deactivate_tenant(engine, tenancy, "acme")
    r = await get_tenant(lookup_app, user(tenant="acme"))
    assert (r.status_code, r.json()["code"]) == (403, "tenant_inactive"), r.text


async def test_deactivating_a_tenant_takes_effect_at_once(
    lookup_app: FastAPI, engine: Engine
) -> None:
    assert (await get_tenant(lookup_app, user(tenant="acme"))).status_code == 200
    resolvers_lookup.deactivate_tenant(engine, lookup_app.state.tenancy, "acme")
    r = await get_tenant(lookup_app, user(tenant="acme"))
    assert (r.status_code, r.json()["code"]) == (403, "tenant_inactive"), r.text


async def test_a_failing_lookup_is_503_and_bad_keys_never_reach_it(engine: Engine) -> None:
    app = resolvers_lookup.create_app(engine, jwt_secret=SECRET)  # no tables: lookups fail
    r = await get_tenant(app, user(tenant="acme"))
    assert (r.status_code, r.json()["code"]) == (503, "tenancy_unavailable"), r.text
    r = await get_tenant(app, user(tenant="Acme; DROP TABLE rs_tenant"))
    assert (r.status_code, r.json()["code"]) == (400, "invalid_tenant_key"), r.text


def test_a_preloading_app_looks_no_tenant_up_on_a_request(
    lookup_app: FastAPI, engine: Engine
) -> None:
    app = resolvers_lookup.create_preloading_app(engine)
    by_key: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "rs_tenant" in statement and "WHERE" in statement.split():
            by_key.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with TestClient(app) as client:  # runs the lifespan: the tenants are loaded
            for tenant in ("acme", "globex", "acme"):
                r = client.get("/tenant", headers={"X-Tenant-ID": tenant})
                assert r.status_code == 200, r.text
            r = client.get("/tenant", headers={"X-Tenant-ID": "initech"})
            assert (r.status_code, r.json()["code"]) == (403, "tenant_inactive"), r.text
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert by_key == []
