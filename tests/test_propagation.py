"""The tenant outside the request: wrappers, capture/restore, and work a request starts."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from sqlalchemy import Engine
from sqlmodel import Field, select

from fastapi_tenancy import (
    HeaderResolver,
    InvalidTenantKey,
    Tenancy,
    TenantRequired,
    TenantScoped,
    as_tenant,
    capture,
    carry_tenant,
    get_current_tenant,
    get_tenant_context,
    restore,
    with_tenant,
    without_tenant,
)


class PropagatedNote(TenantScoped, table=True):
    __tablename__ = "propagation_note"

    id: int | None = Field(default=None, primary_key=True)
    text: str = Field(max_length=100)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    # One thread, so work submitted later provably runs on the thread that ran earlier work.
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


# --------------------------------------------------------------------------------------------
# carry_tenant and as_tenant


def test_carry_tenant_takes_the_tenant_into_a_thread_pool_that_copies_no_context(
    pool: ThreadPoolExecutor,
) -> None:
    with with_tenant("acme"):
        carried = carry_tenant(get_current_tenant)
        plain = pool.submit(get_current_tenant).result()
    assert plain is None
    assert pool.submit(carried).result() == "acme"
    assert pool.submit(get_current_tenant).result() is None
    assert get_current_tenant() is None


def test_carry_tenant_restores_the_callers_binding_even_when_the_work_raises() -> None:
    def fail() -> None:
        assert get_current_tenant() == "acme"
        raise RuntimeError("boom")

    with with_tenant("acme"):
        carried = carry_tenant(fail)
    with with_tenant("globex"):
        with pytest.raises(RuntimeError, match="boom"):
            carried()
        assert get_current_tenant() == "globex"


@pytest.mark.anyio
async def test_carry_tenant_wraps_coroutine_functions_into_coroutine_functions() -> None:
    async def which() -> str | None:
        await anyio.lowlevel.checkpoint()
        return get_current_tenant()

    async with with_tenant("acme"):
        carried = carry_tenant(which)
    assert asyncio.iscoroutinefunction(carried)
    assert await carried() == "acme"
    assert get_current_tenant() is None


def test_carry_tenant_with_no_tenant_bound_runs_the_work_with_none(
    pool: ThreadPoolExecutor,
) -> None:
    carried = carry_tenant(get_current_tenant)
    with with_tenant("acme"):
        assert carried() is None
        assert get_current_tenant() == "acme"


def test_as_tenant_binds_the_tenant_for_each_call_and_only_then() -> None:
    @as_tenant("acme")
    def job(fail: bool = False) -> str | None:
        if fail:
            raise ValueError("nope")
        return get_current_tenant()

    assert job() == "acme"
    with with_tenant("globex"):
        assert job() == "acme"
        with pytest.raises(ValueError, match="nope"):
            job(fail=True)
        assert get_current_tenant() == "globex"
    assert get_current_tenant() is None
    assert job.__name__ == "job"


@pytest.mark.anyio
async def test_as_tenant_decorates_async_functions() -> None:
    @as_tenant("initech", source="cron")
    async def job() -> tuple[str | None, str | None]:
        await anyio.lowlevel.checkpoint()
        context = get_tenant_context()
        assert context is not None
        return context.id, context.source

    assert await job() == ("initech", "cron")
    assert get_current_tenant() is None


def test_as_tenant_refuses_an_empty_tenant() -> None:
    with pytest.raises(ValueError, match="needs a tenant key"):
        as_tenant("")


# --------------------------------------------------------------------------------------------
# capture and restore


def test_capture_and_restore_round_trip_through_json() -> None:
    with with_tenant("acme", source="jwt"):
        message = json.dumps({"job": 1, "tenant": capture()})
    assert get_current_tenant() is None
    data = json.loads(message)["tenant"]
    with restore(data) as context:
        assert get_current_tenant() == "acme"
        assert context.source == "jwt"
        assert dict(context.claims) == {}
    assert get_current_tenant() is None


@pytest.mark.anyio
async def test_restore_works_as_an_async_context_manager() -> None:
    async with with_tenant("globex"):
        data = capture()
    async with restore(data):
        assert get_current_tenant() == "globex"
    assert get_current_tenant() is None


def test_capture_carries_claims_only_when_asked() -> None:
    from fastapi_tenancy.context import TenantContext, bind, unbind

    token = bind(TenantContext(id="acme", source="jwt", claims={"sub": "ann@acme.test"}))
    try:
        plain = capture()
        with_claims = capture(include_claims=True)
    finally:
        unbind(token)
    assert plain is not None
    assert "claims" not in plain
    assert with_claims is not None
    assert with_claims["claims"] == {"sub": "ann@acme.test"}
    with restore(with_claims) as context:
        assert context.claims["sub"] == "ann@acme.test"


def test_capture_answers_none_with_no_tenant_and_inside_without_tenant() -> None:
    assert capture() is None
    with without_tenant(reason="test"):
        assert capture() is None


def test_restore_of_nothing_refuses_instead_of_running_unscoped() -> None:
    with pytest.raises(TenantRequired):
        restore(None)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"tenant": "acme"}, id="no-version"),
        pytest.param({"v": 2, "tenant": "acme"}, id="unknown-version"),
        pytest.param({"v": 1}, id="no-tenant"),
        pytest.param({"v": 1, "tenant": 7}, id="tenant-not-a-string"),
        pytest.param({"v": 1, "tenant": ""}, id="empty-tenant"),
        pytest.param({"v": 1, "tenant": "ACME; drop"}, id="tenant-outside-the-pattern"),
        pytest.param({"v": 1, "tenant": "acme", "source": "x y"}, id="odd-source"),
        pytest.param({"v": 1, "tenant": "acme", "claims": ["sub"]}, id="claims-not-a-mapping"),
        pytest.param(["acme"], id="not-a-mapping"),
        pytest.param("acme", id="a-bare-string"),
    ],
)
def test_restore_refuses_malformed_captures_before_binding_anything(data: Any) -> None:
    with pytest.raises(InvalidTenantKey):
        restore(data)
    assert get_current_tenant() is None


def test_restore_checks_the_key_against_the_given_pattern() -> None:
    data = {"v": 1, "tenant": "ACME"}
    with pytest.raises(InvalidTenantKey):
        restore(data)
    with restore(data, key_pattern=r"[A-Z]+"):
        assert get_current_tenant() == "ACME"


# --------------------------------------------------------------------------------------------
# Work a request starts, through an ASGI app


class Recorder:
    """What each piece of work saw, by request label."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, str | None]] = {}
        self.lock = threading.Lock()

    def note(self, label: str, where: str, tenant: str | None) -> None:
        with self.lock:
            self.seen.setdefault(label, {})[where] = tenant


def build_app(recorder: Recorder, pool: ThreadPoolExecutor, release: asyncio.Event) -> FastAPI:
    app = FastAPI()
    tenancy = Tenancy(_memory_engine(), resolvers=[HeaderResolver()])
    tenancy.install(app)
    app.state.tasks = []

    @app.get("/work/{label}")
    async def work(label: str, background: BackgroundTasks) -> dict[str, str | None]:
        def sync_background() -> None:
            recorder.note(label, "background-sync", get_current_tenant())

        async def async_background() -> None:
            await anyio.lowlevel.checkpoint()
            recorder.note(label, "background-async", get_current_tenant())

        async def later() -> None:
            await release.wait()  # runs on after the response is sent
            recorder.note(label, "task-after-response", get_current_tenant())

        background.add_task(sync_background)
        background.add_task(async_background)
        app.state.tasks.append(asyncio.create_task(later()))

        async def now() -> str | None:
            await anyio.lowlevel.checkpoint()
            return get_current_tenant()

        recorder.note(label, "create-task", await asyncio.create_task(now()))
        recorder.note(label, "anyio-thread", await anyio.to_thread.run_sync(get_current_tenant))
        recorder.note(label, "asyncio-to-thread", await asyncio.to_thread(get_current_tenant))
        loop = asyncio.get_running_loop()
        recorder.note(label, "executor-plain", await loop.run_in_executor(pool, get_current_tenant))
        recorder.note(
            label,
            "executor-carried",
            await loop.run_in_executor(pool, carry_tenant(get_current_tenant)),
        )
        return {"tenant": get_current_tenant()}

    return app


def _memory_engine() -> Engine:
    from sqlmodel import create_engine

    return create_engine("sqlite://")


@pytest.mark.anyio
async def test_work_started_by_a_request_sees_its_tenant_and_nothing_outlives_it(
    pool: ThreadPoolExecutor,
) -> None:
    recorder = Recorder()
    release = asyncio.Event()
    app = build_app(recorder, pool, release)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        labels = [(f"{tenant}-{i}", tenant) for i in range(5) for tenant in ("acme", "globex")]

        async def call(label: str, tenant: str) -> None:
            r = await client.get(f"/work/{label}", headers={"X-Tenant-ID": tenant})
            assert r.status_code == 200, r.text
            assert r.json() == {"tenant": tenant}

        async with anyio.create_task_group() as group:
            for label, tenant in labels:
                group.start_soon(call, label, tenant)

        # Everything the requests started is done but the tasks waiting on `release`.
        assert get_current_tenant() is None
        release.set()
        await asyncio.gather(*app.state.tasks)

    for label, tenant in labels:
        assert recorder.seen[label] == {
            "create-task": tenant,
            "anyio-thread": tenant,
            "asyncio-to-thread": tenant,
            "executor-plain": None,
            "executor-carried": tenant,
            "background-sync": tenant,
            "background-async": tenant,
            "task-after-response": tenant,
        }, label
    # After the requests: the test's own context, new tasks and the pool's thread see nothing.
    assert get_current_tenant() is None
    assert await asyncio.create_task(_tenant_now()) is None
    assert pool.submit(get_current_tenant).result() is None


async def _tenant_now() -> str | None:
    return get_current_tenant()


@pytest.mark.backends("sqlite")
def test_a_background_task_writes_through_a_session_scoped_to_the_requests_tenant(
    engine: Engine, create_tables: Any
) -> None:
    from fastapi.testclient import TestClient

    create_tables(engine, PropagatedNote)
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()])
    app = FastAPI()
    tenancy.install(app)

    def save(text: str) -> None:
        with tenancy.session() as session:
            session.add(PropagatedNote(text=text))
            session.commit()

    @app.post("/notes/{text}", status_code=202)
    def queue(text: str, background: BackgroundTasks) -> None:
        background.add_task(save, text)

    with TestClient(app) as client:
        for tenant in ("acme", "globex", "acme"):
            r = client.post(f"/notes/{tenant}-note", headers={"X-Tenant-ID": tenant})
            assert r.status_code == 202, r.text

    with without_tenant(reason="test reads every tenant"), tenancy.session() as session:
        rows = session.exec(select(PropagatedNote.tenant_id, PropagatedNote.text)).all()
    assert sorted(rows) == [("acme", "acme-note"), ("acme", "acme-note"), ("globex", "globex-note")]
