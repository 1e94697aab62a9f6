"""Logging in, tokens, and who is asking.

Tokens are HS256 JWTs: ``sub`` (the user's email), ``tenant`` (set when the user belongs to
one tenant, or picked at login), ``roles`` (``["admin"]`` for platform admins) and ``exp``.
The kit's :class:`~fastapi_tenancy.JWTClaimResolver` verifies them in the middleware, before
any route runs; the route-side code here only reads the verified claims from the bound
:class:`~fastapi_tenancy.TenantContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import jwt
from fastapi import Depends
from pwdlib import PasswordHash
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from fastapi_tenancy import TenantContext, get_tenant_context

from .errors import NotAuthenticated
from .models import Membership, User

__all__ = [
    "ADMIN_ROLE",
    "JWT_ALGORITHM",
    "CurrentPrincipal",
    "PasswordHasher",
    "Principal",
    "TokenIssuer",
    "current_principal",
    "is_platform_admin",
    "membership_check",
    "roles_of",
]

JWT_ALGORITHM = "HS256"
ADMIN_ROLE = "admin"
DEFAULT_TOKEN_TTL = timedelta(hours=1)


class PasswordHasher:
    """Argon2 password hashing (pwdlib), with a constant-time answer for unknown users.

    ``PasswordHasher()`` uses pwdlib's recommended Argon2id parameters; tests pass a cheaper
    ``PasswordHash`` so that seeding a database per test stays fast.
    """

    def __init__(self, password_hash: PasswordHash | None = None) -> None:
        self._hash = password_hash or PasswordHash.recommended()
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        """The Argon2 hash to store for ``password``."""
        return self._hash.hash(password)

    def verify(self, password: str, stored: str | None) -> bool:
        """Whether ``password`` matches ``stored``; with no stored hash, spend the same time."""
        if stored is None:
            # Unknown email: verify against a throwaway hash so the answer takes as long as
            # a wrong password, and response times do not tell which emails exist.
            if self._dummy is None:
                self._dummy = self._hash.hash("not-a-password")
            self._hash.verify(password, self._dummy)
            return False
        try:
            return self._hash.verify(password, stored)
        except Exception:  # a malformed stored hash is a failed login, not a 500
            return False


@dataclass(frozen=True, slots=True)
class TokenIssuer:
    """Signs the app's access tokens."""

    secret: str
    ttl: timedelta = DEFAULT_TOKEN_TTL

    def issue(self, email: str, *, tenant: str | None, roles: list[str]) -> str:
        """An HS256 token for ``email``, valid for ``ttl``."""
        now = datetime.now(timezone.utc)
        claims: dict[str, Any] = {"sub": email, "roles": roles, "iat": now, "exp": now + self.ttl}
        if tenant is not None:
            claims["tenant"] = tenant
        return jwt.encode(claims, self.secret, algorithm=JWT_ALGORITHM)


def roles_of(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The token's ``roles`` claim as strings; anything but a list of strings means none."""
    roles = claims.get("roles")
    if not isinstance(roles, list):
        return ()
    return tuple(role for role in roles if isinstance(role, str))


async def is_platform_admin(context: TenantContext) -> bool:
    """The kit's admin predicate: a verified token whose roles include ``"admin"``."""
    return ADMIN_ROLE in roles_of(context.claims)


def membership_check(engine: Engine) -> Callable[[TenantContext], bool]:
    """The kit's membership predicate: the token's user belongs to the bound tenant.

    It runs for every request that names a tenant, whichever source named it (token, Host or
    header). A request that names a tenant without a token is answered 401.
    """

    def is_member(context: TenantContext) -> bool:
        email = context.claims.get("sub")
        if not isinstance(email, str) or not email:
            raise NotAuthenticated("Log in before choosing a tenant.")
        statement = (
            select(Membership.role)
            .join(User, col(User.id) == col(Membership.user_id))
            .where(col(User.email) == email, col(Membership.tenant_id) == context.id)
        )
        with Session(engine) as session:
            return session.exec(statement).first() is not None

    return is_member


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated user of a request, from the verified token."""

    email: str
    roles: tuple[str, ...]
    tenant: str | None

    @property
    def is_admin(self) -> bool:
        """Whether the token makes this user a platform admin."""
        return ADMIN_ROLE in self.roles


async def current_principal() -> Principal:
    """The request's user; 401 ``not_authenticated`` without a verified token.

    The kit's middleware verified the token before the route ran (a bad one never gets this
    far) and left its claims in the bound context. The bearer scheme and the tenant header
    show in the OpenAPI document through ``tenancy.install(app)``.
    """
    context = get_tenant_context()
    claims = {} if context is None else context.claims
    email = claims.get("sub")
    if not isinstance(email, str) or not email:
        raise NotAuthenticated()
    return Principal(
        email=email, roles=roles_of(claims), tenant=None if context is None else context.id
    )


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
"""Route parameter type for the authenticated user."""
