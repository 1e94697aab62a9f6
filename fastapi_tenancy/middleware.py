"""Pure ASGI middleware that binds the request's tenant for exactly that request.

No ``BaseHTTPMiddleware``: it runs the app in another task, and contextvars set there do not
propagate. Here the tenant is bound around ``await self.app(...)`` and reset in ``finally``,
so sync routes in the thread pool, background tasks, streaming bodies and tasks created
inside the request all see it, and nothing outlives the request.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .context import bind, unbind
from .database_errors import as_tenancy_error
from .exceptions import InternalError, TenancyError
from .responses import answer, error_response, extend_error_handler, log_failure, log_refusal
from .tenancy import TENANCY_SCOPE_KEY, Tenancy

__all__ = ["TenancyMiddleware"]

WS_POLICY_VIOLATION = 1008


def _has_own_handler(scope: Scope) -> bool:
    """Whether the app answers unhandled exceptions itself (a handler for ``Exception`` or
    500, which Starlette's outermost middleware runs)."""
    app = scope.get("app")
    handlers = getattr(app, "exception_handlers", {})
    return Exception in handlers or 500 in handlers


def _internal(error: Exception) -> InternalError:
    """The generic 500 for an error the kit has no name for, with ``error`` as its cause."""
    internal = InternalError()
    internal.__cause__ = error
    return internal


def _route_path(scope: Scope) -> str:
    """The path as the app's routes see it: without the ``root_path`` it is mounted under."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        rest = path[len(root_path) :]
        if not rest or rest.startswith("/"):
            return rest or "/"
    return path


class TenancyMiddleware:
    """Resolve the tenant of each http or websocket connection and bind it.

    Other scopes pass straight through; as the lifespan's startup completes, it runs
    :meth:`Tenancy.check_startup`, whose failure fails the startup. Errors answer through
    :meth:`on_error`: JSON ``{"detail", "code"}`` for http, a close with code 1008 and the error
    code as reason for websockets. Subclass and override ``on_error`` to answer differently.

    On its first call (the lifespan, or the first request) it gives the apps mounted in the
    app the app's handler for :class:`~fastapi_tenancy.TenancyError` (see
    :func:`~fastapi_tenancy.responses.extend_error_handler`), so that an error raised in a
    mounted app answers as it would in the app itself.
    """

    def __init__(self, app: ASGIApp, *, tenancy: Tenancy) -> None:
        self.app = app
        self.tenancy = tenancy
        self._mounts_reached = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Resolve the tenant, bind it for the rest of the call, and unbind it on every exit."""
        if not self._mounts_reached:
            self._mounts_reached = True
            outer = scope.get("app")
            if isinstance(outer, Starlette):
                extend_error_handler(outer)
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope[TENANCY_SCOPE_KEY] = self.tenancy
        if self.tenancy.is_excluded(_route_path(scope)):
            context = None
        else:
            try:
                context = await self.tenancy.resolve(HTTPConnection(scope))
            except Exception as error:
                known = as_tenancy_error(error)
                if known is None and _has_own_handler(scope):
                    raise
                await self.on_error(scope, receive, send, known or _internal(error))
                return
        token = bind(context)
        if scope["type"] != "http":
            try:
                await self.app(scope, receive, send)
            finally:
                unbind(token)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as error:
            if started or _has_own_handler(scope):
                raise  # too late for an answer of ours, or the app answers it itself
            # Answered here, not re-raised: a server closes the keep-alive connection after an
            # exception, so the client's next request on it would get no answer at all.
            known = as_tenancy_error(error) or _internal(error)
            await answer(HTTPConnection(scope), known)(scope, receive, send)
        finally:
            unbind(token)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's lifespan, with the tenancy's background work running beside it (if it
        has any) until the app has shut down. The app's own errors propagate as they are."""
        if not self.tenancy.works_in_background:
            await self.app(scope, receive, self._checked_startup(send, None))
            return
        failure: Exception | None = None
        async with anyio.create_task_group() as group:
            try:
                await self.app(scope, receive, self._checked_startup(send, group))
            except Exception as error:  # raised below, not wrapped in an exception group
                failure = error
            group.cancel_scope.cancel()
        if failure is not None:
            raise failure

    def _checked_startup(self, send: Send, group: TaskGroup | None) -> Send:
        """``send`` that runs :meth:`Tenancy.check_startup` and starts the tenancy's background
        work in ``group`` as the app's startup completes. A failed check raises in the app's
        lifespan, which then exits (running its shutdown code) and reports
        ``lifespan.startup.failed``: the server does not start serving."""

        async def send_checked(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                await self.tenancy.check_startup()
                if group is not None:
                    await self.tenancy.run_in_background(group)
            await send(message)

        return send_checked

    async def on_error(
        self, scope: Scope, receive: Receive, send: Send, error: TenancyError
    ) -> None:
        """Answer a refused connection, and log it (see :mod:`fastapi_tenancy.responses`)."""
        conn = HTTPConnection(scope)
        if error.status_code >= 500:
            log_failure(conn, error.__cause__ or error, error.code)
        else:
            log_refusal(conn, error)
        if scope["type"] == "websocket":
            await send(
                {"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": error.code}
            )
            return
        await error_response(error)(scope, receive, send)
