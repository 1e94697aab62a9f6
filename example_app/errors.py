"""The app's own errors, answered in the kit's shape ``{"detail": ..., "code": ...}``.

They subclass :class:`~fastapi_tenancy.TenancyError` so that the handler ``tenancy.install(app)``
registers answers them too, and so that :class:`NotAuthenticated` can be raised from the
membership check, which runs inside the kit's middleware. The handlers below give FastAPI's
own errors (validation, unknown routes) the same shape, and answer :class:`LoginBusy` and
:class:`DatabaseNotReady` without the kit's failure log: an overloaded login or a probe that
finds the database slow is a state, not a bug.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from fastapi_tenancy import TenancyError

__all__ = [
    "DatabaseNotReady",
    "EmailTaken",
    "InvalidCredentials",
    "LoginBusy",
    "NotAuthenticated",
    "NotFound",
    "SignupBusy",
    "UnknownPlan",
    "install_error_handlers",
]

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
RETRY_AFTER_SECONDS = 1


class NotAuthenticated(TenancyError):
    """The route needs a bearer token and the request has none."""

    code = "not_authenticated"
    status_code = 401
    default_detail = "This needs a bearer token: log in with POST /auth/login."


class InvalidCredentials(TenancyError):
    """``POST /auth/login`` with an unknown email or a wrong password (one answer for both)."""

    code = "invalid_credentials"
    status_code = 401
    default_detail = "The email or the password is wrong."


class NotFound(TenancyError):
    """No such row in the bound tenant: also the answer for another tenant's row."""

    code = "not_found"
    status_code = 404
    default_detail = "Not found."


class LoginBusy(TenancyError):
    """``POST /auth/login`` while every password-hashing slot is taken and the queue is full,
    or no slot freed up in time (see :class:`~example_app.auth.LoginLimits`)."""

    code = "login_busy"
    status_code = 503
    default_detail = "Too many logins at once. Retry in a moment."


class SignupBusy(LoginBusy):
    """``POST /signup`` while every password-hashing slot is taken: sign-ups hash the new
    password in the slots logins use, so neither can take the memory the other needs."""

    code = "signup_busy"
    default_detail = "Too many sign-ups and logins at once. Retry in a moment."


class UnknownPlan(TenancyError):
    """``POST /signup`` names a plan ``GET /plans`` does not list (refused by the
    ``before_create`` hook, before the tenant's row is written)."""

    code = "unknown_plan"
    status_code = 422
    default_detail = "No such plan: GET /plans lists them."


class EmailTaken(TenancyError):
    """``POST /signup`` with the email of an existing account: nothing is created (the
    account's owner logs in instead; a platform admin adds memberships)."""

    code = "email_taken"
    status_code = 409
    default_detail = "An account with this email exists already: log in with it instead."


class DatabaseNotReady(TenancyError):
    """``GET /readyz`` when the database did not answer within the probe's time."""

    code = "database_unavailable"
    status_code = 503
    default_detail = "The database did not answer in time."


async def _unavailable(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, TenancyError):  # pragma: no cover - registered for it
        raise error
    return JSONResponse(
        {"detail": error.detail, "code": error.code},
        status_code=error.status_code,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    errors = error.errors() if isinstance(error, RequestValidationError) else []
    # The refused input is not echoed: it may be a password, or text no JSON can carry.
    errors = [{key: value for key, value in each.items() if key != "input"} for each in errors]
    return JSONResponse(
        {
            "detail": "The request is not valid.",
            "code": "invalid_request",
            "errors": jsonable_encoder(errors),
        },
        status_code=422,
    )


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, StarletteHTTPException):  # pragma: no cover - registered for it
        raise error
    return JSONResponse(
        {"detail": error.detail, "code": _code(error.status_code)},
        status_code=error.status_code,
        headers=error.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer validation errors, HTTP errors (404 route, 405), :class:`LoginBusy` and
    :class:`DatabaseNotReady` as ``{"detail", "code"}``; the last two with ``Retry-After``."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(LoginBusy, _unavailable)
    app.add_exception_handler(DatabaseNotReady, _unavailable)
