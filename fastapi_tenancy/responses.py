"""How a :class:`TenancyError` is told to the client: JSON ``{"detail", "code"}``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Host, Mount

from .exceptions import InvalidToken, TenancyError

__all__ = ["error_response", "extend_error_handler", "tenancy_error_handler"]

_MAX_WRAPPERS = 32  # middleware layers looked through around a mounted app


def error_response(error: TenancyError) -> JSONResponse:
    """The JSON response for ``error``, with its status and ``WWW-Authenticate`` on 401."""
    headers = (
        {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        if isinstance(error, InvalidToken)
        else None
    )
    return JSONResponse(
        {"detail": error.detail, "code": error.code},
        status_code=error.status_code,
        headers=headers,
    )


async def tenancy_error_handler(request: Request, error: TenancyError) -> JSONResponse:
    """FastAPI exception handler for errors raised inside routes and dependencies."""
    return error_response(error)


def extend_error_handler(app: Starlette) -> None:
    """Give every Starlette or FastAPI app mounted in ``app``, at any depth, ``app``'s handler
    for :class:`TenancyError`, unless it has one of its own.

    Each Starlette app answers what its routes raise with its own exception handlers, and an
    exception it has no handler for ends in its own ``500`` before the outer app sees it: without
    this, a ``TenantRequired`` raised in ``app.mount("/v1", sub_app)`` would answer 500, not 400.
    Catching the error in the middleware would come too late: the mounted app has sent its 500
    by the time the error passes through. :class:`~fastapi_tenancy.TenancyMiddleware` calls it
    once, on the app's first call (its lifespan, or its first request), when the mounts are
    known; call it again for an app mounted later. A mounted app that already served requests
    rebuilds its middleware stack on its next request, with the handler in it.
    """
    handler = app.exception_handlers.get(TenancyError)
    if handler is None:
        return
    for mounted in _mounted_apps(app.routes, {id(app)}):
        if TenancyError not in mounted.exception_handlers:
            mounted.add_exception_handler(TenancyError, handler)
            mounted.middleware_stack = None  # built with a copy of the handlers: rebuild


def _mounted_apps(routes: Iterable[BaseRoute], seen: set[int]) -> Iterator[Starlette]:
    for route in routes:
        if not isinstance(route, Mount | Host):
            continue
        mounted = _unwrap(route.app)
        if mounted is not None and id(mounted) not in seen:
            seen.add(id(mounted))
            yield mounted
            yield from _mounted_apps(mounted.routes, seen)
        elif mounted is None:
            yield from _mounted_apps(route.routes, seen)


def _unwrap(app: Any) -> Starlette | None:
    """The Starlette app that ``app`` is, or that the middleware ``app`` wraps, if any."""
    for _ in range(_MAX_WRAPPERS):
        if isinstance(app, Starlette):
            return app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None
