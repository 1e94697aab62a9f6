from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import HTTPConnection

from fastapi_tenancy.exceptions import InvalidTenantKey
from fastapi_tenancy.resolvers import (
    CallableResolver,
    HeaderResolver,
    Resolution,
    Resolver,
    as_resolver,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def connection(*headers: tuple[bytes, bytes]) -> HTTPConnection:
    """A real connection whose scope carries exactly these raw headers."""
    return HTTPConnection(
        {"type": "http", "path": "/", "query_string": b"tenant=acme", "headers": list(headers)}
    )


def from_query(conn: HTTPConnection) -> str | None:
    return conn.query_params.get("tenant")


async def from_query_async(conn: HTTPConnection) -> str | None:
    return conn.query_params.get("tenant")


async def test_sync_function_names_the_tenant() -> None:
    resolution = await CallableResolver(from_query).resolve(connection())
    assert resolution == Resolution("acme", "custom")


async def test_async_function_is_awaited() -> None:
    resolution = await CallableResolver(from_query_async, source="query").resolve(connection())
    assert resolution == Resolution("acme", "query")


async def test_callable_object_with_async_call_is_awaited() -> None:
    class Lookup:
        async def __call__(self, conn: HTTPConnection) -> str | None:
            return "globex"

    assert await CallableResolver(Lookup()).resolve(connection()) == Resolution("globex", "custom")


async def test_function_returning_none_has_no_opinion() -> None:
    assert await CallableResolver(lambda conn: None).resolve(connection()) is None


async def test_function_returning_an_empty_string_is_an_answer_not_no_opinion() -> None:
    assert await CallableResolver(lambda conn: "").resolve(connection()) == Resolution("", "custom")


@pytest.mark.parametrize("value", [42, b"acme", ["acme"], True])
async def test_function_returning_a_non_string_is_a_bug(value: Any) -> None:
    with pytest.raises(TypeError):
        await CallableResolver(lambda conn: value).resolve(connection())


async def test_tenancy_error_from_the_function_propagates() -> None:
    def refuse(conn: HTTPConnection) -> str | None:
        raise InvalidTenantKey("nope")

    with pytest.raises(InvalidTenantKey):
        await CallableResolver(refuse).resolve(connection())


def test_callable_resolver_needs_a_callable() -> None:
    with pytest.raises(TypeError):
        CallableResolver("acme")  # type: ignore[arg-type]


def test_as_resolver_passes_a_resolver_through() -> None:
    resolver = HeaderResolver()
    assert as_resolver(resolver) is resolver


async def test_as_resolver_wraps_a_plain_function() -> None:
    resolver = as_resolver(from_query)
    assert isinstance(resolver, CallableResolver)
    assert await resolver.resolve(connection()) == Resolution("acme", "custom")


async def test_as_resolver_passes_a_custom_resolver_class_through() -> None:
    class Fixed:
        source = "fixed"

        async def resolve(self, conn: HTTPConnection) -> Resolution | None:
            return Resolution("initech", self.source)

    fixed: Resolver = Fixed()
    assert as_resolver(fixed) is fixed


def test_as_resolver_refuses_a_resolver_class_instead_of_an_instance() -> None:
    with pytest.raises(TypeError, match="instance"):
        as_resolver(HeaderResolver)


def test_as_resolver_refuses_a_sync_resolve_method() -> None:
    class Sync:
        source = "sync"

        def resolve(self, conn: HTTPConnection) -> Resolution | None:
            return None

    with pytest.raises(TypeError, match="async"):
        as_resolver(Sync())  # type: ignore[arg-type]


def test_as_resolver_refuses_a_resolver_without_a_source() -> None:
    class Nameless:
        async def resolve(self, conn: HTTPConnection) -> Resolution | None:
            return None

    with pytest.raises(TypeError, match="source"):
        as_resolver(Nameless())  # type: ignore[arg-type]


def test_as_resolver_refuses_what_is_neither() -> None:
    with pytest.raises(TypeError):
        as_resolver("acme")  # type: ignore[arg-type]
