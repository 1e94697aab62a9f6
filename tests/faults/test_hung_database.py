"""The database hangs: it accepts connections and bytes and never answers.

A hung database must cost each request a bounded wait, the app's timeouts, and end in
``503`` JSON, never a request that waits for ever; once the database answers again, the app
serves within seconds. Both ways a hang meets an app: with no connection open yet (every
request has to connect), and with connections open in the pool (requests reuse them); and the
same on async engines. The bounds are the client's own: psycopg's and PyMySQL's connect
timeouts, PyMySQL's read timeout, asyncpg's ``command_timeout``; the server's statement
timeout cannot help, as the server never sees the statement.

psycopg (libpq) and aiomysql have no read timeout: a request on a pooled connection to a hung
server waits until TCP gives up. Those two cases are skipped with that reason; the limit and
what to do about it are in docs/operations.md.
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
    warm_async,
)

pytestmark = [pytest.mark.anyio, DATABASES]

CROWD = 3
# A request waiting for a slot of the kit's session limiter may answer this instead.
HUNG_CODES = ("database_unavailable", "database_busy")


async def hang(app: FastAPI, faulty: FaultyDatabase, caplog: pytest.LogCaptureFixture) -> None:
    """The database hangs, a crowd asks, the database comes back."""
    caplog.set_level(logging.ERROR, logger="fastapi_tenancy.errors")
    faulty.proxy.stall()
    answers: list[Timed] = []
    async with client(app) as http:

        async def ask() -> None:
            answers.append(await timed(http.get("/notes")))

        # Past the bound, the watchdog resets the hung connections: the test ends, and fails.
        with faulty.proxy.watchdog(ANSWER_WITHIN + 1):
            async with anyio.create_task_group() as tasks:
                for _ in range(CROWD):
                    tasks.start_soon(ask)

        hung = faulty.proxy.watchdog_fired
        assert not hung, (
            f"requests hung on the database until the watchdog reset their connections after "
            f"{ANSWER_WITHIN + 1:.0f}s; answers (status, seconds): "
            f"{sorted((a.response.status_code, round(a.seconds, 1)) for a in answers)}"
        )
        assert len(answers) == CROWD
        for answer in answers:
            assert_unavailable(answer, codes=HUNG_CODES)
        logged_failures = failures(caplog)
        assert len(logged_failures) == CROWD
        assert {logged(record, "tenancy_tenant") for record in logged_failures} == {"acme"}

        faulty.proxy.pass_through()
        again = await served_again(http, "/notes")
        assert again.response.status_code == 200, again.response.text
        assert again.seconds <= RECOVERY_WITHIN


@pytest.mark.parametrize("open_connections", [0, CROWD], ids=["no-connection-open", "pool-open"])
async def test_a_hung_database_answers_503_within_the_timeouts_and_serves_again_when_it_is_back(
    faulty: FaultyDatabase, open_connections: int, caplog: pytest.LogCaptureFixture
) -> None:
    if open_connections and faulty.backend == "postgres":
        pytest.skip("psycopg has no read timeout on a pooled connection: docs/operations.md")
    app = build_app(faulty)
    faulty.warm(open_connections)
    await hang(app, faulty, caplog)


async def test_a_hung_database_answers_503_within_the_timeouts_on_an_async_engine_too(
    faulty: FaultyDatabase, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncpg (with its ``command_timeout``), connections open in the pool."""
    if faulty.backend == "mariadb":
        pytest.skip("aiomysql has no read timeout on a pooled connection: docs/operations.md")
    engine = faulty.async_engine()
    try:
        app = build_async_app(faulty, engine, gate)
        await warm_async(engine, CROWD)
        await hang(app, faulty, caplog)
    finally:
        await engine.dispose()
