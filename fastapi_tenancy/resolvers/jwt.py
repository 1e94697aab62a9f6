"""Tenant key from a claim of a verified bearer token (PyJWT)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jwt
from jwt.algorithms import get_default_algorithms

from fastapi_tenancy.exceptions import AmbiguousTenant, InvalidToken
from fastapi_tenancy.resolvers.base import Resolution
from fastapi_tenancy.resolvers.jwks import JWKSKeys

if TYPE_CHECKING:
    from jwt.algorithms import AllowedPrivateKeys, AllowedPublicKeys
    from jwt.types import Options
    from starlette.requests import HTTPConnection

__all__ = ["JWTClaimResolver"]

_HMAC = frozenset({"HS256", "HS384", "HS512"})
_MISSING: Any = object()
_UNVERIFIED: Options = {"verify_signature": False}

# Details are fixed sentences: PyJWT's messages may quote token contents.
_DETAILS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "The bearer token has expired."),
    (jwt.ImmatureSignatureError, "The bearer token is not valid yet."),
    (jwt.InvalidAudienceError, "The bearer token is meant for another audience."),
    (jwt.InvalidIssuerError, "The bearer token comes from an unexpected issuer."),
    (jwt.InvalidAlgorithmError, "The bearer token uses an algorithm that is not allowed."),
    (jwt.InvalidSignatureError, "The bearer token signature does not verify."),
    (jwt.DecodeError, "The bearer token is malformed."),
    (jwt.InvalidKeyError, "The bearer token does not fit the configured key."),
)


def _invalid(exc: jwt.PyJWTError) -> InvalidToken:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return InvalidToken(f"The bearer token lacks the required {exc.claim!r} claim.")
    for kind, detail in _DETAILS:
        if isinstance(exc, kind):
            return InvalidToken(detail)
    return InvalidToken()


def _names(value: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"{what} must be a sequence of names, such as [{value!r}].")
    return tuple(value)


def _check_algorithms(algorithms: tuple[str, ...]) -> None:
    if not algorithms:
        raise ValueError("algorithms must name at least one algorithm, such as ['HS256'].")
    known = get_default_algorithms()
    for name in algorithms:
        if name.lower() == "none":
            raise ValueError('"none" is not an algorithm: unsigned tokens are never accepted.')
        if name not in known:
            raise ValueError(f"Unknown JWT algorithm {name!r}.")
    hmac = _HMAC.intersection(algorithms)
    if hmac and len(hmac) != len(set(algorithms)):
        raise ValueError(
            "Do not mix HS* with public-key algorithms in one resolver: a public key would "
            "then verify HMAC tokens (key confusion). Use two resolvers."
        )


def _prepare_key(key: Any, algorithms: tuple[str, ...]) -> Any:
    """Check that ``key`` fits every allowed algorithm now, rather than on each request."""
    if isinstance(key, jwt.PyJWK):
        key = key.key
    prepared: Any = None
    for name in algorithms:
        algorithm = jwt.get_algorithm_by_name(name)
        try:
            candidate = algorithm.prepare_key(key)
        except (jwt.InvalidKeyError, TypeError, ValueError) as exc:
            raise ValueError(f"The key does not fit algorithm {name}: {exc}") from exc
        too_short = algorithm.check_key_length(candidate)
        if too_short:
            raise ValueError(too_short)
        if prepared is None:
            prepared = candidate
    if callable(getattr(prepared, "public_key", None)):
        # Signatures are verified with the public half; a private key cannot verify.
        prepared = prepared.public_key()
    return prepared


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _check_jwks_url(url: str) -> None:
    """Refuse a key set fetched over plain http from another host: whoever sits on the path
    could hand out their own keys and sign any tenant's tokens."""
    parts = urlsplit(url)
    if parts.scheme == "http" and (parts.hostname or "") not in _LOOPBACK_HOSTS:
        raise ValueError(
            f"jwks_url must use https, not {url!r}: a key set fetched over plain http can be "
            "replaced in transit (http is accepted for localhost only)"
        )


class JWTClaimResolver:
    """Reads the tenant key from a claim of a verified ``Authorization: Bearer`` token.

    Verification is PyJWT's, with the algorithms pinned to ``algorithms``; ``exp`` is required
    by default, and ``audience``, ``issuer`` and ``leeway`` are checked when given. Give exactly
    one key source: ``key`` (an HMAC secret, a PEM string or a ``cryptography`` public key),
    ``jwks_url`` (https, or http on localhost only), or your own ``jwks_client``. A token that
    is present but bad raises ``InvalidToken`` (401); a JWKS that cannot be fetched or read, or
    that does not answer within ``jwks_timeout`` seconds, raises ``TenancyUnavailable`` (503).
    Concurrent requests share one fetch of the key set (see ``fastapi_tenancy.resolvers.jwks``).

    ``claim`` may be a dotted path into nested objects (``"org.id"``); a claim whose exact
    name contains dots (``"https://example.test/tenant"``) is looked up as is first. A verified
    token without the claim answers ``Resolution(None, "jwt", claims)``: authenticated, with no
    opinion on the tenant.

        JWTClaimResolver(key=secret, algorithms=["HS256"], audience="my-api")
    """

    source = "jwt"

    def __init__(
        self,
        *,
        claim: str = "tenant",
        key: str | bytes | AllowedPublicKeys | AllowedPrivateKeys | jwt.PyJWK | None = None,
        algorithms: Sequence[str],
        jwks_url: str | None = None,
        jwks_client: jwt.PyJWKClient | None = None,
        jwks_timeout: float = 3.0,
        audience: str | Sequence[str] | None = None,
        issuer: str | None = None,
        leeway: float | timedelta = 0,
        require: Sequence[str] = ("exp",),
        scheme: str = "Bearer",
        header: str = "Authorization",
    ) -> None:
        if sum(given is not None for given in (key, jwks_url, jwks_client)) != 1:
            raise ValueError("Give exactly one of key, jwks_url and jwks_client.")
        path = tuple(claim.split("."))
        if not all(path):
            raise ValueError(f"{claim!r} is not a claim name or dotted path.")
        if not scheme or not header:
            raise ValueError("scheme and header must not be empty.")
        if isinstance(jwks_timeout, bool) or not (
            isinstance(jwks_timeout, (int, float)) and 0 < jwks_timeout < math.inf
        ):
            raise ValueError(
                f"jwks_timeout must be a positive number of seconds, not {jwks_timeout!r}."
            )
        self.algorithms = _names(algorithms, "algorithms")
        _check_algorithms(self.algorithms)
        self.claim = claim
        self._path = path
        self._key: Any = None if key is None else _prepare_key(key, self.algorithms)
        if jwks_url is not None:
            _check_jwks_url(jwks_url)
            # The whole key set is cached for five minutes, so a rotated or revoked key is
            # noticed; PyJWT's per-kid cache would keep a revoked key forever. The fetch gives
            # up after jwks_timeout, well before a client or proxy gives up on the request.
            jwks_client = jwt.PyJWKClient(
                jwks_url, cache_jwk_set=True, lifespan=300, timeout=jwks_timeout
            )
        self.jwks_client = jwks_client
        self.jwks_timeout = float(jwks_timeout)
        self._jwks = None if jwks_client is None else JWKSKeys(jwks_client, timeout=jwks_timeout)
        self.audience = (
            audience if audience is None or isinstance(audience, str) else tuple(audience)
        )
        self.issuer = issuer
        self.leeway = leeway
        self._options: Options = {"require": list(_names(require, "require"))}
        self._scheme = scheme.lower()
        self.header = header
        self._jwt = jwt.PyJWT()

    async def resolve(self, conn: HTTPConnection) -> Resolution | None:
        """Return the claim of the bearer token; ``None`` if there is no bearer token."""
        token = self._bearer_token(conn)
        if token is None:
            return None
        if self._jwks is None:
            claims = self._verify(token, self._key)
        else:
            # A fetch runs in a worker thread, shared by the requests that need it.
            claims = self._verify(token, await self._jwks.signing_key(self._kid(token)))
        return Resolution(self._tenant(claims), self.source, claims)

    def openapi_scheme(self) -> tuple[str, dict[str, Any]]:
        """This resolver's OpenAPI security scheme: a bearer JWT (an API-key header if the
        token travels in another header), so ``/docs`` offers "Authorize"."""
        if self.header.lower() == "authorization":
            scheme = {"type": "http", "scheme": self._scheme, "bearerFormat": "JWT"}
            return "BearerToken", scheme
        return self.header, {"type": "apiKey", "in": "header", "name": self.header}

    def decode(self, token: str) -> dict[str, Any]:
        """Verify ``token`` and return its claims, or raise ``InvalidToken``.

        With a JWKS this may fetch the key set, blocking; ``resolve`` does that in a thread.
        """
        if self._jwks is None:
            return self._verify(token, self._key)
        return self._verify(token, self._jwks.signing_key_sync(self._kid(token)))

    def _bearer_token(self, conn: HTTPConnection) -> str | None:
        values = conn.headers.getlist(self.header)
        if not values:
            return None
        value = values[0]
        for other in values[1:]:
            if other != value:
                raise AmbiguousTenant(
                    f"The {self.header} header was sent more than once with different values."
                )
        parts = value.split(None, 1)
        if not parts or parts[0].lower() != self._scheme:
            return None
        token = parts[1].strip() if len(parts) == 2 else ""
        if not token:
            raise InvalidToken("The bearer token is empty.")
        return token

    def _kid(self, token: str) -> object:
        """The ``kid`` of the token's header, read before verification to pick the key."""
        try:
            header = self._jwt.decode_complete(token, options=_UNVERIFIED)["header"]
        except jwt.PyJWTError as exc:
            raise _invalid(exc) from None
        return header.get("kid")

    def _verify(self, token: str, key: Any) -> dict[str, Any]:
        try:
            return self._jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                options=self._options,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
            )
        except jwt.PyJWTError as exc:
            raise _invalid(exc) from None

    def _tenant(self, claims: Mapping[str, Any]) -> str | None:
        value = claims.get(self.claim, _MISSING)
        if value is _MISSING and len(self._path) > 1:
            value = claims
            for part in self._path:
                if not isinstance(value, Mapping):
                    raise InvalidToken("The tenant claim must be a string.")
                value = value.get(part, _MISSING)
                if value is _MISSING:
                    break
        if value is _MISSING:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # an integer key as a JSON number: its decimal spelling
        if not isinstance(value, str):
            raise InvalidToken("The tenant claim must be a string or an integer.")
        return value

    def __repr__(self) -> str:
        return f"JWTClaimResolver(claim={self.claim!r}, algorithms={list(self.algorithms)!r})"
