"""A tenant suspended from the command line, in another process, is refused at once by an app
that is running: the command publishes the change on the app's ``tenant_changes`` channel
(Redis, or PostgreSQL ``NOTIFY``), and the app forgets the tenant it had cached for ten
minutes. Each test first shows the app serving the tenant from its cache, so that the refusal
proves the channel, not an expiry."""

from __future__ import annotations

import secrets

import pytest
from cli_app import REGISTRY, changes_for
from cli_support import CliWorld, run_cli
from http_app import build_app, client, tenant_header
from lookup_support import eventually

from fastapi_tenancy import HeaderResolver, LookupCache
from tests.redis_server import usable_redis_url

REDIS_URL = usable_redis_url("Command line's tenant change test")


def suspend_from_another_process(cli_world: CliWorld, where: str) -> None:
    channel = f"tenancy_cli_{secrets.token_hex(4)}"
    app, _ = build_app(
        cli_world.engine,
        resolvers=[HeaderResolver()],
        registry=REGISTRY,
        lookup_cache=LookupCache(ttl=600),
        tenant_changes=changes_for(cli_world.engine, where, channel),
    )
    with client(app) as http:

        def status() -> int:
            return int(http.get("/whoami", headers=tenant_header("acme")).status_code)

        assert status() == 200  # now cached for ten minutes
        env = {
            **cli_world.env,
            "FASTAPI_TENANCY_APP": "cli_app:make_tenancy_with_changes",
            "CLI_TEST_CHANGES": where,
            "CLI_TEST_CHANNEL": channel,
        }
        done = run_cli("tenants", "suspend", "acme", env=env)
        assert (done.status, done.out) == (0, "suspended tenant acme\n"), done
        assert eventually(lambda: status() == 403)
        r = http.get("/whoami", headers=tenant_header("acme"))
        assert r.json()["code"] == "tenant_inactive", r.text
        assert http.get("/whoami", headers=tenant_header("globex")).status_code == 200


def test_a_suspension_over_redis_reaches_the_running_app_at_once(cli_world: CliWorld) -> None:
    suspend_from_another_process(cli_world, REDIS_URL)


@pytest.mark.backends("postgres")
def test_a_suspension_over_postgres_notify_reaches_the_running_app_at_once(
    cli_world: CliWorld,
) -> None:
    suspend_from_another_process(cli_world, "postgres")
