"""``DATABASE_URL`` on a Citus coordinator: the example app's tables are distributed at start.

When the database has the ``citus`` extension, :func:`~example_app.seed.init_database`
distributes the tenant tables (projects, tasks, private notes) on ``tenant_id``, colocated,
and makes the shared tables (plans, tenants, users, memberships) reference tables, with
:func:`fastapi_tenancy.postgres.citus.distribute`, before it seeds them. Every tenant route
then runs on one shard: the tables' keys lead with the tenant (``__tenant_first_key__``), and
``tests/example_app/test_example_routing.py`` checks that every statement of a tenant request
names its tenant. With ``EXAMPLE_RLS=1`` too, :func:`~example_app.rls.prepare_rls` gives the
application role ``citus.propagate_set_commands = local``, which the tenant named with ``SET
LOCAL`` needs to reach the workers.
"""

from __future__ import annotations

from sqlalchemy import Engine

from fastapi_tenancy.postgres.citus import citus_installed, distribute

from .models import metadata

__all__ = ["distribute_if_citus"]


def distribute_if_citus(engine: Engine) -> bool:
    """Distribute the app's tables when ``engine`` is a Citus coordinator (nothing when they
    are already); answers whether it is one."""
    if not citus_installed(engine):
        return False
    distribute(engine, metadata)
    return True
