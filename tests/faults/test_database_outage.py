"""The database goes away while requests run, and comes back.

Every request answers ``503 database_unavailable`` in JSON with ``Retry-After``, each failure
is logged once with its tenant, a write cut off mid-transaction is not in the database and a
write answered ``201`` is, and the app serves again within seconds of the network's return.
"""

from __future__ import annotations

import logging

import anyio
import pytest
from fastapi import FastAPI

from .support import (
    ANSWER_WITHIN,
    DATABASES,
    RECOVERY_WITHIN,
    STATEMENT_TIMEOUT,
    FaultyDatabase,
    Gate,
    Timed,
    assert_unavailable,
    build_app,
    build_async_app,
    client,
    failures,
    logged,
    served_again,
    timed,
)

pytestmark = [pytest.mark.anyio, DATABASES]

IN_FLIGHT = 3  # writes waiting mid-transaction when the network goes
ARRIVING = 3  # requests that arrive during the outage


async def outage(
    app: FastAPI, faulty: FaultyDatabase, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes wait mid-transaction, the network goes, more requests arrive, the network
    comes back: what every request is answered, logged and written."""
    caplog.set_level(logging.ERROR, logger="fastapi_tenancy.errors")
    async with client(app) as http:
        before = await http.post("/notes", params={"body": "before"})
        assert before.status_code == 201, before.text

        answers: list[Timed] = []

        async def ask(method: str, url: str, body: str | None = None) -> None:
            params = None if body is None else {"body": body}
            answers.append(await timed(http.request(method, url, params=params)))

        with faulty.proxy.watchdog(ANSWER_WITHIN + 2):
            async with anyio.create_task_group() as tasks:
                for i in range(IN_FLIGHT):
                    tasks.start_soon(ask, "POST", "/notes/held", f"cut-off-{i}")
                await gate.arrivals(IN_FLIGHT)  # flushed, not committed
                caplog.clear()
                faulty.proxy.drop()
                for _ in range(ARRIVING):
                    tasks.start_soon(ask, "GET", "/notes")
                gate.open()

        assert len(answers) == IN_FLIGHT + ARRIVING
        for answer in answers:
            assert_unavailable(answer)
        logged_failures = failures(caplog)
        assert len(logged_failures) == IN_FLIGHT + ARRIVING, "one record per failed request"
        for record in logged_failures:
            assert logged(record, "tenancy_code") == "database_unavailable"
            assert logged(record, "tenancy_tenant") == "acme"
            assert record.exc_info is not None

        faulty.proxy.pass_through()
        again = await served_again(http, "/notes")
        assert again.response.status_code == 200, again.response.text
        assert again.seconds <= RECOVERY_WITHIN
        assert again.response.json() == ["before"]
        after = await http.post("/notes", params={"body": "after"})
        assert after.status_code == 201, after.text

    assert faulty.bodies() == ["after", "before"], "exactly the writes answered 201"


async def test_an_outage_answers_503_to_every_request_and_the_app_serves_again_when_it_ends(
    faulty: FaultyDatabase, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    await outage(build_app(faulty, gate), faulty, gate, caplog)


async def test_an_outage_answers_503_on_an_async_engine_too(
    faulty: FaultyDatabase, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncpg and aiomysql, through ``AsyncTenantSession``."""
    engine = faulty.async_engine()
    try:
        await outage(build_async_app(faulty, engine, gate), faulty, gate, caplog)
    finally:
        await engine.dispose()


async def test_a_reset_of_every_connection_costs_no_request(
    faulty: FaultyDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A failover: every open connection is reset at once and the database answers new ones.
    The pool's pre-ping finds the dead connections before a request uses them."""
    caplog.set_level(logging.ERROR, logger="fastapi_tenancy.errors")
    app = build_app(faulty)
    faulty.warm(3)
    opened = faulty.proxy.accepted
    faulty.proxy.reset()
    async with client(app) as http:
        written = await http.post("/notes", params={"body": "after-reset"})
        listed = await http.get("/notes")

    assert faulty.proxy.accepted > opened, "the pool replaced the connections that were reset"
    assert written.status_code == 201, written.text
    assert listed.json() == ["after-reset"]
    assert failures(caplog) == []


async def test_a_statement_slower_than_the_statement_timeout_is_503_and_the_app_still_serves(
    faulty: FaultyDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fastapi_tenancy.errors")
    app = build_app(faulty)
    async with client(app) as http:
        with faulty.proxy.watchdog(ANSWER_WITHIN + 2):
            slow = await timed(http.get("/sleep", params={"seconds": 3}))
        listed = await http.get("/notes")

    assert_unavailable(slow, within=STATEMENT_TIMEOUT + 1.5)
    assert listed.status_code == 200, listed.text
    (record,) = failures(caplog)
    assert logged(record, "tenancy_code") == "database_unavailable"
    assert logged(record, "tenancy_tenant") == "acme"
