"""The tenant bound to the running request, job or block: one contextvar, always reset.

The middleware binds a :class:`TenantContext` for exactly one request; ``with_tenant`` and
``without_tenant`` bind one for a block of trusted code. Every binding restores the previous
value on every exit path, so nothing leaks into the next request or test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from types import MappingProxyType, TracebackType
from typing import Any

__all__ = [
    "TenantContext",
    "get_current_tenant",
    "get_tenant_context",
    "mutable_tenant",
    "with_tenant",
    "without_tenant",
]

_EMPTY_CLAIMS: Mapping[str, Any] = MappingProxyType({})
audit_logger = logging.getLogger("fastapi_tenancy.audit")


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who the current work runs for.

    ``id`` is the tenant key stored in tenant columns (``None`` when no tenant is bound),
    ``source`` names where it came from (``"jwt"``, ``"header"``, ``"code"``...), ``claims`` are
    the verified token claims, ``record`` is what the tenant lookup returned. ``unscoped`` marks a
    ``without_tenant()`` block; ``mutable`` a block that may move rows between tenants.
    """

    id: str | None
    source: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_CLAIMS)
    record: Any = None
    unscoped: bool = False
    mutable: bool = False


_current: ContextVar[TenantContext | None] = ContextVar("fastapi_tenancy_context", default=None)


def get_tenant_context() -> TenantContext | None:
    """Return the bound :class:`TenantContext`, or ``None`` outside any binding."""
    return _current.get()


def get_current_tenant() -> str | None:
    """Return the bound tenant id, or ``None`` when no tenant is bound."""
    context = _current.get()
    return None if context is None else context.id


def bind(context: TenantContext | None) -> Token[TenantContext | None]:
    """Bind ``context``; the caller must pass the token to :func:`unbind` in ``finally``."""
    return _current.set(context)


def unbind(token: Token[TenantContext | None]) -> None:
    """Restore what was bound before the matching :func:`bind`."""
    _current.reset(token)


class _Binding(AbstractContextManager[TenantContext], AbstractAsyncContextManager[TenantContext]):
    """Binds one context for a ``with`` or ``async with`` block; not reentrant."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: TenantContext) -> None:
        self._context = context
        self._token: Token[TenantContext | None] | None = None

    def __enter__(self) -> TenantContext:
        if self._token is not None:
            raise RuntimeError("this tenant binding is already active")
        self._token = _current.set(self._context)
        return self._context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            _current.reset(token)

    async def __aenter__(self) -> TenantContext:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def with_tenant(tenant_id: str, *, source: str = "code") -> _Binding:
    """Bind ``tenant_id`` for a block of code outside a request (scripts, jobs, tests).

    Usage::

        with with_tenant("acme"):
            with tenancy.session() as session:
                projects = session.exec(select(Project)).all()
    """
    if not isinstance(tenant_id, str) or not tenant_id:
        raise ValueError("with_tenant() needs a non-empty tenant id")
    return _Binding(TenantContext(id=tenant_id, source=source))


def without_tenant(*, reason: str | None = None) -> _Binding:
    """Turn scoping off for a block of trusted code (migrations, cross-tenant jobs).

    Sessions made inside the block see every tenant's rows. Each use is logged on the
    ``fastapi_tenancy.audit`` logger so bypasses stay visible.
    """
    audit_logger.info(
        "without_tenant block entered",
        extra={"tenancy_event": "without_tenant", "tenancy_reason": reason},
    )
    return _Binding(TenantContext(id=None, source="code", unscoped=True))


@contextmanager
def mutable_tenant(*, reason: str | None = None) -> Iterator[TenantContext]:
    """Allow changing ``tenant_id`` of existing rows inside the block (moving rows on purpose).

    Outside this block the kit refuses any change of a row's tenant. Audited.
    """
    context = _current.get() or TenantContext(id=None)
    audit_logger.info(
        "mutable_tenant block entered",
        extra={
            "tenancy_event": "mutable_tenant",
            "tenancy_tenant": context.id,
            "tenancy_reason": reason,
        },
    )
    token = _current.set(replace(context, mutable=True))
    try:
        yield _current.get() or context
    finally:
        _current.reset(token)
