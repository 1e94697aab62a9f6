"""Two small pure ASGI middlewares around the kit's ``TenancyMiddleware``.

The stack, outermost first::

    AccessLogMiddleware -> BearerRequiredMiddleware -> TenancyMiddleware (the kit) -> routes

``BearerRequiredMiddleware`` answers 401 before any tenant work when a protected path has no
bearer token at all; a token that is present is the kit's to verify (401 ``invalid_token``).
``AccessLogMiddleware`` logs one line per request, with the tenant the kit bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_tenancy import get_tenant_context

from .errors import BEARER_CHALLENGE, NotAuthenticated

__all__ = ["AccessLogMiddleware", "BearerRequiredMiddleware", "access_logger"]

access_logger = logging.getLogger("example_app.access")


def has_bearer_token(headers: Headers) -> bool:
    """Whether the request sends ``Authorization: Bearer ...`` (verified later, by the kit)."""
    parts = headers.get("authorization", "").split(None, 1)
    return bool(parts) and parts[0].lower() == "bearer"


class BearerRequiredMiddleware:
    """401 ``not_authenticated`` for any http request outside ``public_paths`` with no token."""

    def __init__(self, app: ASGIApp, *, public_paths: Collection[str]) -> None:
        self.app = app
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in self.public_paths
            or has_bearer_token(Headers(scope=scope))
        ):
            await self.app(scope, receive, send)
            return
        error = NotAuthenticated()
        response = JSONResponse(
            {"detail": error.detail, "code": error.code},
            status_code=error.status_code,
            headers=BEARER_CHALLENGE,
        )
        await response(scope, receive, send)


class AccessLogMiddleware:
    """One ``example_app.access`` line per http request: method, path, status, tenant, user.

    The tenant is read when the response starts, inside the kit's binding; requests the kit
    refused (bad token, mismatch, not a member) log ``tenant=-``.
    """

    def __init__(self, app: ASGIApp, *, logger: logging.Logger = access_logger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        tenant = user = "-"

        async def send_and_note(message: Message) -> None:
            nonlocal status, tenant, user
            if message["type"] == "http.response.start":
                status = message["status"]
                context = get_tenant_context()
                if context is not None:
                    tenant = context.id or "-"
                    user = str(context.claims.get("sub") or "-")
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.logger.info(
                "%s %s %d tenant=%s user=%s %.1fms",
                scope["method"],
                scope["path"],
                status,
                tenant,
                user,
                (time.perf_counter() - started) * 1000,
                extra={"tenant": tenant, "user": user, "status": status},
            )
