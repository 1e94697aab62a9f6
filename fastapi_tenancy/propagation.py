"""The tenant outside the request: run work as a tenant, and hand the tenant to other processes.

Inside one process, the tenant follows the work wherever contextvars are copied: Starlette's
background tasks, ``asyncio.create_task``, ``anyio.to_thread.run_sync`` and ``asyncio.to_thread``
all see the request's tenant. A plain ``ThreadPoolExecutor`` (and ``loop.run_in_executor``) does
not copy contextvars, so its threads see no tenant; wrap the function with :func:`carry_tenant`::

    executor.submit(carry_tenant(rebuild_report), report_id)

To run a function as a fixed tenant (a script, a scheduled job), decorate it with
:func:`as_tenant`. To hand the tenant to another process (a job queue, a subprocess), put
:func:`capture`'s plain dict in the message and :func:`restore` it on the other side::

    job = {"report": 7, "tenant": capture()}  # in the request
    with restore(job["tenant"]):  # in the worker
        ...

A captured tenant that is missing or malformed never becomes "no tenant": :func:`restore`
raises, so the work fails instead of running unscoped. ``without_tenant()`` blocks are never
captured: a bypass does not travel; the receiving side opens its own if it must.
"""

from __future__ import annotations

import functools
import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar, overload

from .context import TenantContext, _Binding, bind, checked_key, get_tenant_context, unbind
from .exceptions import InvalidTenantKey, TenancyMisuse, TenantRequired
from .keys import DEFAULT_KEY_PATTERN, IntegerKeys, StringKeys, TenantKeyType, UUIDKeys

__all__ = ["CAPTURE_VERSION", "as_tenant", "capture", "carry_tenant", "restore"]

P = ParamSpec("P")
R = TypeVar("R")

CAPTURE_VERSION = 1
"""Version of the dict :func:`capture` makes; :func:`restore` refuses any other."""

_SOURCE_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

# How a captured key names its type; a capture without one carries a string key.
_KINDS: dict[type[Any], str] = {str: "str", int: "int", uuid.UUID: "uuid"}


@overload
def carry_tenant(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
@overload
def carry_tenant(func: Callable[P, R]) -> Callable[P, R]: ...
def carry_tenant(func: Callable[P, Any]) -> Callable[P, Any]:
    """Wrap ``func`` so that it runs with the tenant context bound right now, wherever it runs.

    The context is taken when ``carry_tenant`` is called and bound around each call of the
    wrapper, then the caller's own binding is restored. Use it for work handed to threads or
    callbacks that do not copy contextvars. Coroutine functions get an async wrapper.

        loop.run_in_executor(pool, carry_tenant(export_projects))
    """
    return _bound(func, get_tenant_context())


def as_tenant(
    tenant_id: Any, *, source: str = "code"
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function (sync or async) so that every call runs as ``tenant_id``.

    For scripts and scheduled jobs that always act for one tenant; the binding is undone when
    the call returns or raises.

        @as_tenant("acme")
        def nightly_cleanup() -> None:
            with tenancy.session() as session: ...
    """
    context = TenantContext(id=checked_key(tenant_id, "as_tenant()"), source=source)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        return _bound(func, context)

    return decorate


def _bound(func: Callable[P, Any], context: TenantContext | None) -> Callable[P, Any]:
    if not callable(func):
        raise TypeError(f"{func!r} is not callable")
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
            token = bind(context)
            try:
                return await func(*args, **kwargs)
            finally:
                unbind(token)

        return run_async

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> Any:
        token = bind(context)
        try:
            return func(*args, **kwargs)
        finally:
            unbind(token)

    return run


def capture(*, include_claims: bool = False) -> dict[str, Any] | None:
    """The bound tenant as a plain, JSON-serialisable dict, or ``None`` when none is bound.

    The dict holds the tenant key's spelling and type (``str``, ``int`` or ``uuid``; other key
    types raise ``TenancyMisuse``) and its source (and the verified token claims when
    ``include_claims`` is true: they may be personal data, so they travel only on request).
    The tenant record from a lookup is not included: look it up again on the other side.
    Inside ``without_tenant()`` this returns ``None``: a bypass never travels.
    """
    context = get_tenant_context()
    if context is None or context.id is None or context.unscoped:
        return None
    key = context.id
    kind = _KINDS.get(type(key))
    if kind is None:
        raise TenancyMisuse(
            f"capture() carries str, int and UUID tenant keys, not {type(key).__name__}"
        )
    data: dict[str, Any] = {"v": CAPTURE_VERSION, "tenant": str(key), "source": context.source}
    if kind != "str":
        data["key"] = kind
    if include_claims:
        data["claims"] = dict(context.claims)
    return data


def restore(
    data: Mapping[str, Any] | None,
    *,
    key_pattern: str | re.Pattern[str] = DEFAULT_KEY_PATTERN,
    key_type: TenantKeyType[Any] | None = None,
) -> _Binding:
    """Bind a tenant captured by :func:`capture`, for a ``with`` or ``async with`` block.

    The dict is checked before anything is bound: ``None`` (nothing was captured) raises
    ``TenantRequired``; a dict of another shape or version, or a tenant id outside
    ``key_pattern`` (give your ``Tenancy``'s pattern if you changed it), or a key that its type
    does not parse, raises ``InvalidTenantKey``. ``key_type`` (your ``Tenancy``'s ``keys``)
    parses keys of a type of your own and must be given for them. Either way the work does
    not run, and never runs unscoped.

        with restore(message["tenant"]):
            process(message)
    """
    if data is None:
        raise TenantRequired("This work carries no tenant, so it was not run.")
    if not isinstance(data, Mapping) or data.get("v") != CAPTURE_VERSION:
        raise InvalidTenantKey("The captured tenant is not in a form this version can restore.")
    tenant = data.get("tenant")
    if not isinstance(tenant, str):
        raise InvalidTenantKey("The captured tenant id is not a string.")
    kind = data.get("key", "str")
    keys: TenantKeyType[Any]
    if key_type is not None and _KINDS.get(key_type.python_type, kind) == kind:
        keys = key_type
    elif kind == "str":
        keys = StringKeys(key_pattern)
    elif kind == "int":
        keys = IntegerKeys()
    elif kind == "uuid":
        keys = UUIDKeys()
    else:
        raise InvalidTenantKey("The captured tenant key is of a type this app does not know.")
    key = keys.parse(tenant)
    source = data.get("source")
    if source is not None and (
        not isinstance(source, str) or _SOURCE_PATTERN.fullmatch(source) is None
    ):
        raise InvalidTenantKey("The captured tenant source is not valid.")
    claims = data.get("claims", {})
    if not isinstance(claims, Mapping):
        raise InvalidTenantKey("The captured claims are not a mapping.")
    context = TenantContext(id=key, source=source, claims=dict(claims))
    return _Binding(lambda: context)
