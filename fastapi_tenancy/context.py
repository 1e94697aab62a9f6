"""The tenant bound to the running request, job or block: one contextvar, always reset.

The middleware binds a :class:`TenantContext` for exactly one request; ``with_tenant`` and
``without_tenant`` bind one for a block of trusted code. Every binding restores the previous
value on every exit path, so nothing leaks into the next request or test.

The bypass blocks (``without_tenant``, ``mutable_tenant``) refuse to be entered inside a
generator: a generator runs in the context of the code that consumes it, so a block held open
across ``yield`` would turn the bypass on for the consumer's loop body, and leave it on when
the consumer stops early.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from inspect import CO_ASYNC_GENERATOR, CO_GENERATOR, CO_ITERABLE_COROUTINE
from types import FrameType, MappingProxyType, TracebackType
from typing import Any

from .exceptions import TenancyMisuse
from .hierarchy import NO_FAMILY, TenantFamily
from .keys import tenant_key_of

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

    ``id`` is the tenant key stored in tenant columns, of the app's key type (a ``str``,
    ``int`` or ``UUID``; ``None`` when no tenant is bound),
    ``source`` names where it came from (``"jwt"``, ``"header"``, ``"code"``...), ``claims`` are
    the verified token claims, ``record`` is what the tenant lookup returned. ``unscoped`` marks a
    ``without_tenant()`` block; ``mutable`` a block that may move rows between tenants.
    ``family`` holds the tenant's ancestors and descendants when the app has a
    :class:`~fastapi_tenancy.TenantHierarchy` (empty otherwise, and in code bound by
    ``with_tenant()``: such code reads its tenant's own rows only).
    """

    id: Any
    source: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_CLAIMS)
    record: Any = None
    unscoped: bool = False
    mutable: bool = False
    family: TenantFamily = NO_FAMILY


_current: ContextVar[TenantContext | None] = ContextVar("fastapi_tenancy_context", default=None)


def get_tenant_context() -> TenantContext | None:
    """Return the bound :class:`TenantContext`, or ``None`` outside any binding."""
    return _current.get()


def get_current_tenant() -> Any:
    """Return the bound tenant key, or ``None`` when no tenant is bound."""
    context = _current.get()
    return None if context is None else context.id


def checked_key(value: Any, caller: str) -> Any:
    """The key of ``value`` (a key or a tenant record), refusing what cannot be a tenant key:
    ``None``, an empty string, a boolean."""
    key = tenant_key_of(value)
    if key is None or key == "" or isinstance(key, bool):
        raise ValueError(f"{caller} needs a tenant key or a tenant record, not {value!r}")
    return key


def bind(context: TenantContext | None) -> Token[TenantContext | None]:
    """Bind ``context``; the caller must pass the token to :func:`unbind` in ``finally``."""
    return _current.set(context)


def unbind(token: Token[TenantContext | None]) -> None:
    """Restore what was bound before the matching :func:`bind`."""
    _current.reset(token)


_GENERATOR_FLAGS = CO_GENERATOR | CO_ASYNC_GENERATOR


def _is_contextlib(frame: FrameType) -> bool:
    return frame.f_globals.get("__name__") == "contextlib"


def _refuse_in_generator(bypass: str, frame: FrameType | None) -> None:
    """Refuse ``bypass`` entered by a generator that its consumer drives.

    ``frame`` entered the block; contextlib's helpers (``ExitStack.enter_context``) are looked
    through to their caller. A ``@contextmanager`` or ``@asynccontextmanager`` function is
    allowed: contextlib resumes it when its own ``with`` block ends, so the bypass ends there.
    """
    while frame is not None and _is_contextlib(frame):
        frame = frame.f_back
    if frame is None or not frame.f_code.co_flags & _GENERATOR_FLAGS:
        return
    if frame.f_code.co_flags & CO_ITERABLE_COROUTINE:
        return  # a @types.coroutine generator: awaited to its end, like any coroutine
    driver = frame.f_back
    if driver is not None and _is_contextlib(driver):
        return
    raise TenancyMisuse(
        f"{bypass} was entered inside the generator {frame.f_code.co_name}(): a generator "
        "runs in the context of the code that consumes it, so the bypass would leak into the "
        "consumer (its loop body would run with the bypass on, and the bypass would stay on "
        "if the consumer stopped early). Enter the block around the loop that consumes the "
        "generator, or collect the results in a list inside the block and return the list."
    )


class _Binding(AbstractContextManager[TenantContext], AbstractAsyncContextManager[TenantContext]):
    """Binds the context ``make()`` answers on entry, for a ``with`` or ``async with`` block;
    not reentrant. ``make`` runs when the block is entered, so what it logs and reads is of
    that moment. A ``bypass`` (its name) refuses to be entered inside a generator."""

    __slots__ = ("_bypass", "_make", "_token")

    def __init__(self, make: Callable[[], TenantContext], *, bypass: str | None = None) -> None:
        self._make = make
        self._bypass = bypass
        self._token: Token[TenantContext | None] | None = None

    def __enter__(self) -> TenantContext:
        return self._bind(sys._getframe(1))

    def _bind(self, caller: FrameType) -> TenantContext:
        if self._token is not None:
            raise RuntimeError("this tenant binding is already active")
        if self._bypass is not None:
            _refuse_in_generator(self._bypass, caller)
        context = self._make()
        self._token = _current.set(context)
        return context

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
        return self._bind(sys._getframe(1))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def with_tenant(tenant_id: Any, *, source: str = "code") -> _Binding:
    """Bind a tenant for a block of code outside a request (scripts, jobs, tests).

    ``tenant_id`` is a key (``"acme"``, ``42``, a ``UUID``) or a tenant record with a
    ``__tenant_key__`` (see :func:`~fastapi_tenancy.tenant_key_of`). A session checks the key
    against its ``Tenancy``'s key type when it is made, and parses a string spelling of it.

    Unlike the bypass blocks, it may be held open across a generator's ``yield``, as a pytest
    fixture that binds a tenant for its test does: the tenant is then bound for whatever
    consumes the generator.

    Usage::

        with with_tenant("acme"):
            with tenancy.session() as session:
                projects = session.exec(select(Project)).all()
    """
    context = TenantContext(id=checked_key(tenant_id, "with_tenant()"), source=source)
    return _Binding(lambda: context)


def without_tenant(*, reason: str | None = None) -> _Binding:
    """Turn scoping off for a block of trusted code (migrations, cross-tenant jobs).

    Sessions made inside the block see every tenant's rows. Each entry into the block is
    logged on the ``fastapi_tenancy.audit`` logger so bypasses stay visible. Works as ``with``
    and ``async with``. Entering it inside a generator raises ``TenancyMisuse`` (the bypass
    would leak into the generator's consumer): enter it around the loop instead. A
    ``@contextmanager`` function may hold it across its ``yield``.
    """

    def enter() -> TenantContext:
        audit_logger.info(
            "without_tenant block entered",
            extra={"tenancy_event": "without_tenant", "tenancy_reason": reason},
        )
        return TenantContext(id=None, source="code", unscoped=True)

    return _Binding(enter, bypass="without_tenant()")


def mutable_tenant(*, reason: str | None = None) -> _Binding:
    """Allow changing ``tenant_id`` of existing rows inside the block (moving rows on purpose).

    Outside this block the kit refuses any change of a row's tenant. Keeps the tenant bound
    when the block is entered; audited. Works as ``with`` and ``async with``; like
    :func:`without_tenant`, refused inside a generator.
    """

    def enter() -> TenantContext:
        context = _current.get() or TenantContext(id=None)
        audit_logger.info(
            "mutable_tenant block entered",
            extra={
                "tenancy_event": "mutable_tenant",
                "tenancy_tenant": context.id,
                "tenancy_reason": reason,
            },
        )
        return replace(context, mutable=True)

    return _Binding(enter, bypass="mutable_tenant()")
