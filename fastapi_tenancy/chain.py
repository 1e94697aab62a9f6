"""The resolver chain: ask every source, refuse disagreement, validate the winning key."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi_tenancy.exceptions import (
    AmbiguousTenant,
    InvalidTenantKey,
    InvalidToken,
    TenancyError,
    TenancyUnavailable,
    TenantMismatch,
)
from fastapi_tenancy.resolvers.callable import as_resolver

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from fastapi_tenancy.resolvers.base import Resolver

__all__ = ["ChainResult", "ResolverChain"]

# Which raised error answers when several resolvers fail. A bad token comes first (it must
# never be masked), then a key source outage (nothing could be verified), then ambiguity.
_PRECEDENCE: tuple[type[TenancyError], ...] = (
    InvalidToken,
    TenancyUnavailable,
    AmbiguousTenant,
    TenantMismatch,
    InvalidTenantKey,
)
_MISMATCH_RANK = _PRECEDENCE.index(TenantMismatch)
_KEY_RANK = _PRECEDENCE.index(InvalidTenantKey)


def _rank(exc: TenancyError) -> int:
    for rank, kind in enumerate(_PRECEDENCE):
        if isinstance(exc, kind):
            return rank
    return len(_PRECEDENCE)


@dataclass(frozen=True, slots=True)
class ChainResult:
    """The chain's verdict: the parsed key (of the ``Tenancy``'s key type) and its source, and
    any verified claims.

    All three are ``None`` when no resolver had an opinion; ``claims`` may be set without a key
    (a verified token without a tenant claim).
    """

    key: Any
    source: str | None
    claims: Mapping[str, Any] | None


class ResolverChain:
    """Asks every resolver, in order, and turns their answers into one tenant key.

    Every resolver is asked, even after an answer, so a header cannot silently override a
    token. The first key in chain order wins; answers that disagree raise ``TenantMismatch``.
    When resolvers raise, the error answered is, in order: ``InvalidToken``,
    ``TenancyUnavailable``, ``AmbiguousTenant``, ``TenantMismatch``, ``InvalidTenantKey``,
    then any other ``TenancyError``. Other exceptions are bugs and propagate unchanged.

        chain = ResolverChain([jwt_resolver, HeaderResolver()], validate_key=KeyValidator())
        result = await chain.resolve(request)
    """

    __slots__ = ("resolvers", "validate_key")

    def __init__(
        self,
        resolvers: Sequence[Resolver | Callable[..., Any]],
        *,
        validate_key: Callable[[str], Any],
    ) -> None:
        self.resolvers: tuple[Resolver, ...] = tuple(as_resolver(r) for r in resolvers)
        self.validate_key = validate_key

    async def resolve(self, conn: HTTPConnection) -> ChainResult:
        """Return the tenant this connection names, or raise the ``TenancyError`` that answers."""
        key: str | None = None
        source: str | None = None
        claims: Mapping[str, Any] | None = None
        conflict: str | None = None
        errors: list[TenancyError] | None = None
        for resolver in self.resolvers:
            try:
                resolution = await resolver.resolve(conn)
            except TenancyError as exc:
                if errors is None:
                    errors = []
                errors.append(exc)
                continue
            if resolution is None:
                continue
            if claims is None:
                claims = resolution.claims
            if resolution.key is None:
                continue
            if key is None:
                key, source = resolution.key, resolution.source
            elif conflict is None and resolution.key != key:
                conflict = resolution.source

        if errors is not None:
            error = min(errors, key=_rank)
            rank = _rank(error)
            if rank < _MISMATCH_RANK or (rank <= _KEY_RANK and conflict is None):
                raise error
        if conflict is not None:
            raise TenantMismatch(
                f"The tenant from {conflict} does not match the one from {source}."
            )
        parsed = None if key is None else self.validate_key(key)
        if errors is not None:
            raise min(errors, key=_rank)
        return ChainResult(parsed, source, claims)

    def __repr__(self) -> str:
        return f"ResolverChain({list(self.resolvers)!r})"
