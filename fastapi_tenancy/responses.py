"""How a failure is told to the client, and to the log.

Every failure answers JSON ``{"detail", "code"}`` with its status. A refusal (4xx) says why; a
failure of the server (5xx) answers a generic sentence, and its detail and traceback go to the
``fastapi_tenancy.errors`` log, once, with the tenant and the principal; a 503 adds
``Retry-After``. Refused requests (a bad token, a tenant the principal may not use) are logged
at WARNING on ``fastapi_tenancy.security`` with the code, the tenant source and the client's
address, never the token. Database errors raised in a route are told apart by
:func:`~fastapi_tenancy.database_errors.classify_database_error`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Host, Mount

from .context import TenantContext, get_tenant_context
from .exceptions import InvalidToken, TenancyError
from .tenancy import TENANCY_SCOPE_KEY, Tenancy

__all__ = [
    "RETRY_AFTER_SECONDS",
    "database_error_handler",
    "error_response",
    "extend_error_handler",
    "log_refusal",
    "tenancy_error_handler",
]

_MAX_WRAPPERS = 32  # middleware layers looked through around a mounted app

RETRY_AFTER_SECONDS = 2
"""The ``Retry-After`` of a 503: a database or key source that is back within seconds."""

error_logger = logging.getLogger("fastapi_tenancy.errors")
security_logger = logging.getLogger("fastapi_tenancy.security")

_PUBLIC_DETAIL = {
    500: "The server could not complete this request.",
    503: "The service is temporarily unavailable. Retry later.",
}


def error_response(error: TenancyError) -> JSONResponse:
    """The JSON response for ``error``, with its status and ``WWW-Authenticate`` on 401 and
    ``Retry-After`` on 503. A 5xx answers a generic sentence: its detail is for the log."""
    status = error.status_code
    headers: dict[str, str] | None = None
    if isinstance(error, InvalidToken):
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    elif status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    detail = error.detail if status < 500 else _PUBLIC_DETAIL.get(status, _PUBLIC_DETAIL[500])
    return JSONResponse({"detail": detail, "code": error.code}, status_code=status, headers=headers)


def log_failure(conn: HTTPConnection, error: BaseException, code: str) -> None:
    """Log a failure of the server once, with its traceback, the tenant and the principal."""
    context = get_tenant_context()
    error_logger.error(
        "%s %s failed: %s (%s)",
        conn.scope.get("method", conn.scope["type"].upper()),
        conn.url.path,
        code,
        error,
        exc_info=error,
        extra={
            "tenancy_code": code,
            "tenancy_tenant": None if context is None else context.id,
            "tenancy_principal": None if context is None else _principal(conn, context),
            "tenancy_path": conn.url.path,
        },
    )


def log_refusal(conn: HTTPConnection, error: TenancyError, source: str | None = None) -> None:
    """Log a refused request at WARNING on ``fastapi_tenancy.security``: the code, the tenant
    source and the client's address; never a token."""
    client = conn.client
    security_logger.warning(
        "%s %s refused: %s",
        conn.scope.get("method", conn.scope["type"].upper()),
        conn.url.path,
        error.code,
        extra={
            "tenancy_code": error.code,
            "tenancy_source": source,
            "tenancy_client": None if client is None else client.host,
            "tenancy_path": conn.url.path,
        },
    )


def _principal(conn: HTTPConnection, context: TenantContext) -> str | None:
    tenancy = conn.scope.get(TENANCY_SCOPE_KEY)
    if isinstance(tenancy, Tenancy):
        return tenancy.principal(context)
    value = context.claims.get("sub")
    return None if value is None else str(value)


def answer(conn: HTTPConnection, error: TenancyError) -> JSONResponse:
    """Log ``error`` as what it is (a failure of the server, or a refusal) and answer it."""
    if error.status_code >= 500:
        cause = error.__cause__ if error.__cause__ is not None else error
        log_failure(conn, cause, error.code)
    elif error.status_code in (401, 403):
        context = get_tenant_context()
        log_refusal(conn, error, None if context is None else context.source)
    return error_response(error)


async def tenancy_error_handler(request: Request, error: TenancyError) -> JSONResponse:
    """FastAPI exception handler for errors raised inside routes and dependencies."""
    return answer(request, error)


async def database_error_handler(request: Request, error: SQLAlchemyError) -> JSONResponse:
    """FastAPI exception handler for database errors raised in routes: 503 when the database
    is unavailable, 409 for conflicting writes, a generic 500 otherwise."""
    from .database_errors import classify_database_error

    return answer(request, classify_database_error(error))


def extend_error_handler(app: Starlette) -> None:
    """Give every Starlette or FastAPI app mounted in ``app``, at any depth, ``app``'s handlers
    for :class:`TenancyError` and database errors, unless it has its own.

    Each Starlette app answers what its routes raise with its own exception handlers, and an
    exception it has no handler for ends in its own ``500`` before the outer app sees it: without
    this, a ``TenantRequired`` raised in ``app.mount("/v1", sub_app)`` would answer 500, not 400.
    Catching the error in the middleware would come too late: the mounted app has sent its 500
    by the time the error passes through. :class:`~fastapi_tenancy.TenancyMiddleware` calls it
    once, on the app's first call (its lifespan, or its first request), when the mounts are
    known; call it again for an app mounted later. A mounted app that already served requests
    rebuilds its middleware stack on its next request, with the handler in it.
    """
    handlers = {
        kind: app.exception_handlers[kind]
        for kind in (TenancyError, SQLAlchemyError)
        if kind in app.exception_handlers
    }
    if not handlers:
        return
    for mounted in _mounted_apps(app.routes, {id(app)}):
        for kind, handler in handlers.items():
            if kind not in mounted.exception_handlers:
                mounted.add_exception_handler(kind, handler)
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
