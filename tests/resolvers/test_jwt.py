from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.error import URLError

import anyio
import anyio.to_thread
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import create_engine
from starlette.requests import HTTPConnection

from fastapi_tenancy import Tenancy, get_current_tenant
from fastapi_tenancy.exceptions import AmbiguousTenant, InvalidToken, TenancyUnavailable
from fastapi_tenancy.resolvers import JWTClaimResolver, Resolution
from fastapi_tenancy.resolvers.jwks import RETRY_AFTER_FAILURE
from tests.http_servers import JWKSServer, serving

pytestmark = pytest.mark.anyio

SECRET = b"a-test-secret-long-enough-for-hs512-" * 2
OTHER_SECRET = b"another-test-secret-long-enough-for-hs512" * 2
BREAKABLE_RSA_BITS = 1024
JWKS_URL = "https://issuer.example.test/.well-known/jwks.json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_public_pem(rsa_key: rsa.RSAPrivateKey) -> bytes:
    return rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def connection(*headers: tuple[bytes, bytes], scope_type: str = "http") -> HTTPConnection:
    """A real connection whose scope carries exactly these raw headers."""
    return HTTPConnection({"type": scope_type, "path": "/", "headers": list(headers)})


def bearer(token: str, scheme: str = "Bearer") -> HTTPConnection:
    return connection((b"authorization", f"{scheme} {token}".encode()))


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "ann@acme.test", "tenant": "acme", "exp": int(time.time()) + 60, **extra}


def token(payload: dict[str, Any] | None = None, key: Any = SECRET, **kwargs: Any) -> str:
    return jwt.encode(claims() if payload is None else payload, key, **kwargs)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token assembled byte by byte, for the forgeries PyJWT refuses to sign."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def hs256(**kwargs: Any) -> JWTClaimResolver:
    return JWTClaimResolver(key=SECRET, algorithms=["HS256"], **kwargs)


async def refused(resolver: JWTClaimResolver, conn: HTTPConnection) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        await resolver.resolve(conn)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_token"
    return info.value


# The bearer header


async def test_valid_hs256_token_names_the_tenant() -> None:
    payload = claims()
    resolution = await hs256().resolve(bearer(token(payload)))
    assert resolution == Resolution("acme", "jwt", payload)


async def test_missing_authorization_header_has_no_opinion() -> None:
    assert await hs256().resolve(connection((b"x-tenant-id", b"acme"))) is None


@pytest.mark.parametrize("value", [b"Basic YW5uOnNlY3JldA==", b"Token abc", b"Bearertoken", b""])
async def test_other_authorization_schemes_have_no_opinion(value: bytes) -> None:
    assert await hs256().resolve(connection((b"authorization", value))) is None


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
async def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    resolution = await hs256().resolve(bearer(token(), scheme=scheme))
    assert resolution is not None
    assert resolution.key == "acme"


@pytest.mark.parametrize("value", [b"Bearer", b"Bearer ", b"Bearer    ", b"bearer\t"])
async def test_bearer_with_an_empty_token_is_refused(value: bytes) -> None:
    error = await refused(hs256(), connection((b"authorization", value)))
    assert error.detail == "The bearer token is empty."


async def test_bearer_token_sent_twice_with_different_values_is_ambiguous() -> None:
    conn = connection(
        (b"authorization", f"Bearer {token()}".encode()),
        (b"authorization", f"Bearer {token(claims(tenant='globex'))}".encode()),
    )
    with pytest.raises(AmbiguousTenant):
        await hs256().resolve(conn)


async def test_bearer_token_sent_twice_with_the_same_value_is_that_token() -> None:
    value = f"Bearer {token()}".encode()
    conn = connection((b"authorization", value), (b"authorization", value))
    resolution = await hs256().resolve(conn)
    assert resolution is not None
    assert resolution.key == "acme"


async def test_custom_header_and_scheme_are_read() -> None:
    resolver = hs256(header="X-Auth", scheme="JWT")
    conn = connection((b"x-auth", f"JWT {token()}".encode()))
    resolution = await resolver.resolve(conn)
    assert resolution is not None
    assert resolution.key == "acme"
    assert await resolver.resolve(bearer(token())) is None


async def test_token_is_read_from_a_websocket_too() -> None:
    conn = connection((b"authorization", f"Bearer {token()}".encode()), scope_type="websocket")
    resolution = await hs256().resolve(conn)
    assert resolution is not None
    assert resolution.key == "acme"


# Forgeries and bad tokens


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_unsigned_alg_none_token_is_refused(alg: str) -> None:
    forged = hand_made({"alg": alg, "typ": "JWT"}, claims(tenant="globex"), key=None)
    await refused(hs256(), bearer(forged))


async def test_token_signed_with_another_key_is_refused() -> None:
    forged = token(claims(tenant="globex"), key=OTHER_SECRET)
    error = await refused(hs256(), bearer(forged))
    assert error.detail == "The bearer token signature does not verify."
    assert forged not in error.detail


async def test_token_with_a_tampered_payload_is_refused() -> None:
    header, _, signature = token().split(".")
    payload = b64(json.dumps(claims(tenant="globex")).encode())
    await refused(hs256(), bearer(f"{header}.{payload}.{signature}"))


async def test_hs256_token_signed_with_the_rs256_public_key_is_refused(
    rsa_public_pem: bytes,
) -> None:
    resolver = JWTClaimResolver(key=rsa_public_pem, algorithms=["RS256"])
    forged = hand_made({"alg": "HS256", "typ": "JWT"}, claims(tenant="globex"), rsa_public_pem)
    error = await refused(resolver, bearer(forged))
    assert error.detail == "The bearer token uses an algorithm that is not allowed."


async def test_algorithm_outside_the_list_is_refused() -> None:
    await refused(hs256(), bearer(token(algorithm="HS512")))


async def test_expired_token_is_refused() -> None:
    error = await refused(hs256(), bearer(token(claims(exp=int(time.time()) - 10))))
    assert error.detail == "The bearer token has expired."


@pytest.mark.parametrize("leeway", [30, 30.0, timedelta(seconds=30)])
async def test_leeway_accepts_a_slightly_expired_token(leeway: float | timedelta) -> None:
    resolver = hs256(leeway=leeway)
    resolution = await resolver.resolve(bearer(token(claims(exp=int(time.time()) - 10))))
    assert resolution is not None
    assert resolution.key == "acme"
    await refused(resolver, bearer(token(claims(exp=int(time.time()) - 60))))


async def test_token_without_exp_is_refused() -> None:
    payload = claims()
    del payload["exp"]
    error = await refused(hs256(), bearer(token(payload)))
    assert error.detail == "The bearer token lacks the required 'exp' claim."


async def test_token_not_valid_yet_is_refused() -> None:
    await refused(hs256(), bearer(token(claims(nbf=int(time.time()) + 600))))


async def test_token_for_another_audience_is_refused() -> None:
    await refused(hs256(audience="my-api"), bearer(token(claims(aud="other-api"))))


async def test_token_for_the_audience_is_accepted() -> None:
    resolution = await hs256(audience=["my-api", "v2"]).resolve(bearer(token(claims(aud="v2"))))
    assert resolution is not None
    assert resolution.key == "acme"


async def test_token_without_audience_is_refused_when_one_is_expected() -> None:
    await refused(hs256(audience="my-api"), bearer(token()))


async def test_token_with_an_audience_is_refused_when_none_is_expected() -> None:
    await refused(hs256(), bearer(token(claims(aud="other-api"))))


async def test_token_from_another_issuer_is_refused() -> None:
    resolver = hs256(issuer="https://issuer.example.test")
    await refused(resolver, bearer(token(claims(iss="https://evil.example.test"))))
    await refused(resolver, bearer(token()))


async def test_token_from_the_issuer_is_accepted() -> None:
    resolver = hs256(issuer="https://issuer.example.test")
    resolution = await resolver.resolve(bearer(token(claims(iss="https://issuer.example.test"))))
    assert resolution is not None
    assert resolution.key == "acme"


@pytest.mark.parametrize(
    "garbage",
    ["garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJIUzI1NiJ9.!!!.???", "é" * 100, "x" * 10_240],
)
async def test_garbage_token_is_refused(garbage: str) -> None:
    error = await refused(hs256(), bearer(garbage))
    assert garbage not in error.detail


async def test_token_whose_payload_is_not_an_object_is_refused() -> None:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64(b'[1, 2]')}"
    signature = b64(hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest())
    await refused(hs256(), bearer(f"{signing_input}.{signature}"))


# The tenant claim


async def test_token_without_the_claim_is_authenticated_with_no_opinion() -> None:
    payload = claims()
    del payload["tenant"]
    resolution = await hs256().resolve(bearer(token(payload)))
    assert resolution == Resolution(None, "jwt", payload)


async def test_dotted_claim_walks_nested_objects() -> None:
    payload = claims(org={"id": "globex", "name": "Globex"})
    resolution = await hs256(claim="org.id").resolve(bearer(token(payload)))
    assert resolution == Resolution("globex", "jwt", payload)


async def test_dotted_claim_missing_in_the_nested_object_has_no_opinion() -> None:
    payload = claims(org={"name": "Globex"})
    resolution = await hs256(claim="org.id").resolve(bearer(token(payload)))
    assert resolution == Resolution(None, "jwt", payload)


async def test_dotted_claim_through_a_non_object_is_refused() -> None:
    await refused(hs256(claim="org.id"), bearer(token(claims(org="globex"))))


async def test_claim_named_by_a_url_is_looked_up_as_is() -> None:
    payload = claims(**{"https://example.test/tenant": "globex"})
    resolver = hs256(claim="https://example.test/tenant")
    resolution = await resolver.resolve(bearer(token(payload)))
    assert resolution is not None
    assert resolution.key == "globex"


@pytest.mark.parametrize("value", [1.5, 42.0, ["acme"], {"id": "acme"}, True, None])
async def test_tenant_claim_that_is_not_a_string_is_refused(value: Any) -> None:
    error = await refused(hs256(), bearer(token(claims(tenant=value))))
    assert error.detail == "The tenant claim must be a string or an integer."


async def test_integer_tenant_claim_is_its_decimal_spelling() -> None:
    resolution = await hs256().resolve(bearer(token(claims(tenant=42))))
    assert resolution is not None
    assert resolution.key == "42"


async def test_tenant_claim_is_not_folded_or_validated_here() -> None:
    resolution = await hs256().resolve(bearer(token(claims(tenant="ACME"))))
    assert resolution is not None
    assert resolution.key == "ACME"


# Public keys


async def test_rs256_token_verifies_with_a_pem_public_key(
    rsa_key: rsa.RSAPrivateKey, rsa_public_pem: bytes
) -> None:
    resolver = JWTClaimResolver(key=rsa_public_pem, algorithms=["RS256"])
    resolution = await resolver.resolve(bearer(token(key=rsa_key, algorithm="RS256")))
    assert resolution is not None
    assert resolution.key == "acme"


async def test_es256_token_verifies_with_a_generated_key(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    resolver = JWTClaimResolver(key=ec_key.public_key(), algorithms=["ES256"])
    resolution = await resolver.resolve(bearer(token(key=ec_key, algorithm="ES256")))
    assert resolution is not None
    assert resolution.key == "acme"


async def test_es256_token_signed_by_another_key_is_refused(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    resolver = JWTClaimResolver(key=ec_key.public_key(), algorithms=["ES256"])
    other = ec.generate_private_key(ec.SECP256R1())
    await refused(resolver, bearer(token(key=other, algorithm="ES256")))


async def test_a_private_key_verifies_with_its_public_half(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    resolver = JWTClaimResolver(key=ec_key, algorithms=["ES256"])
    resolution = await resolver.resolve(bearer(token(key=ec_key, algorithm="ES256")))
    assert resolution is not None
    assert resolution.key == "acme"


# Construction refuses unsafe configurations


@pytest.mark.parametrize(
    ("algorithms", "reason"),
    [
        ([], "at least one"),
        (["none"], "unsigned"),
        (["HS256", "none"], "unsigned"),
        (["NONE"], "unsigned"),
        (["HS257"], "Unknown"),
    ],
)
def test_algorithms_must_be_named_and_signed(algorithms: list[str], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        JWTClaimResolver(key=SECRET, algorithms=algorithms)


def test_algorithms_must_be_a_list_not_a_string() -> None:
    with pytest.raises(TypeError):
        JWTClaimResolver(key=SECRET, algorithms="HS256")


@pytest.mark.parametrize(
    "algorithms", [["HS256", "RS256"], ["ES256", "HS512"], ["HS384", "PS256"], ["EdDSA", "HS256"]]
)
def test_hmac_and_public_key_algorithms_cannot_be_mixed(algorithms: list[str]) -> None:
    with pytest.raises(ValueError, match="key confusion"):
        JWTClaimResolver(key=SECRET, algorithms=algorithms)


def test_a_public_key_cannot_be_an_hmac_secret(rsa_public_pem: bytes) -> None:
    with pytest.raises(ValueError, match="does not fit algorithm HS256"):
        JWTClaimResolver(key=rsa_public_pem, algorithms=["HS256"])


@pytest.mark.parametrize("key", [b"", b"short-secret"])
def test_a_short_hmac_secret_is_refused(key: bytes) -> None:
    with pytest.raises(ValueError, match=r"does not fit|below the minimum"):
        JWTClaimResolver(key=key, algorithms=["HS256"])


def test_a_short_rsa_key_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=BREAKABLE_RSA_BITS)
    with pytest.raises(ValueError, match="below the minimum"):
        JWTClaimResolver(key=weak.public_key(), algorithms=["RS256"])


def test_a_key_must_fit_every_allowed_algorithm(ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError, match="does not fit algorithm RS256"):
        JWTClaimResolver(key=ec_key.public_key(), algorithms=["ES256", "RS256"])
    with pytest.raises(ValueError, match="does not fit algorithm ES384"):
        JWTClaimResolver(key=ec_key.public_key(), algorithms=["ES256", "ES384"])


def test_exactly_one_key_source_is_given() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        JWTClaimResolver(algorithms=["HS256"])
    with pytest.raises(ValueError, match="exactly one"):
        JWTClaimResolver(key=SECRET, jwks_url=JWKS_URL, algorithms=["HS256"])
    with pytest.raises(ValueError, match="exactly one"):
        JWTClaimResolver(
            jwks_url=JWKS_URL, jwks_client=jwt.PyJWKClient(JWKS_URL), algorithms=["RS256"]
        )


@pytest.mark.parametrize("claim", ["", ".", "org.", ".id", "org..id"])
def test_claim_must_be_a_name_or_dotted_path(claim: str) -> None:
    with pytest.raises(ValueError, match="claim name"):
        hs256(claim=claim)


# decode()


def test_decode_returns_the_verified_claims() -> None:
    payload = claims()
    assert hs256().decode(token(payload)) == payload


def test_decode_refuses_a_bad_token() -> None:
    with pytest.raises(InvalidToken):
        hs256().decode(token(key=OTHER_SECRET))


# JWKS


class MemoryJWKClient(jwt.PyJWKClient):
    """PyJWT's own client, served from memory instead of the network."""

    def __init__(self, jwks: dict[str, Any] | Exception | list[Any]) -> None:
        super().__init__(JWKS_URL)
        self.jwks = jwks
        self.fetch_threads: list[int] = []

    def fetch_data(self) -> Any:
        self.fetch_threads.append(threading.get_ident())
        if isinstance(self.jwks, Exception):
            raise self.jwks
        return self.jwks


@pytest.fixture(scope="module")
def jwks(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    rsa_jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    ec_jwk = ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    return {
        "keys": [
            {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
            {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
        ]
    }


def jwks_resolver(client: jwt.PyJWKClient) -> JWTClaimResolver:
    return JWTClaimResolver(jwks_client=client, algorithms=["RS256", "ES256"])


async def test_jwks_key_with_a_known_kid_verifies_the_token(
    jwks: dict[str, Any], rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    client = MemoryJWKClient(jwks)
    resolver = jwks_resolver(client)
    rs = token(key=rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    es = token(claims(tenant="globex"), key=ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    first = await resolver.resolve(bearer(rs))
    second = await resolver.resolve(bearer(es))
    assert first is not None
    assert first.key == "acme"
    assert second is not None
    assert second.key == "globex"
    assert len(client.fetch_threads) == 1, "the key set is cached"


async def test_jwks_is_fetched_off_the_event_loop(
    jwks: dict[str, Any], rsa_key: rsa.RSAPrivateKey
) -> None:
    client = MemoryJWKClient(jwks)
    await jwks_resolver(client).resolve(
        bearer(token(key=rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}))
    )
    assert client.fetch_threads
    assert threading.get_ident() not in client.fetch_threads


async def test_jwks_token_with_an_unknown_kid_is_refused(
    jwks: dict[str, Any], rsa_key: rsa.RSAPrivateKey
) -> None:
    resolver = jwks_resolver(MemoryJWKClient(jwks))
    error = await refused(
        resolver, bearer(token(key=rsa_key, algorithm="RS256", headers={"kid": "rsa-9"}))
    )
    assert error.detail == "The bearer token was signed with an unknown key."


async def test_jwks_token_without_a_kid_is_refused(
    jwks: dict[str, Any], rsa_key: rsa.RSAPrivateKey
) -> None:
    await refused(
        jwks_resolver(MemoryJWKClient(jwks)), bearer(token(key=rsa_key, algorithm="RS256"))
    )


async def test_jwks_token_signed_by_a_stranger_with_a_known_kid_is_refused(
    jwks: dict[str, Any],
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = token(key=stranger, algorithm="RS256", headers={"kid": "rsa-1"})
    await refused(jwks_resolver(MemoryJWKClient(jwks)), bearer(forged))


async def test_jwks_token_whose_alg_differs_from_the_key_is_refused(
    jwks: dict[str, Any], ec_key: ec.EllipticCurvePrivateKey
) -> None:
    forged = token(key=ec_key, algorithm="ES256", headers={"kid": "rsa-1"})
    await refused(jwks_resolver(MemoryJWKClient(jwks)), bearer(forged))


async def test_jwks_hmac_token_made_with_the_published_key_is_refused(
    jwks: dict[str, Any], rsa_public_pem: bytes
) -> None:
    forged = hand_made(
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(tenant="globex"), rsa_public_pem
    )
    await refused(jwks_resolver(MemoryJWKClient(jwks)), bearer(forged))


async def test_jwks_garbage_token_is_refused_without_a_fetch(jwks: dict[str, Any]) -> None:
    client = MemoryJWKClient(jwks)
    await refused(jwks_resolver(client), bearer("garbage"))
    assert client.fetch_threads == []


@pytest.mark.parametrize(
    "failure",
    [
        jwt.PyJWKClientConnectionError("connection refused"),
        URLError("name or service not known"),
        TimeoutError("timed out"),
        ["not", "an", "object"],
        {"keys": []},
        {"keys": [{"kty": "RSA", "kid": "rsa-1"}]},
    ],
)
async def test_jwks_that_cannot_be_fetched_fails_closed(
    failure: Any, rsa_key: rsa.RSAPrivateKey
) -> None:
    resolver = jwks_resolver(MemoryJWKClient(failure))
    with pytest.raises(TenancyUnavailable) as info:
        await resolver.resolve(
            bearer(token(key=rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}))
        )
    assert info.value.status_code == 503


async def test_jwks_decode_verifies_too(jwks: dict[str, Any], rsa_key: rsa.RSAPrivateKey) -> None:
    payload = claims()
    signed = token(payload, key=rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert jwks_resolver(MemoryJWKClient(jwks)).decode(signed) == payload


def test_jwks_url_builds_pyjwt_client_without_fetching() -> None:
    resolver = JWTClaimResolver(jwks_url=JWKS_URL, algorithms=["RS256"])
    assert isinstance(resolver.jwks_client, jwt.PyJWKClient)
    assert resolver.jwks_client.uri == JWKS_URL


def test_jwks_url_must_be_http() -> None:
    with pytest.raises(jwt.PyJWKClientError):
        JWTClaimResolver(jwks_url="file:///etc/passwd", algorithms=["RS256"])


@pytest.mark.parametrize(
    "url",
    ["http://issuer.example.test/.well-known/jwks.json", "http://10.0.0.7/jwks.json"],
)
def test_a_jwks_url_over_plain_http_to_another_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="must use https"):
        JWTClaimResolver(jwks_url=url, algorithms=["RS256"])


@pytest.mark.parametrize(
    "url", ["http://localhost:8080/jwks.json", "http://127.0.0.1/jwks.json", "http://[::1]/j"]
)
def test_a_jwks_url_over_plain_http_on_localhost_is_accepted(url: str) -> None:
    assert JWTClaimResolver(jwks_url=url, algorithms=["RS256"]).jwks_client is not None


# JWKS served over HTTP that misbehaves: bad bodies, slowness, outages, a crowd of requests.
# PyJWT's own PyJWKClient fetches from a local server that counts its hits. Every failure of
# the key source answers 503 tenancy_unavailable: never a 500, never a 401 blaming the token.

DELAY = 0.5  # seconds a slow key set takes; the crowd tests allow 2x this in all
CROWD = 10
UNUSABLE = "The token signing keys could not be read: the JWKS is not a usable key set."


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    with serving(JWKSServer()) as server:
        yield server


@pytest.fixture
def served(jwks_server: JWKSServer, jwks: dict[str, Any]) -> JWKSServer:
    """The endpoint, serving the module's key set."""
    jwks_server.serve(jwks)
    return jwks_server


def rs256(rsa_key: rsa.RSAPrivateKey, kid: str = "rsa-1") -> str:
    return token(key=rsa_key, algorithm="RS256", headers={"kid": kid})


def url_resolver(server: JWKSServer, **options: Any) -> JWTClaimResolver:
    return JWTClaimResolver(jwks_url=server.url, algorithms=["RS256"], **options)


def app_for(resolver: JWTClaimResolver) -> FastAPI:
    app = FastAPI()
    Tenancy(create_engine("sqlite://"), resolvers=[resolver]).install(app)

    @app.get("/whoami")
    async def whoami() -> dict[str, Any]:
        return {"tenant": get_current_tenant()}

    return app


async def get_all(app: FastAPI, signed: str, count: int = 1) -> list[httpx.Response]:
    """``count`` concurrent requests carrying the token ``signed``."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        headers = {"Authorization": f"Bearer {signed}"}
        requests = (client.get("/whoami", headers=headers) for _ in range(count))
        return list(await asyncio.gather(*requests))


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "tenancy_unavailable"
    assert response.headers["Retry-After"]


def bad_bodies(jwks: dict[str, Any]) -> dict[str, bytes | dict[str, Any]]:
    jwk = jwks["keys"][0]
    return {
        "html": b"<html><body>Bad gateway</body></html>",
        "empty": b"",
        "not utf-8": b"\xff\xfe\x00garbage",
        "truncated json": b'{"keys": [{"kty": "RSA"',
        "json list": b'["keys"]',
        "json string": b'"keys"',
        "no keys": {"issuer": "https://issuer.example.test"},
        "keys not a list": {"keys": "rsa-1"},
        "keys empty": {"keys": []},
        "key does not parse": {"keys": [{**jwk, "n": 12345}]},
        "key without kty": {"keys": [{"kid": "rsa-1", "n": jwk["n"], "e": jwk["e"]}]},
        "no signing key": {"keys": [{**jwk, "use": "enc"}]},
    }


BAD_BODIES = list(bad_bodies({"keys": [{"n": "", "e": ""}]}))


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_jwks_body_that_is_not_a_usable_key_set_is_503(
    body: str, jwks_server: JWKSServer, jwks: dict[str, Any], rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve(bad_bodies(jwks)[body])
    [response] = await get_all(app_for(url_resolver(jwks_server)), rs256(rsa_key))
    assert_unavailable(response)
    assert "rsa-1" not in response.text
    assert jwks_server.hits == 1


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_jwks_503_detail_is_a_fixed_sentence(
    body: str, jwks_server: JWKSServer, jwks: dict[str, Any], rsa_key: rsa.RSAPrivateKey
) -> None:
    """The detail goes to the log: it names the problem, not the body or PyJWT's message."""
    jwks_server.serve(bad_bodies(jwks)[body])
    with pytest.raises(TenancyUnavailable) as info:
        await url_resolver(jwks_server).resolve(bearer(rs256(rsa_key)))
    assert info.value.detail == UNUSABLE
    assert info.value.__cause__ is not None  # the log's traceback says what was wrong


async def test_jwks_unknown_kid_after_a_fresh_fetch_is_401(
    served: JWKSServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    app = app_for(url_resolver(served))
    [response] = await get_all(app, rs256(rsa_key, kid="rsa-9"))
    assert (response.status_code, response.json()["code"]) == (401, "invalid_token")
    [again] = await get_all(app, rs256(rsa_key, kid="rsa-8"))
    assert again.status_code == 401
    assert served.hits == 1, "a fresh key set is not fetched again for every unknown kid"
    [known] = await get_all(app, rs256(rsa_key))
    assert known.json() == {"tenant": "acme"}
    assert served.hits == 1


async def test_jwks_garbage_token_over_http_is_401_without_a_fetch(served: JWKSServer) -> None:
    await refused(url_resolver(served), bearer("not-a-token"))
    assert served.hits == 0


# Single flight: a crowd shares one fetch, and its failure


async def test_jwks_crowd_shares_one_slow_fetch(
    served: JWKSServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    served.serve(served.answer.body, delay=DELAY)
    app = app_for(url_resolver(served))
    started = time.monotonic()
    responses = await get_all(app, rs256(rsa_key), count=CROWD)
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * CROWD, responses[0].text
    assert served.hits == 1
    assert elapsed < 2 * DELAY, f"{CROWD} requests took {elapsed:.2f}s: the fetches queued"


async def test_jwks_crowd_waits_on_the_event_loop_not_in_worker_threads(
    served: JWKSServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    served.serve(served.answer.body, delay=DELAY)
    app = app_for(url_resolver(served))
    limiter = anyio.to_thread.current_default_thread_limiter()
    borrowed: list[float] = []
    ticks = 0

    async def watch() -> None:
        nonlocal ticks
        await anyio.sleep(DELAY / 2)
        borrowed.append(limiter.borrowed_tokens)
        while len(borrowed) < 2:
            ticks += 1
            await anyio.sleep(0.01)

    async def crowd() -> None:
        responses = await get_all(app, rs256(rsa_key), count=CROWD)
        assert [r.status_code for r in responses] == [200] * CROWD
        borrowed.append(limiter.borrowed_tokens)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        tg.start_soon(crowd)
    assert borrowed[0] == 1, "one worker thread fetches; the others wait without one"
    assert ticks > 5, "the event loop kept running during the fetch"


async def test_jwks_crowd_shares_one_failure_and_the_first_request_after_recovery_succeeds(
    jwks_server: JWKSServer, jwks: dict[str, Any], rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.serve(b"upstream down", status=502, delay=DELAY / 2)
    app = app_for(url_resolver(jwks_server))
    for response in await get_all(app, rs256(rsa_key), count=CROWD):
        assert_unavailable(response)
    assert jwks_server.hits == 1

    # Right after the failure: answered from memory, no thundering herd on the endpoint.
    jwks_server.serve(jwks)
    for response in await get_all(app, rs256(rsa_key), count=CROWD):
        assert_unavailable(response)
    assert jwks_server.hits == 1

    await anyio.sleep(RETRY_AFTER_FAILURE + 0.1)
    responses = await get_all(app, rs256(rsa_key), count=CROWD)
    assert [r.json() for r in responses] == [{"tenant": "acme"}] * CROWD
    assert jwks_server.hits == 2


async def test_jwks_unreachable_is_503_for_every_request(rsa_key: rsa.RSAPrivateKey) -> None:
    server = JWKSServer()  # bound, never served, then closed: nothing listens on the port
    url = server.url
    server.server_close()
    app = app_for(JWTClaimResolver(jwks_url=url, algorithms=["RS256"]))
    for response in await get_all(app, rs256(rsa_key), count=CROWD):
        assert_unavailable(response)


# The fetch timeout


async def test_jwks_fetch_slower_than_the_timeout_is_503_within_the_timeout(
    served: JWKSServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    timeout = 0.3
    served.serve(served.answer.body, delay=2.0)
    app = app_for(url_resolver(served, jwks_timeout=timeout))
    started = time.monotonic()
    responses = await get_all(app, rs256(rsa_key), count=CROWD)
    elapsed = time.monotonic() - started
    for response in responses:
        assert_unavailable(response)
    assert served.hits == 1
    assert elapsed < timeout + 1.0, f"answered after {elapsed:.2f}s"


async def test_jwks_timeout_bounds_a_client_of_your_own_too(
    served: JWKSServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    """A ``jwks_client`` with PyJWT's 30-second default: requests still wait ``jwks_timeout``.
    The abandoned fetch still ends, and its keys serve the requests after it."""
    slow = 1.0
    served.serve(served.answer.body, delay=slow)
    client = jwt.PyJWKClient(served.url)  # timeout=30
    resolver = JWTClaimResolver(jwks_client=client, algorithms=["RS256"], jwks_timeout=0.3)
    app = app_for(resolver)
    started = time.monotonic()
    for response in await get_all(app, rs256(rsa_key), count=CROWD):
        assert_unavailable(response)
    assert time.monotonic() - started < slow
    await anyio.sleep(slow + 0.2)
    [response] = await get_all(app, rs256(rsa_key))
    assert response.json() == {"tenant": "acme"}
    assert served.hits == 1


def test_jwks_timeout_is_passed_to_pyjwt(served: JWKSServer) -> None:
    default = url_resolver(served)
    assert default.jwks_timeout == 3.0
    assert default.jwks_client is not None
    assert default.jwks_client.timeout == 3.0
    resolver = url_resolver(served, jwks_timeout=1.5)
    assert resolver.jwks_client is not None
    assert resolver.jwks_client.timeout == 1.5


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), "3", None, True])
def test_jwks_timeout_must_be_a_positive_number(timeout: Any) -> None:
    with pytest.raises(ValueError, match="jwks_timeout"):
        JWTClaimResolver(jwks_url=JWKS_URL, algorithms=["RS256"], jwks_timeout=timeout)


# Other callers share the fetch too: decode() from threads, and other event loops


def test_jwks_decode_from_many_threads_shares_one_fetch(
    served: JWKSServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    served.serve(served.answer.body, delay=DELAY)
    resolver = url_resolver(served)
    signed = rs256(rsa_key)
    tenants: list[Any] = []

    def decode() -> None:
        tenants.append(resolver.decode(signed)["tenant"])

    threads = [threading.Thread(target=decode) for _ in range(CROWD)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tenants == ["acme"] * CROWD
    assert served.hits == 1


def test_jwks_several_event_loops_share_one_fetch(
    served: JWKSServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    served.serve(served.answer.body, delay=DELAY)
    app = app_for(url_resolver(served))
    statuses: list[int] = []

    def loop() -> None:
        responses = anyio.run(get_all, app, rs256(rsa_key), 3)
        statuses.extend(r.status_code for r in responses)

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 9
    assert served.hits == 1
