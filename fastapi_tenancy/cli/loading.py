"""Finding the app's :class:`~fastapi_tenancy.Tenancy`, and other objects named
``module:attribute``."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from ..tenancy import Tenancy
from .errors import CliError, UsageError, describe

__all__ = ["APP_VARIABLE", "current_directory_on_path", "import_object", "load_tenancy"]

APP_VARIABLE = "FASTAPI_TENANCY_APP"
"""The environment variable that names the app when ``--app`` is not given."""


def import_object(spec: str, what: str) -> Any:
    """The object ``module:attribute`` names (the attribute may be dotted), importing the
    module with the current directory on ``sys.path``, as uvicorn does."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise UsageError(f"{what} must be given as module:attribute, not {spec!r}")
    current_directory_on_path()
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:
        reason = str(error) if isinstance(error, ImportError) else describe(error)
        raise CliError(f"cannot import {module_name} ({what}): {reason}") from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"{module_name} has no attribute {attribute!r} ({what})") from None
    return target


def current_directory_on_path() -> None:
    """Let ``module`` be found in the current directory, as ``python -m`` and uvicorn do."""
    directory = os.getcwd()
    if directory not in sys.path:
        sys.path.insert(0, directory)


def load_tenancy(spec: str | None) -> Tenancy:
    """The ``Tenancy`` that ``spec`` (else ``$FASTAPI_TENANCY_APP``) names: the object itself,
    or what a function of no arguments named so returns."""
    spec = spec or os.environ.get(APP_VARIABLE, "").strip()
    if not spec:
        raise UsageError(
            f"which app? give --app module:attribute or set {APP_VARIABLE} (the attribute is "
            "a Tenancy, or a function of no arguments that returns one)"
        )
    target = import_object(spec, "the app")
    if not isinstance(target, Tenancy) and callable(target):
        try:
            inspect.signature(target).bind()
        except (TypeError, ValueError):
            raise CliError(
                f"{spec} is neither a Tenancy nor a function of no arguments that returns one"
            ) from None
        try:
            target = target()
        except Exception as error:
            raise CliError(f"{spec}() failed: {describe(error)}") from error
    if not isinstance(target, Tenancy):
        raise CliError(
            f"{spec} is a {type(target).__name__}, not a Tenancy (nor a function that returns one)"
        )
    return target
