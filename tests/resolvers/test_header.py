from __future__ import annotations

import pytest
from starlette.requests import HTTPConnection

from fastapi_tenancy.chain import ResolverChain
from fastapi_tenancy.exceptions import AmbiguousTenant, InvalidTenantKey
from fastapi_tenancy.keys import KeyValidator
from fastapi_tenancy.resolvers import HeaderResolver, Resolution

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def connection(*headers: tuple[bytes, bytes], scope_type: str = "http") -> HTTPConnection:
    """A real connection whose scope carries exactly these raw headers."""
    return HTTPConnection({"type": scope_type, "path": "/", "headers": list(headers)})


async def resolve(*headers: tuple[bytes, bytes]) -> Resolution | None:
    return await HeaderResolver().resolve(connection(*headers))


async def test_missing_header_has_no_opinion() -> None:
    assert await resolve((b"host", b"acme.example.test")) is None


async def test_header_value_is_the_key() -> None:
    assert await resolve((b"x-tenant-id", b"acme")) == Resolution("acme", "header")


async def test_header_name_is_matched_case_insensitively() -> None:
    resolver = HeaderResolver("X-Org")
    assert await resolver.resolve(connection((b"x-org", b"acme"))) == Resolution("acme", "header")


async def test_empty_header_is_not_no_opinion() -> None:
    assert await resolve((b"x-tenant-id", b"")) == Resolution("", "header")


async def test_empty_header_is_refused_by_key_validation() -> None:
    chain = ResolverChain([HeaderResolver()], validate_key=KeyValidator())
    with pytest.raises(InvalidTenantKey):
        await chain.resolve(connection((b"x-tenant-id", b"")))


@pytest.mark.parametrize("value", [b" ", b"\t", b" acme", b"acme "])
async def test_whitespace_is_not_stripped_so_validation_refuses_it(value: bytes) -> None:
    assert await resolve((b"x-tenant-id", value)) == Resolution(value.decode(), "header")
    chain = ResolverChain([HeaderResolver()], validate_key=KeyValidator())
    with pytest.raises(InvalidTenantKey):
        await chain.resolve(connection((b"x-tenant-id", value)))


async def test_upper_case_header_is_not_folded_into_another_tenant() -> None:
    assert await resolve((b"x-tenant-id", b"ACME")) == Resolution("ACME", "header")
    chain = ResolverChain([HeaderResolver()], validate_key=KeyValidator())
    with pytest.raises(InvalidTenantKey):
        await chain.resolve(connection((b"x-tenant-id", b"ACME")))


async def test_unicode_header_reaches_validation_unchanged_and_is_refused() -> None:
    raw = "acmé".encode()
    resolution = await resolve((b"x-tenant-id", raw))
    assert resolution == Resolution(raw.decode("latin-1"), "header")
    chain = ResolverChain([HeaderResolver()], validate_key=KeyValidator())
    with pytest.raises(InvalidTenantKey):
        await chain.resolve(connection((b"x-tenant-id", raw)))


async def test_ten_kilobyte_header_is_refused_by_key_validation() -> None:
    value = b"a" * 10_240
    assert await resolve((b"x-tenant-id", value)) == Resolution(value.decode(), "header")
    chain = ResolverChain([HeaderResolver()], validate_key=KeyValidator())
    with pytest.raises(InvalidTenantKey):
        await chain.resolve(connection((b"x-tenant-id", value)))


async def test_header_repeated_with_the_same_value_is_that_value() -> None:
    resolution = await resolve((b"x-tenant-id", b"acme"), (b"x-tenant-id", b"acme"))
    assert resolution == Resolution("acme", "header")


async def test_header_repeated_with_different_values_is_ambiguous() -> None:
    with pytest.raises(AmbiguousTenant) as info:
        await resolve((b"x-tenant-id", b"acme"), (b"x-tenant-id", b"globex"))
    assert info.value.status_code == 400
    assert info.value.code == "ambiguous_tenant"
    assert "globex" not in info.value.detail


async def test_header_repeated_with_a_different_case_is_ambiguous() -> None:
    with pytest.raises(AmbiguousTenant):
        await resolve((b"x-tenant-id", b"acme"), (b"x-tenant-id", b"ACME"))


async def test_comma_joined_header_is_one_invalid_key_not_two_tenants() -> None:
    assert await resolve((b"x-tenant-id", b"acme, globex")) == Resolution("acme, globex", "header")


async def test_header_is_read_from_a_websocket_too() -> None:
    conn = connection((b"x-tenant-id", b"acme"), scope_type="websocket")
    assert await HeaderResolver().resolve(conn) == Resolution("acme", "header")


def test_header_resolver_needs_a_name() -> None:
    with pytest.raises(ValueError, match="header name"):
        HeaderResolver("")
