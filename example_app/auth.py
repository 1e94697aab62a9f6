"""Logging in, tokens, and who is asking.

Tokens are HS256 JWTs: ``sub`` (the user's email), ``tenant`` (set when the user belongs to
one tenant, or picked at login), ``roles`` (``["admin"]`` for platform admins) and ``exp``.
The kit's :class:`~fastapi_tenancy.JWTClaimResolver` verifies them in the middleware, before
any route runs; the route-side code here only reads the verified claims from the bound
:class:`~fastapi_tenancy.TenantContext`.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
import jwt
from fastapi import Depends
from pwdlib import PasswordHash
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from fastapi_tenancy import TenantContext, get_tenant_context

from .errors import LoginBusy, NotAuthenticated, SignupBusy
from .models import Membership, User

__all__ = [
    "ADMIN_ROLE",
    "JWT_ALGORITHM",
    "TENANT_ADMIN_ROLES",
    "CurrentPrincipal",
    "LoginLimits",
    "PasswordHasher",
    "Principal",
    "TokenIssuer",
    "current_principal",
    "is_platform_admin",
    "membership_check",
    "roles_of",
    "tenant_admin_check",
]

JWT_ALGORITHM = "HS256"
ADMIN_ROLE = "admin"
DEFAULT_TOKEN_TTL = timedelta(hours=1)
TENANT_ADMIN_ROLES = frozenset({"owner"})
"""Membership roles that make a user an admin of that tenant (``GET /team/notes``). Not the
platform admin role ``"admin"`` of the token, which is about every tenant's data."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """How many password hashes run at once, and how many logins may wait for one (sign-ups
    hash their new password in the same slots).

    An Argon2id hash of ``PasswordHash.recommended()`` takes 64 MiB and a core for a moment;
    unbounded, a burst of failed logins takes the memory and the threads every other request
    needs. ``max_hashes`` hashes run at once; up to ``max_waiting`` more logins wait, each at
    most ``wait`` seconds; any other login answers ``503 login_busy`` with ``Retry-After``.

        create_app(engine, login_limits=LoginLimits(max_hashes=4, wait=2.0))
    """

    max_hashes: int = 2
    max_waiting: int = 16
    wait: float = 5.0

    def __post_init__(self) -> None:
        if self.max_hashes < 1:
            raise ValueError(f"max_hashes must be 1 or more, not {self.max_hashes}")
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, not {self.max_waiting}")
        if not (self.wait >= 0 and math.isfinite(self.wait)):
            raise ValueError(f"wait must be a finite number of seconds >= 0, not {self.wait}")


class PasswordHasher:
    """Argon2 password hashing (pwdlib), bounded by :class:`LoginLimits`, at one cost for all.

    ``PasswordHasher()`` uses pwdlib's recommended Argon2id parameters; tests pass a cheaper
    ``PasswordHash`` so that seeding a database per test stays fast. A login is one
    verification whether or not its email exists: an unknown email is checked against a hash
    made here, once, so response times do not tell which emails exist.
    """

    def __init__(
        self, password_hash: PasswordHash | None = None, *, limits: LoginLimits | None = None
    ) -> None:
        self._hash = password_hash or PasswordHash.recommended()
        self.limits = limits or LoginLimits()
        self._dummy = self._hash.hash(secrets.token_urlsafe(16))
        # Made in the event loop, on first use.
        self._slots: anyio.CapacityLimiter | None = None
        self._threads: anyio.CapacityLimiter | None = None

    def hash(self, password: str) -> str:
        """The Argon2 hash to store for ``password``."""
        return self._hash.hash(password)

    def verify(self, password: str, stored: str | None) -> bool:
        """Whether ``password`` matches ``stored`` (``None``: an unknown user), in one hash."""
        try:
            matches = self._hash.verify(password, self._dummy if stored is None else stored)
        except Exception:  # a malformed stored hash is a failed login, not a 500
            return False
        return matches and stored is not None

    async def check(self, password: str, stored: str | None) -> bool:
        """:meth:`verify` in a worker thread, once one of ``limits.max_hashes`` slots is free.

        Raises :class:`~example_app.errors.LoginBusy` when ``limits.max_waiting`` logins are
        waiting already, or when no slot frees up within ``limits.wait`` seconds.
        """
        return await self._bounded(partial(self.verify, password, stored), LoginBusy)

    async def make_hash(self, password: str) -> str:
        """:meth:`hash` for a new account (``POST /signup``), in the same slots as
        :meth:`check`; :class:`~example_app.errors.SignupBusy` when they are all taken."""
        return await self._bounded(partial(self.hash, password), SignupBusy)

    async def _bounded(self, work: Callable[[], T], busy: type[LoginBusy]) -> T:
        if self._slots is None or self._threads is None:
            self._slots = anyio.CapacityLimiter(self.limits.max_hashes)
            self._threads = anyio.CapacityLimiter(self.limits.max_hashes)
        slots, threads = self._slots, self._threads
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            if slots.statistics().tasks_waiting >= self.limits.max_waiting:
                raise busy() from None
            acquired = False
            with anyio.move_on_after(self.limits.wait):
                await slots.acquire()
                acquired = True
            if not acquired:
                raise busy() from None
        try:
            # A thread limiter of its own: hashing neither waits for nor takes a token of the
            # default limiter, which every sync route and dependency shares.
            return await anyio.to_thread.run_sync(work, limiter=threads)
        finally:
            slots.release()


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


def tenant_admin_check(engine: Engine) -> Callable[[TenantContext], bool]:
    """The tenant admins' predicate, for ``lifted_session("owner", allow=...)``: the token's
    user has a role of :data:`TENANT_ADMIN_ROLES` in the bound tenant (their membership's
    role, read now: a demoted owner loses the switch at once, whatever their token says)."""

    def is_tenant_admin(context: TenantContext) -> bool:
        email = context.claims.get("sub")
        if not isinstance(email, str) or not email or context.id is None:
            return False
        statement = (
            select(Membership.role)
            .join(User, col(User.id) == col(Membership.user_id))
            .where(col(User.email) == email, col(Membership.tenant_id) == context.id)
        )
        with Session(engine) as session:
            return session.exec(statement).first() in TENANT_ADMIN_ROLES

    return is_tenant_admin


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
