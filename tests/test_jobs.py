"""Jobs for every tenant: each call bound to its tenant, suspended tenants left out, a failure
reported and logged with its tenant, never stopping the others, a few tenants at a time."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from purge_models import PurgeProject, World
from sqlmodel import select

from fastapi_tenancy import get_current_tenant
from fastapi_tenancy.jobs import run_for_each_tenant, run_for_each_tenant_async
from fastapi_tenancy.logging import TenantLogFilter


def test_each_active_tenant_runs_once_bound_and_one_failure_is_reported(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.call("suspend", "initech")
    seen: dict[str, list[str]] = {}
    tenancy = world.tenancy

    if tenancy.is_async:

        async def job(key: str) -> None:
            assert get_current_tenant() == key
            async with tenancy.async_session() as session:
                projects = (await session.exec(select(PurgeProject))).all()
            seen[key] = sorted({p.tenant_id for p in projects})
            if key == "globex":
                raise RuntimeError("globex's report broke")

    else:

        def job(key: str) -> None:  # type: ignore[misc]
            assert get_current_tenant() == key
            with tenancy.session() as session:
                projects = session.exec(select(PurgeProject)).all()
            seen[key] = sorted({p.tenant_id for p in projects})
            if key == "globex":
                raise RuntimeError("globex's report broke")

    ends: list[tuple[str, bool]] = []
    handler = caplog.handler
    handler.addFilter(TenantLogFilter())
    with caplog.at_level(logging.ERROR, logger="fastapi_tenancy.jobs"):
        report = world.call(
            "for_each",
            job,
            concurrency=2,
            on_done=lambda key, error: ends.append((key, error is None)),
        )
    assert seen == {"acme": ["acme"], "globex": ["globex"]}  # initech is suspended
    assert report.succeeded == ["acme"]
    assert list(report.failed) == ["globex"]
    assert not report.ok
    assert str(report.failed["globex"]) == "globex's report broke"
    assert sorted(ends) == [("acme", True), ("globex", False)]
    [line] = [r for r in caplog.records if r.name == "fastapi_tenancy.jobs"]
    assert line.tenant == "globex"  # type: ignore[attr-defined]
    assert line.exc_info is not None


def test_no_more_than_concurrency_tenants_run_at_once() -> None:
    running = 0
    most = 0
    lock = threading.Lock()
    release = threading.Barrier(2, timeout=5)

    def job(key: str) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait()  # two at once must meet here, or the barrier times out
        with lock:
            running -= 1

    report = run_for_each_tenant([f"t{i}" for i in range(6)], job, concurrency=2)
    assert report.ok
    assert len(report.succeeded) == 6
    assert most == 2


def test_the_async_runner_keeps_to_its_bound_and_its_tenants() -> None:
    running = 0
    most = 0

    async def job(key: str) -> None:
        nonlocal running, most
        assert get_current_tenant() == key
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1

    report = asyncio.run(run_for_each_tenant_async([f"t{i}" for i in range(7)], job, concurrency=3))
    assert sorted(report.succeeded) == [f"t{i}" for i in range(7)]
    assert most == 3


def test_a_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        run_for_each_tenant(["a"], print, concurrency=0)
