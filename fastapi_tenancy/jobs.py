"""Run one function for every tenant, each call bound to its tenant, a few at a time.

A nightly report, a cleanup, a Celery task queued per tenant: :func:`run_for_each_tenant` (and
its async twin) calls ``function(key)`` once per key inside ``with_tenant(key)``, so sessions
made in it are scoped to that tenant and Celery messages carry it. One tenant's failure does not
stop the others: it is logged on ``fastapi_tenancy.jobs`` with the tenant and kept in the
:class:`JobReport`. ``tenancy.tenants.for_each`` runs it over the active tenants.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from .context import with_tenant

__all__ = ["JobReport", "run_for_each_tenant", "run_for_each_tenant_async"]

logger = logging.getLogger("fastapi_tenancy.jobs")

OnDone = Callable[[Any, "BaseException | None"], None]


@dataclass
class JobReport:
    """Which tenants a run served and which failed (with what), each in the order they ended."""

    succeeded: list[Any] = field(default_factory=list)
    failed: dict[Any, Exception] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no tenant failed."""
        return not self.failed

    def record(self, key: Any, error: Exception | None, on_done: OnDone | None) -> None:
        if error is None:
            self.succeeded.append(key)
        else:
            self.failed[key] = error
        if on_done is not None:
            on_done(key, error)


def run_for_each_tenant(
    keys: Iterable[Any],
    function: Callable[[Any], object],
    *,
    concurrency: int = 4,
    on_done: OnDone | None = None,
) -> JobReport:
    """Call ``function(key)`` for each key with that tenant bound, ``concurrency`` threads at
    once; ``on_done(key, error)`` hears each end (a progress bar). Never raises for a
    tenant's failure: read :attr:`JobReport.failed`."""
    _check_concurrency(concurrency)
    report = JobReport()

    def call(key: Any) -> None:
        with with_tenant(key, source="job"):
            try:
                function(key)
            except Exception as error:
                _log_failure(key, error)
                raise

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="tenant-job") as pool:
        futures = {pool.submit(call, key): key for key in keys}
        for future in as_completed(futures):
            error = future.exception()
            if error is not None and not isinstance(error, Exception):
                raise error
            report.record(futures[future], error, on_done)
    return report


async def run_for_each_tenant_async(
    keys: Iterable[Any],
    function: Callable[[Any], Awaitable[object]],
    *,
    concurrency: int = 4,
    on_done: OnDone | None = None,
) -> JobReport:
    """Async twin of :func:`run_for_each_tenant`: ``await function(key)``, ``concurrency``
    tenants at once, each in its own task (so its own tenant binding)."""
    _check_concurrency(concurrency)
    report = JobReport()
    gate = asyncio.Semaphore(concurrency)

    async def call(key: Any) -> None:
        async with gate, with_tenant(key, source="job"):
            try:
                await function(key)
            except Exception as error:
                _log_failure(key, error)
                report.record(key, error, on_done)
            else:
                report.record(key, None, on_done)

    await asyncio.gather(*(call(key) for key in keys))
    return report


def _log_failure(key: Any, error: Exception) -> None:
    # Inside the tenant's binding, so a TenantLogFilter puts the tenant on the line.
    logger.error("job failed for tenant %s: %s", key, error, exc_info=error)


def _check_concurrency(concurrency: int) -> None:
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
