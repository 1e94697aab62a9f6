"""What a command works with: the app's Tenancy, loaded on first use, and one event loop.

A command is written once for sync and async tenancies: it calls ``tenants.purge(...)`` on
whichever of ``tenancy.tenants`` and ``tenancy.async_tenants`` the app has, and passes the
answer through :meth:`Runtime.wait`, which runs a coroutine to its end and returns anything
else as it is. Every coroutine of one command runs on the same event loop, so that pooled async
connections are never used from another loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncEngine

from ..async_tenants import AsyncTenants
from ..exceptions import TenancyError, TenantExists, TenantNotFound
from ..registry import TenantRegistry
from ..tenancy import Tenancy
from ..tenants import Tenants
from .errors import CliError
from .loading import load_tenancy

__all__ = ["Runtime"]

T = TypeVar("T")

# Job failures: `run` reports each itself, in one line, with the tenant.
_REPORTED_BY_RUN = "fastapi_tenancy.jobs"


class Runtime:
    """The app named by ``app`` (or the environment), its tenants, and how to wait for them."""

    def __init__(
        self,
        app: str | None,
        *,
        log_level: str = "error",
        tracebacks: bool = False,
        progress: bool = True,
    ) -> None:
        self.app = app
        self.log_level = log_level
        self.tracebacks = tracebacks
        self.progress = progress
        self._tenancy: Tenancy | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def tenancy(self) -> Tenancy:
        """The app's Tenancy; loaded (and logging set up) on first use."""
        if self._tenancy is None:
            self._tenancy = load_tenancy(self.app)
            _configure_logging(self.log_level, self.tracebacks)
        return self._tenancy

    @property
    def registry(self) -> TenantRegistry[Any]:
        """The app's ``TenantRegistry``; a one-line error if it has none."""
        registry = self.tenancy.registry
        if registry is None:
            raise CliError(
                "the app's Tenancy has no tenants table: this command needs "
                "Tenancy(..., registry=TenantRegistry(...))"
            )
        return registry

    @property
    def tenants(self) -> Tenants[Any] | AsyncTenants[Any]:
        """``tenancy.tenants`` or ``tenancy.async_tenants``, as the engine is."""
        tenancy, _ = self.tenancy, self.registry
        return tenancy.async_tenants if tenancy.is_async else tenancy.tenants

    def key(self, raw: str) -> Any:
        """``raw`` parsed by the app's key type; a one-line error if it is no valid key."""
        try:
            return self.tenancy.keys.parse(raw)
        except TenancyError:
            raise CliError(f"{raw!r} is not a valid tenant key for this app") from None

    def spell(self, key: Any) -> str:
        """How the app spells ``key`` (as in a URL or a header)."""
        return self.tenancy.keys.format(key)

    def wait(self, value: Awaitable[T] | T) -> T:
        """Run ``value`` to its end on this command's event loop if it is awaitable; else
        ``value`` itself."""
        if not inspect.isawaitable(value):
            return value
        return cast(T, self.complete(value))

    def complete(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` to its end on this command's event loop."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)

    @contextmanager
    def naming(self, *, missing: Any = None, taken: Any = None) -> Iterator[None]:
        """Name the tenant that an unknown-key or a key-taken error is about."""
        try:
            yield
        except TenantNotFound as error:
            if missing is None:
                raise
            raise CliError(f"no tenant {self.spell(missing)!r} ({error.code})") from error
        except TenantExists as error:
            if taken is None:
                raise
            raise CliError(f"tenant {self.spell(taken)!r} exists already ({error.code})") from error

    def close(self) -> None:
        """Close the app's engines' connections, then the event loop."""
        tenancy, self._tenancy = self._tenancy, None
        try:
            if tenancy is not None:
                for engine in (tenancy.engine, tenancy.admin_engine):
                    if isinstance(engine, AsyncEngine):
                        self.complete(engine.dispose())
                    elif engine is not None:
                        engine.dispose()
        finally:
            loop, self._loop = self._loop, None
            if loop is not None:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()


class _LogFormatter(logging.Formatter):
    """One line per record: a record's traceback only with ``--traceback``."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.tracebacks = tracebacks

    def formatException(self, ei: Any) -> str:
        return super().formatException(ei) if self.tracebacks else ""


def _configure_logging(level: str, tracebacks: bool) -> None:
    """Print the kit's records at ``level`` and above on stderr, unless the app set up
    logging of its own (then its handlers get them, as in the app)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter(tracebacks))
    handler.addFilter(_not_reported_by_run)
    root.addHandler(handler)
    root.setLevel(level.upper())


def _not_reported_by_run(record: logging.LogRecord) -> bool:
    return record.name != _REPORTED_BY_RUN
