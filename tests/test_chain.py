from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fastapi_tenancy.chain import ChainResult, ResolverChain
from fastapi_tenancy.exceptions import (
    AmbiguousTenant,
    InvalidTenantKey,
    InvalidToken,
    TenancyError,
    TenancyUnavailable,
    TenantMismatch,
    TenantNotFound,
)
from fastapi_tenancy.keys import DEFAULT_KEY_PATTERN, KeyValidator
from fastapi_tenancy.resolvers import (
    HeaderResolver,
    JWTClaimResolver,
    SubdomainResolver,
)

pytestmark = pytest.mark.anyio

SECRET = b"a-test-secret-long-enough-for-hs512-" * 2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def connection(*headers: tuple[bytes, bytes], scope_type: str = "http") -> HTTPConnection:
    """A real connection whose scope carries exactly these raw headers."""
    return HTTPConnection({"type": scope_type, "path": "/", "headers": list(headers)})


def token(**claims: Any) -> str:
    payload = {"sub": "ann@acme.test", "tenant": "acme", "exp": int(time.time()) + 60, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SECRET)


def auth(value: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {value}".encode())


def host(value: str) -> tuple[bytes, bytes]:
    return (b"host", value.encode())


def header(value: str) -> tuple[bytes, bytes]:
    return (b"x-tenant-id", value.encode())


def app_chain() -> ResolverChain:
    """The example app's order: the token's claim, then the subdomain, then the header."""
    return ResolverChain(
        [
            JWTClaimResolver(key=SECRET, algorithms=["HS256"]),
            SubdomainResolver("example.test"),
            HeaderResolver(),
        ],
        validate_key=KeyValidator(),
    )


def raising(error: TenancyError) -> Callable[[HTTPConnection], str | None]:
    def resolve(conn: HTTPConnection) -> str | None:
        raise error

    return resolve


def answering(key: str | None) -> Callable[[HTTPConnection], str | None]:
    return lambda conn: key


# Answers


async def test_no_answers_give_an_empty_result() -> None:
    result = await app_chain().resolve(connection(host("testserver")))
    assert result == ChainResult(None, None, None)


async def test_first_answer_in_chain_order_wins() -> None:
    result = await app_chain().resolve(
        connection(auth(token()), host("acme.example.test"), header("acme"))
    )
    assert result.key == "acme"
    assert result.source == "jwt"


async def test_later_source_answers_when_earlier_ones_have_no_opinion() -> None:
    result = await app_chain().resolve(connection(host("testserver"), header("globex")))
    assert result == ChainResult("globex", "header", None)


async def test_agreeing_sources_pass() -> None:
    result = await app_chain().resolve(connection(host("acme.example.test"), header("acme")))
    assert result == ChainResult("acme", "subdomain", None)


async def test_every_resolver_is_asked_even_after_an_answer() -> None:
    asked: list[str] = []

    def record(name: str) -> Callable[[HTTPConnection], str]:
        def resolve(conn: HTTPConnection) -> str:
            asked.append(name)
            return "acme"

        return resolve

    chain = ResolverChain([record("a"), record("b"), record("c")], validate_key=KeyValidator())
    await chain.resolve(connection())
    assert asked == ["a", "b", "c"]


async def test_claims_are_kept_when_the_token_has_no_tenant_claim() -> None:
    signed = token(tenant=None)
    result = await app_chain().resolve(connection(auth(signed), header("globex")))
    assert result.key == "globex"
    assert result.source == "header"
    assert result.claims is not None
    assert result.claims["sub"] == "ann@acme.test"


async def test_claims_come_with_the_token_tenant() -> None:
    result = await app_chain().resolve(connection(auth(token())))
    assert result.key == "acme"
    assert result.claims is not None
    assert result.claims["tenant"] == "acme"


async def test_claims_without_any_tenant_are_returned_with_no_key() -> None:
    result = await app_chain().resolve(connection(auth(token(tenant=None))))
    assert result.key is None
    assert result.source is None
    assert result.claims is not None


async def test_sync_and_async_callables_are_resolvers() -> None:
    async def from_async(conn: HTTPConnection) -> str | None:
        return "acme"

    chain = ResolverChain([answering(None), from_async, answering("acme")], validate_key=str)
    result = await chain.resolve(connection())
    assert result == ChainResult("acme", "custom", None)


async def test_chain_resolves_a_websocket_too() -> None:
    conn = connection(host("acme.example.test"), scope_type="websocket")
    assert await app_chain().resolve(conn) == ChainResult("acme", "subdomain", None)


# Disagreement


async def test_header_cannot_override_tenant_in_token() -> None:
    with pytest.raises(TenantMismatch) as info:
        await app_chain().resolve(connection(auth(token()), header("globex")))
    assert info.value.status_code == 403
    assert info.value.code == "tenant_mismatch"
    assert "globex" not in info.value.detail


async def test_subdomain_cannot_override_tenant_in_token() -> None:
    with pytest.raises(TenantMismatch):
        await app_chain().resolve(connection(auth(token()), host("globex.example.test")))


async def test_header_cannot_override_tenant_in_subdomain() -> None:
    with pytest.raises(TenantMismatch):
        await app_chain().resolve(connection(host("acme.example.test"), header("globex")))


async def test_keys_are_compared_as_sent_so_case_differences_disagree() -> None:
    with pytest.raises(TenantMismatch):
        await app_chain().resolve(connection(host("acme.example.test"), header("ACME")))


async def test_disagreement_of_late_sources_is_caught_too() -> None:
    chain = ResolverChain(
        [answering("acme"), answering("acme"), answering("globex")], validate_key=str
    )
    with pytest.raises(TenantMismatch):
        await chain.resolve(connection())


# Bad tokens and error precedence


async def test_invalid_token_never_falls_through_to_the_header() -> None:
    forged = jwt.encode({"tenant": "globex", "exp": int(time.time()) + 60}, b"x" * 64)
    with pytest.raises(InvalidToken):
        await app_chain().resolve(connection(auth(forged), header("globex")))


async def test_expired_token_never_falls_through_to_the_subdomain() -> None:
    expired = token(exp=int(time.time()) - 60)
    with pytest.raises(InvalidToken):
        await app_chain().resolve(connection(auth(expired), host("acme.example.test")))


async def test_invalid_token_wins_over_a_mismatch_of_other_sources() -> None:
    with pytest.raises(InvalidToken):
        await app_chain().resolve(
            connection(auth("garbage"), host("acme.example.test"), header("globex"))
        )


async def test_invalid_token_wins_over_an_invalid_key() -> None:
    with pytest.raises(InvalidToken):
        await app_chain().resolve(connection(auth("garbage"), header("")))


@pytest.mark.parametrize(
    ("resolvers", "expected"),
    [
        ([raising(TenancyUnavailable()), raising(InvalidToken())], InvalidToken),
        ([raising(AmbiguousTenant()), raising(TenancyUnavailable())], TenancyUnavailable),
        (
            [answering("acme"), answering("globex"), raising(TenancyUnavailable())],
            TenancyUnavailable,
        ),
        ([answering("acme"), answering("globex"), raising(AmbiguousTenant())], AmbiguousTenant),
        ([answering("acme"), answering("globex"), raising(InvalidTenantKey())], TenantMismatch),
        ([answering("acme"), answering("globex"), raising(TenantNotFound())], TenantMismatch),
        ([answering("ACME"), raising(TenantNotFound())], InvalidTenantKey),
        ([raising(TenantNotFound()), raising(InvalidTenantKey())], InvalidTenantKey),
        ([answering("acme"), raising(TenantNotFound())], TenantNotFound),
        ([answering("ACME"), answering("ACME")], InvalidTenantKey),
    ],
)
async def test_errors_answer_in_the_contract_order(
    resolvers: list[Callable[[HTTPConnection], str | None]], expected: type[TenancyError]
) -> None:
    chain = ResolverChain(resolvers, validate_key=KeyValidator())
    with pytest.raises(expected):
        await chain.resolve(connection())


async def test_of_equal_errors_the_first_in_chain_order_answers() -> None:
    first, second = InvalidToken("first"), InvalidToken("second")
    chain = ResolverChain([raising(first), raising(second)], validate_key=str)
    with pytest.raises(InvalidToken) as info:
        await chain.resolve(connection())
    assert info.value is first


async def test_errors_that_are_not_tenancy_errors_propagate_unchanged() -> None:
    bug = RuntimeError("a bug in a resolver")

    def broken(conn: HTTPConnection) -> str | None:
        raise bug

    chain = ResolverChain([raising(InvalidToken()), broken], validate_key=str)
    with pytest.raises(RuntimeError) as info:
        await chain.resolve(connection())
    assert info.value is bug


# Key validation


async def test_key_is_validated_after_sources_agree() -> None:
    with pytest.raises(InvalidTenantKey):
        await app_chain().resolve(connection(auth(token(tenant="ACME")), header("ACME")))


async def test_token_tenant_is_validated_like_any_other_key() -> None:
    with pytest.raises(InvalidTenantKey):
        await app_chain().resolve(connection(auth(token(tenant="../globex"))))


async def test_key_is_what_the_validator_returns() -> None:
    chain = ResolverChain([answering("Acme")], validate_key=str.lower)
    assert (await chain.resolve(connection())).key == "acme"


async def test_validator_is_not_called_without_a_key() -> None:
    def never(key: str) -> str:
        raise AssertionError("called")

    chain = ResolverChain([answering(None)], validate_key=never)
    assert await chain.resolve(connection()) == ChainResult(None, None, None)


def test_resolvers_are_converted_once_at_construction() -> None:
    chain = ResolverChain([HeaderResolver(), answering("acme")], validate_key=str)
    assert isinstance(chain.resolvers, tuple)
    with pytest.raises(TypeError):
        ResolverChain([HeaderResolver], validate_key=str)


@pytest.mark.parametrize("key", ["acme", "a", "a" * 63, "a-b_c", "0x", "9", "acme-corp-2"])
def test_default_key_pattern_accepts(key: str) -> None:
    assert KeyValidator()(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "a" * 64,
        "-acme",
        "_acme",
        "Acme",
        "ACME",
        "acme.corp",
        "acme\n",
        "\nacme",
        "acmé",
        "acme corp",
        " acme",
        "acme ",
        "acme/..",
        "acme\x00",
        "a" * 10_240,
    ],
)
def test_default_key_pattern_rejects(key: str) -> None:
    with pytest.raises(InvalidTenantKey) as info:
        KeyValidator()(key)
    assert info.value.status_code == 400
    assert info.value.code == "invalid_tenant_key"


def test_default_key_pattern_is_the_documented_one() -> None:
    assert DEFAULT_KEY_PATTERN == r"[a-z0-9][a-z0-9_-]{0,62}"


@pytest.mark.parametrize("pattern", [r"[A-Z]{3}", re.compile(r"[A-Z]{3}")])
def test_custom_key_pattern_is_used(pattern: str | re.Pattern[str]) -> None:
    validate = KeyValidator(pattern)
    assert validate("ACM") == "ACM"
    for key in ("acm", "ACME", "AC", "ACM\n"):
        with pytest.raises(InvalidTenantKey):
            validate(key)


# Through a tiny app (httpx's ASGI transport: Starlette's TestClient now warns without httpx2)


async def tenant_endpoint(request: Request) -> JSONResponse:
    chain: ResolverChain = request.app.state.chain
    try:
        result = await chain.resolve(request)
    except TenancyError as exc:
        return JSONResponse({"detail": exc.detail, "code": exc.code}, exc.status_code)
    return JSONResponse({"tenant": result.key, "source": result.source})


def client(base_url: str = "http://acme.example.test") -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/", tenant_endpoint)])
    app.state.chain = app_chain()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def test_subdomain_names_the_tenant_over_http() -> None:
    async with client() as http:
        r = await http.get("/")
    assert r.status_code == 200, r.text
    assert r.json() == {"tenant": "acme", "source": "subdomain"}


async def test_header_cannot_override_subdomain_over_http() -> None:
    async with client() as http:
        r = await http.get("/", headers={"X-Tenant-ID": "globex"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "tenant_mismatch"


async def test_header_cannot_override_token_over_http() -> None:
    headers = {"Authorization": f"Bearer {token()}", "X-Tenant-ID": "globex"}
    async with client("http://testserver") as http:
        r = await http.get("/", headers=headers)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "tenant_mismatch"


async def test_bad_token_answers_401_over_http() -> None:
    async with client() as http:
        r = await http.get("/", headers={"Authorization": "Bearer garbage"})
    assert r.status_code == 401, r.text
    assert r.json() == {"detail": "The bearer token is malformed.", "code": "invalid_token"}
