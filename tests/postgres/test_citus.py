"""Citus: the startup check of the setting propagation the tenant needs.

The tests marked ``citus`` run against a real coordinator (``TENANCY_TEST_CITUS_URL``) and are
skipped otherwise, with one line; CI has no Citus. The others run everywhere.
"""

from __future__ import annotations

import pytest

from fastapi_tenancy.postgres.guard import citus_problem


def test_citus_without_local_set_propagation_is_refused_with_the_fix():
    for propagation in ("", "none"):
        problem = citus_problem([("role", "app", None, True), ("citus", propagation, None, True)])
        assert problem is not None
        assert "citus.propagate_set_commands=local" in problem


@pytest.mark.parametrize(
    "rows",
    [
        [("role", "app", None, True)],  # plain PostgreSQL: no citus row
        [("role", "app", None, True), ("citus", "local", None, True)],
    ],
)
def test_plain_postgres_and_citus_with_local_propagation_pass(rows):
    assert citus_problem(rows) is None
