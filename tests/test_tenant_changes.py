"""A tenant changed through one worker is forgotten at once by every worker.

Each worker caches its tenant lookups; without a channel, a tenant suspended through one
worker is served by the others until their entries expire. Two workers here are two apps
with their own ``Tenancy`` (their own caches) over one database, each running its lifespan
(which listens on the channel). Every test first shows the other worker still serving the
stale record, so that what follows proves the channel, not an expiry.

Redis (``RedisChanges``) needs the server of ``TENANCY_TEST_REDIS_URL``; PostgreSQL
(``PostgresChanges``) runs in the PostgreSQL pass.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from http_app import Tenant, build_app, client, tenant_header
from lookup_support import eventually, fill_tenant_table
from sqlalchemy import Engine, text, update
from sqlmodel import Session

from fastapi_tenancy import (
    HeaderResolver,
    LookupCache,
    Tenancy,
    TenancyUnavailable,
    TenantRegistry,
    TenantTableLookup,
)
from fastapi_tenancy.changes import EVERY_TENANT, keep_listening
from fastapi_tenancy.redis_changes import RedisChanges
from tests.redis_server import usable_redis_url

REDIS_URL = usable_redis_url("Tenant change suite")


@pytest.fixture
def tenant_table(backend: str, engine: Engine, create_tables: Any) -> Engine:
    return fill_tenant_table(engine, create_tables)


class Workers:
    """Two apps over one tenant table, each with its own lookup cache, lifespans running."""

    def __init__(self, engine: Engine, make_changes: Callable[[], Any], **options: Any):
        self._stack = ExitStack()
        self.tenancies: list[Tenancy] = []
        self.clients: list[TestClient] = []
        for _ in range(2):
            app, tenancy = build_app(
                engine,
                resolvers=[HeaderResolver()],
                lookup=TenantTableLookup(Tenant, key="slug", active="active"),
                tenant_changes=make_changes(),
                **options,
            )
            self.tenancies.append(tenancy)
            self.clients.append(self._stack.enter_context(client(app)))

    def status(self, worker: int, tenant: str) -> int:
        r = self.clients[worker].get("/whoami", headers=tenant_header(tenant))
        return int(r.status_code)

    def changed(self, worker: int, key: Any = None) -> None:
        """``tenancy.tenant_changed(key)`` in that worker's event loop, as a route would."""
        self.clients[worker].portal.call(self.tenancies[worker].tenant_changed, key)  # type: ignore[union-attr]

    def close(self) -> None:
        self._stack.close()


def suspend(engine: Engine, slug: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(Tenant).where(Tenant.slug == slug).values(active=False))


@pytest.fixture
def redis_workers(tenant_table: Engine) -> Iterator[Workers]:
    channel = f"tenancy-test-{secrets.token_hex(4)}"
    workers = Workers(tenant_table, lambda: RedisChanges(REDIS_URL, channel=channel))
    try:
        yield workers
    finally:
        workers.close()


# --------------------------------------------------------------------------------------------
# Redis


def test_a_tenant_suspended_through_one_worker_is_refused_by_the_other_at_once(
    redis_workers: Workers, tenant_table: Engine
) -> None:
    assert redis_workers.status(1, "acme") == 200  # cached by the other worker
    suspend(tenant_table, "acme")
    assert redis_workers.status(1, "acme") == 200  # stale: its cache does not know yet
    redis_workers.changed(0, "acme")
    assert redis_workers.status(0, "acme") == 403  # this worker forgot it at once
    assert eventually(lambda: redis_workers.status(1, "acme") == 403)
    assert redis_workers.status(1, "globex") == 200


def test_every_tenant_changed_empties_every_cache(
    redis_workers: Workers, tenant_table: Engine
) -> None:
    assert redis_workers.status(1, "acme") == 200
    assert redis_workers.status(1, "globex") == 200
    suspend(tenant_table, "acme")
    suspend(tenant_table, "globex")
    redis_workers.changed(0)
    assert eventually(lambda: redis_workers.status(1, "acme") == 403)
    assert redis_workers.status(1, "globex") == 403


def test_a_message_that_is_no_tenant_key_is_ignored_and_logged(
    redis_workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    assert redis_workers.status(1, "acme") == 200
    changes = redis_workers.tenancies[0].tenant_changes
    assert isinstance(changes, RedisChanges)
    with caplog.at_level(logging.WARNING, "fastapi_tenancy.changes"):
        changes.publish_sync("Not A Key; DROP TABLE http_tenant")
        assert eventually(lambda: "ignored a tenant change for an invalid key" in caplog.text)
    assert redis_workers.status(1, "acme") == 200


def test_a_channel_that_cannot_be_reached_lets_the_app_start_and_fails_publish_closed(
    tenant_table: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "fastapi_tenancy.changes"):
        workers = Workers(
            tenant_table, lambda: RedisChanges("redis://127.0.0.1:1/0", connect_timeout=1)
        )
    try:
        assert "tenant change channel is unreachable" in caplog.text
        assert workers.status(0, "acme") == 200
        suspend(tenant_table, "acme")
        with pytest.raises(TenancyUnavailable):
            workers.changed(0, "acme")
        assert workers.status(0, "acme") == 403  # forgotten here even so
    finally:
        workers.close()


def test_changes_reach_a_preloading_worker_too(tenant_table: Engine) -> None:
    channel = f"tenancy-test-{secrets.token_hex(4)}"
    workers = Workers(
        tenant_table,
        lambda: RedisChanges(REDIS_URL, channel=channel),
        lookup_cache=LookupCache(preload=True),
    )
    try:
        assert workers.status(1, "acme") == 200
        suspend(tenant_table, "acme")
        assert workers.status(1, "acme") == 200
        workers.changed(0, "acme")
        assert eventually(lambda: workers.status(1, "acme") == 403)
    finally:
        workers.close()


# --------------------------------------------------------------------------------------------
# keep_listening on its own: reconnects, and drops the cache at each subscription


class FlakyChannel:
    """Fails ``failures`` times, then subscribes and delivers ``messages``, then is lost."""

    def __init__(self, failures: int, messages: list[str]) -> None:
        self.failures = failures
        self.messages = messages
        self.attempts = 0

    async def publish(self, key: str) -> None:
        raise NotImplementedError

    async def listen(
        self, on_change: Callable[[str], None], on_subscribed: Callable[[], None]
    ) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("refused")
        on_subscribed()
        for message in self.messages:
            on_change(message)
        raise ConnectionError("lost")


@pytest.mark.anyio
async def test_keep_listening_starts_after_the_first_failure_and_resubscribes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = FlakyChannel(failures=2, messages=["acme", EVERY_TENANT])
    heard: list[str] = []
    subscriptions: list[int] = []
    resubscribed = anyio.Event()

    def subscribed() -> None:
        subscriptions.append(channel.attempts)
        if len(subscriptions) == 2:
            resubscribed.set()

    with caplog.at_level(logging.WARNING, "fastapi_tenancy.changes"):
        async with anyio.create_task_group() as group:
            await group.start(
                lambda task_status: keep_listening(
                    channel,
                    heard.append,
                    subscribed,
                    task_status=task_status,
                    first_delay=0.01,
                    max_delay=0.02,
                )
            )
            assert channel.attempts == 1  # started after the first failure, not blocked on it
            with anyio.fail_after(5):
                await resubscribed.wait()
            group.cancel_scope.cancel()
    assert subscriptions == [3, 4]
    assert heard[:4] == ["acme", EVERY_TENANT, "acme", EVERY_TENANT]
    assert "unreachable (refused)" in caplog.text
    assert "unreachable (lost)" in caplog.text


# --------------------------------------------------------------------------------------------
# PostgreSQL LISTEN/NOTIFY


@pytest.mark.backends("postgres")
class TestPostgresChanges:
    @pytest.fixture
    def channel(self) -> str:
        return f"tenancy_test_{secrets.token_hex(4)}"

    @pytest.fixture
    def pg_workers(self, tenant_table: Engine, channel: str) -> Iterator[Workers]:
        from fastapi_tenancy.postgres.notify import PostgresChanges

        workers = Workers(tenant_table, lambda: PostgresChanges(tenant_table, channel=channel))
        try:
            yield workers
        finally:
            workers.close()

    def test_a_notify_in_the_changing_transaction_reaches_every_worker_at_commit(
        self, pg_workers: Workers, tenant_table: Engine, channel: str
    ) -> None:
        from fastapi_tenancy.postgres.notify import notify_tenant_changed

        assert pg_workers.status(1, "acme") == 200
        assert pg_workers.status(1, "globex") == 200
        with tenant_table.connect() as conn:  # rolled back: no change, and no message
            conn.execute(update(Tenant).where(Tenant.slug == "acme").values(active=False))
            notify_tenant_changed(conn, "acme", channel=channel)
            conn.rollback()
        with tenant_table.begin() as conn:
            conn.execute(update(Tenant).where(Tenant.slug == "globex").values(active=False))
            notify_tenant_changed(conn, "globex", channel=channel)
        assert eventually(lambda: pg_workers.status(1, "globex") == 403)
        assert pg_workers.status(0, "globex") == 403
        assert pg_workers.status(1, "acme") == 200

    def test_tenant_changed_reaches_the_other_worker(
        self, pg_workers: Workers, tenant_table: Engine
    ) -> None:
        assert pg_workers.status(1, "acme") == 200
        suspend(tenant_table, "acme")
        assert pg_workers.status(1, "acme") == 200
        pg_workers.changed(0, "acme")
        assert eventually(lambda: pg_workers.status(1, "acme") == 403)

    def test_the_trigger_tells_every_worker_of_a_change_made_outside_the_app(
        self, pg_workers: Workers, tenant_table: Engine, channel: str
    ) -> None:
        from fastapi_tenancy.postgres.notify import tenant_change_trigger

        with tenant_table.begin() as conn:
            for statement in tenant_change_trigger(Tenant.__table__, "slug", channel=channel) * 2:
                conn.execute(text(statement))  # twice: idempotent
        assert pg_workers.status(0, "acme") == 200
        assert pg_workers.status(1, "acme") == 200
        with tenant_table.begin() as conn:  # raw SQL, as from a console
            conn.execute(text("UPDATE http_tenant SET active = false WHERE slug = 'acme'"))
        assert eventually(lambda: pg_workers.status(1, "acme") == 403)
        assert pg_workers.status(0, "acme") == 403
        assert pg_workers.status(1, "initech") == 200
        with tenant_table.begin() as conn:
            conn.execute(text("TRUNCATE http_tenant"))
        assert eventually(lambda: pg_workers.status(1, "initech") == 404)

    def test_a_lost_listener_reconnects_and_forgets_what_it_may_have_missed(
        self, pg_workers: Workers, tenant_table: Engine, channel: str
    ) -> None:
        assert pg_workers.status(1, "acme") == 200
        with tenant_table.begin() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": f"fastapi_tenancy {channel}"},
            ).scalar_one()
        assert killed == 2  # both workers' listeners
        suspend(tenant_table, "acme")  # no message at all: only the resubscription can tell
        assert eventually(lambda: pg_workers.status(1, "acme") == 403)


# --------------------------------------------------------------------------------------------
# docs/examples/tenant_changes.py


@pytest.fixture
def docs_tenants(engine: Engine, create_tables: Any) -> Engine:
    from docs.examples.resolvers_lookup import Tenant as DocsTenant

    create_tables(engine, DocsTenant)
    with Session(engine) as session:
        session.add_all(
            [DocsTenant(slug="acme", name="Acme"), DocsTenant(slug="globex", name="Globex")]
        )
        session.commit()
    return engine


def docs_status(c: TestClient, slug: str) -> int:
    return int(c.get("/tenant", headers={"X-Tenant-ID": slug}).status_code)


def test_the_redis_sample_suspends_a_tenant_in_every_worker(
    docs_tenants: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docs.examples import tenant_changes

    # a channel of this test's own: other runs' messages on the default one cannot help it
    channel = f"tenancy-docs-{secrets.token_hex(4)}"
    monkeypatch.setattr(
        tenant_changes, "RedisChanges", functools.partial(RedisChanges, channel=channel)
    )
    with (
        client(tenant_changes.create_app(docs_tenants, REDIS_URL)) as one,
        client(tenant_changes.create_app(docs_tenants, REDIS_URL)) as two,
    ):
        assert docs_status(one, "acme") == docs_status(two, "acme") == 200
        changes = one.app.state.tenancy.tenant_changes  # type: ignore[attr-defined]
        tenant_changes.suspend_tenant(docs_tenants, changes, "acme")
        assert eventually(lambda: docs_status(one, "acme") == 403)
        assert eventually(lambda: docs_status(two, "acme") == 403)
        assert docs_status(two, "globex") == 200


@pytest.mark.backends("postgres")
def test_the_postgres_sample_suspends_a_tenant_in_every_worker(docs_tenants: Engine) -> None:
    from docs.examples import tenant_changes

    with (
        client(tenant_changes.create_postgres_app(docs_tenants)) as one,
        client(tenant_changes.create_postgres_app(docs_tenants)) as two,
    ):
        assert docs_status(one, "acme") == docs_status(two, "acme") == 200
        tenant_changes.suspend_tenant_in_postgres(docs_tenants, "acme")
        assert eventually(lambda: docs_status(one, "acme") == 403)
        assert eventually(lambda: docs_status(two, "acme") == 403)
        assert docs_status(two, "globex") == 200


# --------------------------------------------------------------------------------------------
# The registry's suspend and resume publish through the channel (its sync side)


def check_registry_changes_reach_every_worker(engine: Engine, changes: Callable[[], Any]) -> None:
    workers = Workers(engine, changes, registry=TenantRegistry(Tenant, key="slug", active="active"))
    try:
        assert workers.status(1, "acme") == 200
        workers.tenancies[0].tenants.suspend("acme")
        assert eventually(lambda: workers.status(1, "acme") == 403)
        workers.tenancies[0].tenants.resume("acme")
        assert eventually(lambda: workers.status(1, "acme") == 200)
    finally:
        workers.close()


def test_suspend_in_the_registry_reaches_every_worker_over_redis(tenant_table: Engine) -> None:
    channel = f"tenancy-test-{secrets.token_hex(4)}"
    check_registry_changes_reach_every_worker(
        tenant_table, lambda: RedisChanges(REDIS_URL, channel=channel)
    )


@pytest.mark.backends("postgres")
def test_suspend_in_the_registry_reaches_every_worker_over_postgres(tenant_table: Engine) -> None:
    from fastapi_tenancy.postgres.notify import PostgresChanges

    channel = f"tenancy_test_{secrets.token_hex(4)}"
    check_registry_changes_reach_every_worker(
        tenant_table, lambda: PostgresChanges(tenant_table, channel=channel)
    )
