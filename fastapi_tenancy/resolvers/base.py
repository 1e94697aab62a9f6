"""What a resolver is: one async method that names a tenant or has no opinion."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

__all__ = ["Resolution", "Resolver"]


@dataclass(frozen=True, slots=True)
class Resolution:
    """A resolver's answer: the tenant key it read, and where it read it.

    ``key=None`` means "authenticated, but no opinion on the tenant" (a verified token without
    a tenant claim), so the chain can keep the ``claims`` while another source names the tenant.
    """

    key: str | None
    source: str
    claims: Mapping[str, Any] | None = None


class Resolver(Protocol):
    """Reads a tenant key from a request or websocket, like Starlette's ``AuthenticationBackend``.

    ``resolve`` returns ``None`` for "no opinion" (the source is absent) and raises a
    ``TenancyError`` subclass when the source is present but invalid, so a bad token can never
    fall through to a weaker source.
    """

    source: str

    async def resolve(self, conn: HTTPConnection) -> Resolution | None:
        """Return the tenant this connection names, or ``None`` for no opinion."""
        ...
