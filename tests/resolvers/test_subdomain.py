from __future__ import annotations

import time

import pytest
from starlette.requests import HTTPConnection

from fastapi_tenancy.chain import ResolverChain
from fastapi_tenancy.exceptions import AmbiguousTenant, InvalidTenantKey
from fastapi_tenancy.keys import KeyValidator
from fastapi_tenancy.resolvers import Resolution, SubdomainResolver

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def connection(*headers: tuple[bytes, bytes], scope_type: str = "http") -> HTTPConnection:
    """A real connection whose scope carries exactly these raw headers."""
    return HTTPConnection({"type": scope_type, "path": "/", "headers": list(headers)})


async def key_for(host: bytes | str, position: str = "last") -> str | None:
    raw = host.encode("latin-1") if isinstance(host, str) else host
    resolver = SubdomainResolver("example.test", position=position)  # type: ignore[arg-type]
    resolution = await resolver.resolve(connection((b"host", raw)))
    if resolution is None:
        return None
    assert resolution.source == "subdomain"
    return resolution.key


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("acme.example.test", "acme"),
        ("ACME.Example.TEST", "acme"),
        ("acme.example.test.", "acme"),
        ("acme.example.test:8000", "acme"),
        ("ACME.EXAMPLE.TEST.:443", "acme"),
        ("a-b_c.example.test", "a-b_c"),
        ("xn--acm-bma.example.test", "xn--acm-bma"),
    ],
)
async def test_subdomain_is_folded_and_stripped_of_port_and_trailing_dot(
    host: str, expected: str
) -> None:
    assert await key_for(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1:8000",
        "10.0.0.1.",
        "[::1]",
        "[::1]:8000",
        "[2001:db8::1]:443",
        "::1",
        "2001:db8::1",
        "[acme.example.test]",
    ],
)
async def test_ip_literals_have_no_opinion(host: str) -> None:
    assert await key_for(host) is None


@pytest.mark.parametrize(
    "host",
    [
        "example.test",
        "EXAMPLE.TEST.",
        "example.test:8000",
        "evilexample.test",
        "acme.evilexample.test",
        "acme.example.test.evil.test",
        "acme.example.testing",
        "example.test.acme",
        "testserver",
        "",
    ],
)
async def test_hosts_that_are_not_under_the_base_domain_have_no_opinion(host: str) -> None:
    assert await key_for(host) is None


async def test_missing_host_has_no_opinion() -> None:
    resolver = SubdomainResolver("example.test")
    assert await resolver.resolve(connection((b"x-tenant-id", b"acme"))) is None


@pytest.mark.parametrize("position", ["first", "last"])
@pytest.mark.parametrize("host", ["www.example.test", "WWW.example.test", "www.www.example.test"])
async def test_www_has_no_opinion(host: str, position: str) -> None:
    assert await key_for(host, position) is None


@pytest.mark.parametrize("position", ["first", "last"])
async def test_www_in_front_of_a_tenant_is_that_tenant(position: str) -> None:
    assert await key_for("www.acme.example.test", position) == "acme"


async def test_nested_subdomain_takes_the_label_next_to_the_base_domain_by_default() -> None:
    assert await key_for("x.acme.example.test") == "acme"
    assert await key_for("a.b.c.acme.example.test") == "acme"


async def test_nested_subdomain_takes_the_leftmost_label_with_position_first() -> None:
    assert await key_for("x.acme.example.test", "first") == "x"
    assert await key_for("www.x.acme.example.test", "first") == "x"


async def test_www_next_to_the_base_domain_has_no_opinion_with_position_last() -> None:
    assert await key_for("acme.www.example.test") is None


@pytest.mark.parametrize("position", ["first", "last"])
@pytest.mark.parametrize(
    "host", [".acme.example.test", "a..example.test", ".example.test", "acme..example.test."]
)
async def test_empty_label_answers_an_empty_key_rather_than_no_opinion(
    host: str, position: str
) -> None:
    assert await key_for(host, position) == ""


async def test_empty_label_is_refused_by_key_validation() -> None:
    chain = ResolverChain([SubdomainResolver("example.test")], validate_key=KeyValidator())
    with pytest.raises(InvalidTenantKey):
        await chain.resolve(connection((b"host", b".acme.example.test")))


async def test_unicode_host_reaches_validation_unfolded_and_is_refused() -> None:
    raw = "acmé.example.test".encode()
    key = await key_for(raw)
    assert key == "acmé".encode().decode("latin-1")
    chain = ResolverChain([SubdomainResolver("example.test")], validate_key=KeyValidator())
    with pytest.raises(InvalidTenantKey):
        await chain.resolve(connection((b"host", raw)))


async def test_unicode_case_folding_cannot_turn_a_host_into_an_ascii_tenant() -> None:
    # str.casefold() would make "STRAßE" into "strasse", a valid key for another tenant.
    key = await key_for("STRAßE.Example.Test".encode("latin-1"))
    assert key == "straße"
    with pytest.raises(InvalidTenantKey):
        KeyValidator()(key)


@pytest.mark.parametrize("position", ["first", "last"])
async def test_ten_kilobyte_host_is_cheap(position: str) -> None:
    hosts = [
        b"a" * 10_240 + b".example.test",
        b"a." * 5_120 + b"example.test",
        b"." * 10_240 + b"example.test",
        b"1." * 5_120 + b"1",
        b"[" + b":" * 10_240,
        b"a" * 10_240 + b":" + b"1" * 10_240,
        b"a" * 10_240,
    ]
    started = time.perf_counter()
    for _ in range(20):
        for host in hosts:
            await key_for(host, position)
    assert time.perf_counter() - started < 1.0


async def test_ten_kilobyte_label_is_refused_by_key_validation() -> None:
    chain = ResolverChain([SubdomainResolver("example.test")], validate_key=KeyValidator())
    with pytest.raises(InvalidTenantKey):
        await chain.resolve(connection((b"host", b"a" * 10_240 + b".example.test")))


async def test_host_repeated_with_the_same_value_is_that_value() -> None:
    conn = connection((b"host", b"acme.example.test"), (b"host", b"acme.example.test"))
    assert await SubdomainResolver("example.test").resolve(conn) == Resolution("acme", "subdomain")


async def test_host_repeated_with_different_values_is_ambiguous() -> None:
    conn = connection((b"host", b"acme.example.test"), (b"host", b"globex.example.test"))
    with pytest.raises(AmbiguousTenant):
        await SubdomainResolver("example.test").resolve(conn)


async def test_host_is_read_from_a_websocket_too() -> None:
    conn = connection((b"host", b"acme.example.test"), scope_type="websocket")
    assert await SubdomainResolver("example.test").resolve(conn) == Resolution("acme", "subdomain")


async def test_base_domain_is_normalised_like_the_host() -> None:
    resolver = SubdomainResolver("Example.Test.:8000")
    assert resolver.base_domain == "example.test"
    conn = connection((b"host", b"acme.example.test"))
    assert await resolver.resolve(conn) == Resolution("acme", "subdomain")


async def test_base_domain_may_itself_have_several_labels() -> None:
    resolver = SubdomainResolver("apps.example.test")
    resolve = resolver.resolve
    assert await resolve(connection((b"host", b"acme.apps.example.test"))) == Resolution(
        "acme", "subdomain"
    )
    assert await resolve(connection((b"host", b"apps.example.test"))) is None
    assert await resolve(connection((b"host", b"acme.example.test"))) is None


@pytest.mark.parametrize(
    "base_domain", ["", ".", "127.0.0.1", "[::1]", ".example.test", "a..test", "exämple.test"]
)
def test_base_domain_must_be_an_ascii_domain_name(base_domain: str) -> None:
    with pytest.raises(ValueError, match=r"domain name|ASCII"):
        SubdomainResolver(base_domain)


def test_position_must_be_first_or_last() -> None:
    with pytest.raises(ValueError, match="position"):
        SubdomainResolver("example.test", position="middle")  # type: ignore[arg-type]
