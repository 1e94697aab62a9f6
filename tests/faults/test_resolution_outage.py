"""The database goes away under the middleware's own queries: the tenant lookup and a membership
predicate that reads a table, both run before any route.

Each fails closed with a ``503`` JSON answer (``tenancy_unavailable`` or
``database_unavailable``), never Starlette's plain-text ``500``, is logged on
``fastapi_tenancy.errors`` with its traceback, and the app serves again once the database is
back.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import insert

from fastapi_tenancy import LookupCache, TenantTableLookup

from .support import (
    ANSWER_WITHIN,
    DATABASES,
    RECOVERY_WITHIN,
    FaultyDatabase,
    Member,
    Tenant,
    assert_unavailable,
    build_app,
    client,
    failures,
    logged,
    member_of,
    served_again,
    timed,
)

pytestmark = [pytest.mark.anyio, DATABASES]

RESOLUTION_CODES = ("tenancy_unavailable", "database_unavailable")


def seed(db: FaultyDatabase, table: Any, rows: list[dict[str, Any]]) -> None:
    with db.direct.begin() as conn:
        conn.execute(insert(table), rows)


async def test_a_membership_check_that_cannot_reach_the_database_is_503_json(
    faulty: FaultyDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fastapi_tenancy.errors")
    seed(faulty, Member, [{"tenant": "acme"}])
    app = build_app(faulty, membership=member_of(faulty.engine))
    async with client(app) as http:
        assert (await http.get("/notes")).status_code == 200
        faulty.proxy.drop()
        with faulty.proxy.watchdog(ANSWER_WITHIN + 2):
            refused = await timed(http.get("/notes"))
        faulty.proxy.pass_through()
        again = await served_again(http, "/notes")

    assert_unavailable(refused, codes=RESOLUTION_CODES)
    (record,) = failures(caplog)
    assert logged(record, "tenancy_code") in RESOLUTION_CODES
    assert record.exc_info is not None
    assert again.response.status_code == 200, again.response.text
    assert again.seconds <= RECOVERY_WITHIN


async def test_a_tenant_lookup_that_cannot_reach_the_database_is_503_json(
    faulty: FaultyDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A tenant not in the lookup's cache yet: its lookup meets the outage."""
    caplog.set_level(logging.ERROR, logger="fastapi_tenancy.errors")
    seed(faulty, Tenant, [{"slug": "acme"}, {"slug": "globex"}])
    lookup = TenantTableLookup(Tenant, key="slug", active="active")
    app = build_app(faulty, lookup=lookup, lookup_cache=LookupCache(ttl=60))
    globex = {"X-Tenant-ID": "globex"}
    async with client(app) as http:
        assert (await http.get("/notes")).status_code == 200  # acme is cached
        faulty.proxy.drop()
        with faulty.proxy.watchdog(ANSWER_WITHIN + 2):
            refused = await timed(http.get("/notes", headers=globex))
        faulty.proxy.pass_through()
        again = await served_again(http, "/notes")
        other = await http.get("/notes", headers=globex)

    assert_unavailable(refused, codes=RESOLUTION_CODES)
    (record,) = failures(caplog)
    assert logged(record, "tenancy_code") in RESOLUTION_CODES
    assert record.exc_info is not None
    assert again.response.status_code == 200, again.response.text
    assert again.seconds <= RECOVERY_WITHIN
    assert other.status_code == 200, "the failed lookup was not remembered as a miss"
