"""The connection dies at the worst moments of a write: as its transaction begins, and at its
COMMIT, after the rows were flushed.

No committed write is answered as failed and no failed write is committed: the write cut off
answers ``503`` JSON and is not in the database (read past the proxy, as the owner), and the
next write, answered ``201``, is there.
"""

from __future__ import annotations

import logging

import pytest

from .support import (
    ANSWER_WITHIN,
    DATABASES,
    FaultyDatabase,
    assert_unavailable,
    build_app,
    client,
    failures,
    logged,
    timed,
)

pytestmark = [pytest.mark.anyio, DATABASES]

# What the driver sends for session.commit(): psycopg a simple query "COMMIT", PyMySQL a
# COM_QUERY (command byte 3). Exact enough not to match PyMySQL's "SET AUTOCOMMIT = 0".
COMMIT = {"postgres": b"COMMIT\x00", "mariadb": b"\x03COMMIT"}
# What opens the write's transaction: psycopg's BEGIN (with rls=True the kit's own
# "BEGIN; SELECT set_config(...)"); MariaDB has no BEGIN, its first statement opens it.
BEGIN = {"postgres": b"BEGIN", "mariadb": b"\x03INSERT INTO faults_note"}


# Where the cut meets the write. With row-level security, the kit itself opens the
# transaction and names the tenant in it: the database lost right there must answer as any
# lost database does.
CUTS = {"at-commit": COMMIT, "as-it-begins": BEGIN}


@pytest.mark.parametrize("moment", list(CUTS))
async def test_a_write_whose_connection_is_cut_off_is_503_and_is_not_in_the_database(
    moment: str, faulty: FaultyDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fastapi_tenancy.errors")
    app = build_app(faulty)
    faulty.warm(1)  # the connection's own set-up is done: the cut meets the write
    async with client(app) as http:
        faulty.proxy.cut_on(CUTS[moment][faulty.backend])
        with faulty.proxy.watchdog(ANSWER_WITHIN + 2):
            lost = await timed(http.post("/notes", params={"body": "lost"}))
        assert faulty.proxy.cuts == 1, f"the connection was cut {moment}"
        kept = await http.post("/notes", params={"body": "kept"})

    assert_unavailable(lost)
    assert kept.status_code == 201, kept.text
    assert faulty.bodies() == ["kept"]
    (record,) = failures(caplog)
    assert logged(record, "tenancy_code") == "database_unavailable"
    assert logged(record, "tenancy_tenant") == "acme"
    assert record.exc_info is not None
