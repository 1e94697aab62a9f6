"""Plain functions as resolvers, the way httpx accepts a function where it wants an ``Auth``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from fastapi_tenancy.resolvers.base import Resolution, Resolver

if TYPE_CHECKING:
    from typing import TypeAlias

    from starlette.requests import HTTPConnection

    ResolverFunc: TypeAlias = Callable[[HTTPConnection], str | Awaitable[str | None] | None]

__all__ = ["CallableResolver", "as_resolver"]


class CallableResolver:
    """Wraps a function of the connection that returns a tenant key, ``None``, or an awaitable.

    A sync function is called on the event loop, so it must be cheap (no I/O); make it
    ``async`` otherwise. Raise a ``TenancyError`` for "present but invalid".

        CallableResolver(lambda conn: conn.query_params.get("tenant"), source="query")
    """

    __slots__ = ("func", "source")

    def __init__(self, func: ResolverFunc, *, source: str = "custom") -> None:
        if not callable(func):
            raise TypeError(f"{func!r} is not callable.")
        self.func = func
        self.source = source

    async def resolve(self, conn: HTTPConnection) -> Resolution | None:
        """Call the function and wrap its answer in a ``Resolution``."""
        key = self.func(conn)
        if inspect.isawaitable(key):
            key = await key
        if key is None:
            return None
        if not isinstance(key, str):
            raise TypeError(
                f"Resolver {self.func!r} returned {type(key).__name__}, not a str or None."
            )
        return Resolution(key, self.source)

    def __repr__(self) -> str:
        return f"CallableResolver({self.func!r}, source={self.source!r})"


def as_resolver(obj: Resolver | Callable[..., Any]) -> Resolver:
    """Return ``obj`` if it is a resolver (an async ``resolve`` method), else wrap the callable.

    Resolvers are converted once, at configuration time, and mistakes fail there: a resolver
    class instead of an instance, or a ``resolve`` method that is not async.
    """
    if isinstance(obj, type):
        raise TypeError(f"Pass an instance of {obj.__name__}, not the class.")
    resolve = getattr(obj, "resolve", None)
    if resolve is not None:
        if not inspect.iscoroutinefunction(resolve):
            raise TypeError(f"{obj!r}.resolve must be an async method.")
        if not isinstance(getattr(obj, "source", None), str):
            raise TypeError(f"{obj!r} needs a str source attribute.")
        return cast(Resolver, obj)
    if callable(obj):
        return CallableResolver(obj)
    raise TypeError(f"{obj!r} is neither a resolver nor a callable.")
