"""How a :class:`TenancyError` is told to the client: JSON ``{"detail", "code"}``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from .exceptions import InvalidToken, TenancyError

__all__ = ["error_response", "tenancy_error_handler"]


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
