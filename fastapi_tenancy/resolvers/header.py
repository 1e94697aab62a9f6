"""Tenant key from a request header, ``X-Tenant-ID`` by default."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi_tenancy.exceptions import AmbiguousTenant
from fastapi_tenancy.resolvers.base import Resolution

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

__all__ = ["HeaderResolver"]


class HeaderResolver:
    """Reads the tenant key from a header, as sent.

    The value is neither stripped nor folded: an empty or odd value is handed to key validation
    and refused there, rather than quietly meaning "no opinion". A header is unauthenticated, so
    put it after any token resolver; the chain refuses a header that contradicts the token.

        HeaderResolver("X-Tenant-ID")
    """

    __slots__ = ("name",)

    source = "header"

    def __init__(self, name: str = "X-Tenant-ID") -> None:
        if not name:
            raise ValueError("HeaderResolver needs a header name.")
        self.name = name

    async def resolve(self, conn: HTTPConnection) -> Resolution | None:
        """Return the header's value; ``None`` if it is absent."""
        values = conn.headers.getlist(self.name)
        if not values:
            return None
        key = values[0]
        for other in values[1:]:
            if other != key:
                raise AmbiguousTenant(
                    f"The {self.name} header was sent more than once with different values."
                )
        return Resolution(key, self.source)

    def openapi_scheme(self) -> tuple[str, dict[str, Any]]:
        """This resolver's OpenAPI security scheme: an API key in the header, named after it."""
        return self.name, {"type": "apiKey", "in": "header", "name": self.name}

    def __repr__(self) -> str:
        return f"HeaderResolver({self.name!r})"
