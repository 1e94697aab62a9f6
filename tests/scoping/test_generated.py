"""Generated statements, checked against an oracle: acme's session runs them scoped, or refuses.

A seeded random grammar (statement_grammar.py) builds thousands of SQLAlchemy statements over
Project, Task and Plan. Each runs twice:

- in a tenant session for acme (``tenancy.make_session(SessionScope("acme"))``) on the shared
  database, which holds acme's and globex's look-alike rows (same names, tasks planted across
  tenants by an unscoped session) and a few shared Plans;
- as plain SQLAlchemy (an ordinary ``Session``, no kit) on the *oracle*: a private database with
  only acme's rows (same ids) and the Plans, so that there, unscoped SQL is acme-scoped SQL.

A statement refused with a ``TenancyError`` must have changed nothing (its transaction is
committed, and the database compared with the seed). One that ran must give the oracle's answer:
the same rows for a read (in order when the statement orders them fully); for a write the same
returned rows or row count, the same acme rows and Plans afterwards (ids the databases generate
for new rows left out), and globex's rows untouched. A statement that fails on both databases is
invalid and skipped. One that fails only in the tenant session fails the test: the shared
database saw other rows, or the kit broke the statement with an error that is no TenancyError;
unless the oracle's result would break the shared database's keys over globex's rows (a primary
or foreign key that only exists there), which is a conflict, counted apart.

The same holds in the *owner world* (``test_generated_statements_keep_to_the_owner``): the
grammar generates over OwnedProject and OwnedTask, twins of Project and Task whose rows are
private to their owner (``owner_field()``), and the session is acme's for alice
(``SessionScope("acme", row_values=(("owner", "alice"),))``). The shared database holds acme's
alice's, acme's bob's and globex's alice's look-alike rows, with tasks planted across owners and
tenants; the oracle holds only acme's alice's, and stamps alice as it stamps acme. There, bob's
and globex's rows must stay untouched, and an ``owner_id`` a statement compares or writes is
alice, bob or ``Alice``.

In the *policy world* (``test_generated_statements_keep_to_the_policies``) the twins
PolicyProject and PolicyTask carry an ``archived`` flag and the row policy ``live``
(``archived = false``); the session is acme's, lifting nothing. The shared database holds
acme's live rows, acme's archived and globex's look-alikes (tasks planted across both); the
oracle holds only acme's live rows, and stamps acme on new rows (``archived`` defaults to false
on both sides). The grammar tests ``archived`` (``NOT archived``, ``archived IS true``...) and
writes it with literals, SQL constants and expressions of the row: a write that would leave an
archived row is refused by the kit (``RowPolicyViolation``, or ``UnscopedStatement`` for a value
it cannot check), which changed nothing; acme's archived rows and globex's must stay untouched.

In the *family world* (``test_generated_statements_read_the_family``) holding is the parent of
acme and of its sibling initech, and globex stands apart; FamilyProject is read down the family
(``__tenant_reads__ = "ancestors"``), FamilyTask by its tenant only, and the session is
``SessionScope("acme", family=TenantFamily(ancestors=("holding",)))``. Reads are judged by an
oracle holding acme's and holding's projects and acme's tasks. Writes, FamilyProject's too, are
judged by a second oracle holding acme's rows only: the kit writes only its own tenant's rows,
and the subqueries of an UPDATE, DELETE or INSERT read only its own rows (the wall proves them
by ``tenant_id = :tenant``), so that a write in acme's session is acme's write on acme's rows.
holding's, initech's and globex's rows must stay untouched.

Writes are committed, compared through connections of their own, and the seed is restored when
a write changed it; reads are rolled back. The counts go to the terminal summary and to the
test's ``user_properties``; at least 30% of the statements must run (neither refused nor
invalid), so that refusing everything, or generating nonsense, cannot pass.

``TENANCY_GENERATED_STATEMENTS`` (default 2000; the owner, policy and family worlds'
``TENANCY_GENERATED_OWNER_STATEMENTS``, ``TENANCY_GENERATED_POLICY_STATEMENTS`` and
``TENANCY_GENERATED_FAMILY_STATEMENTS``, default 1000 each) and ``TENANCY_GENERATED_SEED``
(default 1) set the run; ``TENANCY_GENERATED_ONLY=12,345`` reruns only those statement indexes
(in every world; select one with ``-k``), and ``TENANCY_GENERATED_DETAILS`` (default 5) is how many
failures the message shows in full.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytest
from models import ScopingModel, seed_rows
from scoping_places import (
    PLACED,
    place_connection,
    place_of_row,
    places_of,
    table_name,
    unchecked_foreign_keys,
)
from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    Table,
    UniqueConstraint,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from statement_grammar import (
    FAMILY_SCHEMA,
    OWNER_SCHEMA,
    POLICY_SCHEMA,
    TENANT_SCHEMA,
    Capabilities,
    Generated,
    Schema,
    generate,
)

from fastapi_tenancy import (
    Access,
    AlreadyExists,
    SessionScope,
    Tenancy,
    TenancyError,
    TenantFamily,
)
from fastapi_tenancy.isolation import TENANT_SCHEMA as PLACEHOLDER

DEFAULT_STATEMENTS = 2000
DEFAULT_OWNER_STATEMENTS = 1000
DEFAULT_POLICY_STATEMENTS = 1000
DEFAULT_FAMILY_STATEMENTS = 1000
DEFAULT_SEED = 1
MIN_RAN_SHARE = 0.30
DETAILED_FAILURES = int(os.environ.get("TENANCY_GENERATED_DETAILS", 5))

# --------------------------------------------------------------------------------------------
# The seed: look-alike rows in both tenants, ids interleaved

PROJECTS = [  # id, tenant, name
    (1, "acme", "alpha"),
    (2, "globex", "alpha"),
    (3, "acme", "beta"),
    (4, "globex", "beta"),
    (5, "globex", "gamma"),
    (6, "acme", "gamma"),
    (7, "acme", "delta"),  # referenced by a globex task only
    (8, "globex", "omega"),
    (9, "acme", "empty"),
]
TASKS = [  # id, tenant, name, done, project_id
    (1, "acme", "design", False, 1),
    (2, "globex", "design", False, 2),
    (3, "acme", "build", True, 1),
    (4, "globex", "build", True, 2),
    (5, "acme", "design", False, 3),
    (6, "globex", "design", False, 4),
    (7, "globex", "planted", False, 3),  # globex's task on acme's beta
    (8, "acme", "leak-probe", False, 2),  # acme's task on globex's alpha
    (9, "acme", "ship", True, 6),
    (10, "globex", "ship", True, 5),
    (11, "globex", "planted", True, 7),  # globex's task on acme's delta
    (12, "acme", "orphan", False, None),
    (13, "globex", "orphan", False, None),
    (14, "globex", "secret", True, 8),
    (15, "acme", "review", False, 6),
]
PLANS = [(1, "free"), (2, "pro"), (3, "alpha"), (4, "design")]

# The owner world: acme's alice is the session; acme's bob and globex's alice look alike.
OWNED_PROJECTS = [  # id, tenant, owner, name
    (1, "acme", "alice", "alpha"),
    (2, "acme", "bob", "alpha"),
    (3, "globex", "alice", "alpha"),
    (4, "acme", "alice", "beta"),
    (5, "acme", "bob", "beta"),
    (6, "globex", "alice", "beta"),
    (7, "acme", "bob", "gamma"),
    (8, "acme", "alice", "gamma"),
    (9, "acme", "alice", "delta"),  # referenced by bob's and globex's alice's tasks only
    (10, "globex", "alice", "omega"),
    (11, "acme", "bob", "omega"),
    (12, "acme", "alice", "empty"),
]
OWNED_TASKS = [  # id, tenant, owner, name, done, project_id
    (1, "acme", "alice", "design", False, 1),
    (2, "acme", "bob", "design", False, 2),
    (3, "globex", "alice", "design", False, 3),
    (4, "acme", "alice", "build", True, 1),
    (5, "acme", "bob", "build", True, 2),
    (6, "globex", "alice", "build", True, 3),
    (7, "acme", "bob", "planted", False, 4),  # bob's task on alice's beta
    (8, "globex", "alice", "planted", False, 4),  # globex's alice's task on acme's alice's beta
    (9, "acme", "alice", "leak-probe", False, 2),  # alice's task on bob's alpha
    (10, "acme", "alice", "leak-probe", False, 3),  # alice's task on globex's alice's alpha
    (11, "acme", "alice", "ship", True, 8),
    (12, "acme", "bob", "ship", True, 7),
    (13, "globex", "alice", "ship", True, 6),
    (14, "acme", "bob", "planted", True, 9),  # bob's task on alice's delta
    (15, "globex", "alice", "planted", True, 9),  # globex's alice's task on acme's alice's delta
    (16, "acme", "alice", "orphan", False, None),
    (17, "acme", "bob", "orphan", False, None),
    (18, "globex", "alice", "orphan", False, None),
    (19, "acme", "bob", "secret", True, 11),
    (20, "globex", "alice", "secret", True, 10),
    (21, "acme", "alice", "review", False, 8),
]

# The policy world: acme's live rows are the session's; acme's archived and globex's look alike.
POLICY_PROJECTS = [  # id, tenant, archived, name
    (1, "acme", False, "alpha"),
    (2, "acme", True, "alpha"),
    (3, "globex", False, "alpha"),
    (4, "acme", False, "beta"),
    (5, "globex", True, "beta"),
    (6, "acme", True, "beta"),
    (7, "acme", False, "gamma"),
    (8, "globex", False, "gamma"),
    (9, "acme", False, "delta"),  # referenced by archived and globex's tasks only
    (10, "acme", True, "omega"),
    (11, "globex", False, "omega"),
    (12, "acme", False, "empty"),
]
POLICY_TASKS = [  # id, tenant, archived, name, done, project_id
    (1, "acme", False, "design", False, 1),
    (2, "acme", True, "design", False, 1),  # an archived task on a live project
    (3, "globex", False, "design", False, 3),
    (4, "acme", False, "build", True, 1),
    (5, "acme", True, "build", True, 2),
    (6, "globex", True, "build", True, 3),
    (7, "acme", True, "planted", False, 4),
    (8, "globex", False, "planted", False, 4),  # globex's task on acme's live beta
    (9, "acme", False, "leak-probe", False, 2),  # a live task on an archived project
    (10, "acme", False, "leak-probe", False, 3),  # acme's task on globex's alpha
    (11, "acme", False, "ship", True, 7),
    (12, "acme", True, "ship", True, 7),
    (13, "globex", False, "ship", True, 8),
    (14, "acme", True, "planted", True, 9),
    (15, "globex", False, "planted", True, 9),
    (16, "acme", False, "orphan", False, None),
    (17, "acme", True, "orphan", False, None),
    (18, "globex", False, "orphan", False, None),
    (19, "acme", True, "secret", True, 10),
    (20, "globex", True, "secret", True, 11),
    (21, "acme", False, "review", False, 7),
]

# The family world: holding is the parent of acme and of its sibling initech; globex is apart.
# The projects acme reads (its own and holding's) have names of their own; the sibling's and
# globex's look like them.
FAMILY_PROJECTS = [  # id, tenant, name
    (1, "acme", "alpha"),
    (2, "initech", "alpha"),
    (3, "holding", "delta"),
    (4, "globex", "alpha"),
    (5, "acme", "beta"),
    (6, "initech", "delta"),
    (7, "holding", "omega"),
    (8, "globex", "omega"),
    (9, "acme", "gamma"),
    (10, "initech", "omega"),
    (11, "globex", "gamma"),
    (12, "acme", "empty"),
]
FAMILY_TASKS = [  # id, tenant, name, done, project_id
    (1, "acme", "design", False, 1),
    (2, "initech", "design", False, 2),
    (3, "acme", "build", True, 3),  # acme's task on holding's delta
    (4, "holding", "build", True, 3),  # holding's own task: acme reads holding's projects only
    (5, "globex", "design", False, 4),
    (6, "acme", "ship", True, 5),
    (7, "initech", "planted", False, 5),  # the sibling's task on acme's beta
    (8, "holding", "planted", False, 1),  # the parent's task on acme's alpha
    (9, "acme", "leak-probe", False, 2),  # acme's task on the sibling's alpha
    (10, "acme", "leak-probe", False, 8),  # acme's task on globex's omega
    (11, "globex", "planted", True, 7),  # globex's task on holding's omega
    (12, "acme", "review", False, 7),
    (13, "acme", "orphan", False, None),
    (14, "holding", "orphan", False, None),
    (15, "initech", "secret", True, 6),
    (16, "globex", "secret", True, 11),
    (17, "acme", "design", False, 9),
]

INSERT_ORDER = ("plan", "project", "task")  # parents first; delete in reverse
Rows = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class World:
    """What one run generates over: its models, its seed, and the session's scope.

    ``mine`` is the session's value of each scoping column (the tenant, the owner in the owner
    world, ``archived`` false in the policy world): the oracle holds the seed rows with these
    values, stamps them on new rows (those of the scoping columns: a policy's are the kit's to
    refuse), and the shared database's other rows (``others``: each other combination of the
    values the seed uses) must stay as seeded. ``family`` names the tenants whose projects the
    session reads beside its own (the family world): reads are judged by an oracle holding
    those too, writes by one holding the session's rows only.
    """

    name: str
    schema: Schema
    rows: Rows  # the whole seed, by table
    mine: dict[str, Any]
    scope: SessionScope
    default_statements: int
    statements_variable: str
    family: tuple[str, ...] = ()

    def models(self) -> dict[str, Any]:
        """The models by table, in INSERT_ORDER."""
        schema = self.schema
        return {"plan": schema.plan, "project": schema.project, "task": schema.task}

    @cached_property
    def tables(self) -> dict[str, Table]:
        return {name: model.__table__ for name, model in self.models().items()}

    @cached_property
    def stamps(self) -> dict[str, Any]:
        """The values the session stamps on new rows: ``mine`` but a row policy's."""
        return {c: v for c, v in self.mine.items() if c not in self.schema.policy_columns}

    def is_mine(self, row: dict[str, Any]) -> bool:
        return all(row.get(column) == value for column, value in self.mine.items())

    @cached_property
    def other_scopes(self) -> frozenset[tuple[Any, ...]]:
        return frozenset(
            tuple(row[column] for column in self.mine)
            for name in ("project", "task")
            for row in self.rows[name]
            if not self.is_mine(row)
        )

    def is_other(self, row: dict[str, Any]) -> bool:
        """A row of another scope the seed has (globex's; acme's bob's)."""
        return tuple(row.get(column) for column in self.mine) in self.other_scopes

    def seed_rows(self, *, mine_only: bool) -> Rows:
        """The seed's rows by table; ``mine_only`` keeps the session's rows (Plans always)."""
        rows = {name: list(table_rows) for name, table_rows in self.rows.items()}
        if mine_only:
            for name in ("project", "task"):
                rows[name] = [r for r in rows[name] if self.is_mine(r)]
        return rows

    @cached_property
    def read_seed(self) -> Rows:
        """The rows the session reads: its own, and its family's projects."""
        rows = self.seed_rows(mine_only=True)
        rows["project"] = [
            r for r in self.rows["project"] if self.is_mine(r) or r["tenant_id"] in self.family
        ]
        return rows

    @cached_property
    def seed_ids(self) -> dict[str, set[int]]:
        return {name: {row["id"] for row in rows} for name, rows in self.rows.items()}

    @cached_property
    def others_seed(self) -> Rows:
        return {
            name: [row for row in self.rows[name] if not self.is_mine(row)]
            for name in ("project", "task")
        }


TENANT_WORLD = World(
    name="tenant",
    schema=TENANT_SCHEMA,
    rows={
        "plan": [{"id": i, "name": n} for i, n in PLANS],
        "project": [{"id": i, "tenant_id": t, "name": n} for i, t, n in PROJECTS],
        "task": [
            {"id": i, "tenant_id": t, "name": n, "done": d, "project_id": p}
            for i, t, n, d, p in TASKS
        ],
    },
    mine={"tenant_id": "acme"},
    scope=SessionScope("acme"),
    default_statements=DEFAULT_STATEMENTS,
    statements_variable="TENANCY_GENERATED_STATEMENTS",
)
OWNER_WORLD = World(
    name="owner",
    schema=OWNER_SCHEMA,
    rows={
        "plan": [{"id": i, "name": n} for i, n in PLANS],
        "project": [
            {"id": i, "tenant_id": t, "owner_id": o, "name": n} for i, t, o, n in OWNED_PROJECTS
        ],
        "task": [
            {"id": i, "tenant_id": t, "owner_id": o, "name": n, "done": d, "project_id": p}
            for i, t, o, n, d, p in OWNED_TASKS
        ],
    },
    mine={"tenant_id": "acme", "owner_id": "alice"},
    scope=SessionScope("acme", row_values=(("owner", "alice"),)),
    default_statements=DEFAULT_OWNER_STATEMENTS,
    statements_variable="TENANCY_GENERATED_OWNER_STATEMENTS",
)
POLICY_WORLD = World(
    name="policy",
    schema=POLICY_SCHEMA,
    rows={
        "plan": [{"id": i, "name": n} for i, n in PLANS],
        "project": [
            {"id": i, "tenant_id": t, "archived": a, "name": n} for i, t, a, n in POLICY_PROJECTS
        ],
        "task": [
            {"id": i, "tenant_id": t, "archived": a, "name": n, "done": d, "project_id": p}
            for i, t, a, n, d, p in POLICY_TASKS
        ],
    },
    mine={"tenant_id": "acme", "archived": False},
    scope=SessionScope("acme"),
    default_statements=DEFAULT_POLICY_STATEMENTS,
    statements_variable="TENANCY_GENERATED_POLICY_STATEMENTS",
)
FAMILY_WORLD = World(
    name="family",
    schema=FAMILY_SCHEMA,
    rows={
        "plan": [{"id": i, "name": n} for i, n in PLANS],
        "project": [{"id": i, "tenant_id": t, "name": n} for i, t, n in FAMILY_PROJECTS],
        "task": [
            {"id": i, "tenant_id": t, "name": n, "done": d, "project_id": p}
            for i, t, n, d, p in FAMILY_TASKS
        ],
    },
    mine={"tenant_id": "acme"},
    scope=SessionScope("acme", family=TenantFamily(ancestors=("holding",))),
    default_statements=DEFAULT_FAMILY_STATEMENTS,
    statements_variable="TENANCY_GENERATED_FAMILY_STATEMENTS",
    family=("holding",),
)


# --------------------------------------------------------------------------------------------
# The two databases


def seed_shared(tenancy: Tenancy, world: World) -> None:
    """The shared database's rows, written by an unscoped session (cross-tenant links too);
    each in its tenant's place, when this run places tenants apart."""
    models = world.models()
    if PLACED:
        rows = [models[name](**row) for name in INSERT_ORDER for row in world.rows[name]]
        seed_rows(tenancy, *rows, plant=True)
        return
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        for name in INSERT_ORDER:
            for row in world.rows[name]:
                session.add(models[name](**row))
                session.flush()  # one row at a time: the ids stay interleaved as listed
        session.commit()


def oracle_metadata(world: World) -> MetaData:
    """The tables again, without foreign keys (acme's rows point at globex's projects), and
    with ``tenant_id`` set to acme (and, in the owner world, ``owner_id`` to alice) when an
    insert leaves it out or sends NULL, as the tenant session stamps it (on the servers,
    ``stamp_mine`` turns a NULL into the session's value)."""
    metadata = MetaData()
    for table in world.tables.values():
        columns = [
            Column(
                c.name,
                c.type,
                primary_key=c.primary_key,
                nullable=c.nullable,
                server_default=world.stamps.get(c.name),
                # SQLite: a NULL into a NOT NULL column takes the default instead
                sqlite_on_conflict_not_null="REPLACE" if c.name in world.stamps else None,
            )
            for c in table.columns
        ]
        uniques = [
            UniqueConstraint(*(c.name for c in constraint.columns))
            for constraint in table.constraints
            if isinstance(constraint, UniqueConstraint)
        ]
        Table(table.name, metadata, *columns, *uniques)
    return metadata


def prepare(engine: Engine, backend: str, world: World) -> None:
    """MariaDB: compare strings exactly, as SQLite and PostgreSQL do. Under a case-insensitive
    collation, DISTINCT, GROUP BY and ORDER BY ties between 'alpha' and 'ALPHA' would pick
    either, and the two databases could pick differently."""
    with engine.begin() as conn:
        if backend == "mariadb":
            for table in world.tables.values():
                conn.exec_driver_sql(
                    f"ALTER TABLE {table.name} CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )


def prepare_places(tenancy: Tenancy, backend: str, world: World) -> None:
    """``prepare`` on the shared tables and on the tables of each tenant's own place."""
    prepare(tenancy.engine, backend, world)  # type: ignore[arg-type]
    if backend != "mariadb" or not PLACED:
        return
    for table in world.tables.values():
        for place in places_of(table)[1:]:
            with place_connection(tenancy, place) as conn:
                name = table_name(conn, tenancy.placement_of(place), table)
                conn.exec_driver_sql(
                    f"ALTER TABLE {name} CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )


def stamp_mine(engine: Engine, backend: str, world: World) -> None:
    """PostgreSQL and MariaDB: an INSERT into a tenant table that sends NULL for tenant_id sends
    acme instead, and alice for owner_id in the owner world. (SQLite does it in the column;
    triggers would do it on the servers, but a MariaDB table with a trigger stores '' where a
    self-referencing UPDATE sets NULL into a NOT NULL column, instead of refusing it.)"""
    if backend == "sqlite":
        return
    # an INSERT's value, or a VALUES row's
    param = re.compile(f"({'|'.join(map(re.escape, world.stamps))})(_m\\d+)?")

    def stamp(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> tuple[str, Any]:
        table = getattr(getattr(context, "compiled", None), "statement", None)
        table = getattr(table, "table", None)
        if not getattr(context, "isinsert", False) or "tenant_id" not in getattr(table, "c", {}):
            return statement, parameters

        def fix(row: dict[str, Any]) -> dict[str, Any]:
            fixed = dict(row)
            for key, value in row.items():
                match = param.fullmatch(key)
                if value is None and match is not None:
                    fixed[key] = world.stamps[match.group(1)]
            return fixed

        if isinstance(parameters, dict):
            return statement, fix(parameters)
        if many and all(isinstance(row, dict) for row in parameters):
            return statement, [fix(row) for row in parameters]
        return statement, parameters

    event.listen(engine, "before_cursor_execute", stamp, retval=True)


def sync_sequences(engine: Engine, backend: str, world: World) -> None:
    if backend != "postgres":
        return  # SQLite and MariaDB continue after the highest id on their own
    with engine.begin() as conn:
        for table in world.tables.values():
            highest = select(func.max(table.c.id)).scalar_subquery()
            sequence = func.pg_get_serial_sequence(table.name, "id")
            conn.execute(select(func.setval(sequence, highest)))


Readers = dict[Any, Connection]
"""Plain connections by place: ``None``, the shared tables (the only one of an oracle), and
each placed tenant's own place when this run places tenants apart."""


def snapshot(readers: Readers, world: World) -> Rows:
    """Every row of the three tables, read by plain connections in transactions of their own,
    from every place the table has."""
    try:
        found: Rows = {}
        for name, table in world.tables.items():
            rows = [
                dict(row._mapping)
                for place in places_of(table)
                if place in readers
                for row in readers[place].execute(select(*table.columns))
            ]
            found[name] = sorted(rows, key=lambda row: row["id"])
        return found
    finally:
        for conn in readers.values():
            conn.rollback()


def _place(readers: Readers, table: Table, row: dict[str, Any]) -> Any:
    """The place among ``readers`` of a row of ``table`` (an oracle has one: ``None``)."""
    place = place_of_row(table, row)
    return place if place in readers else None


def restore(readers: Readers, rows: Rows, world: World) -> None:
    tables = world.tables
    for place, conn in readers.items():
        if len(readers) == 1:
            transaction: Any = conn.begin()
        else:  # places apart: a task of acme's may point at a project of globex's place
            transaction = unchecked_foreign_keys(conn)
        with transaction:
            for name in reversed(INSERT_ORDER):
                if place in places_of(tables[name]):
                    conn.execute(delete(tables[name]))
            for name in INSERT_ORDER:
                own = [row for row in rows[name] if _place(readers, tables[name], row) == place]
                if own:
                    conn.execute(insert(tables[name]), own)


# --------------------------------------------------------------------------------------------
# Running one statement on one side


@dataclass
class Outcome:
    value: Any = None
    after: Rows | None = None
    refused: TenancyError | None = None
    error: BaseException | None = None
    sent: list[tuple[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        if self.refused is not None:
            late = "" if self.error is None else f" (then {type(self.error).__name__})"
            return f"refused: {type(self.refused).__name__}: {self.refused}{late}"
        if self.error is not None:
            return f"error: {type(self.error).__name__}: {_first_line(self.error)}"
        return repr(self.value)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


_COLUMN_KEYS: dict[type, list[str]] = {}


def plain(value: Any) -> Any:
    """A row element as plain values: an ORM entity becomes its class name and columns."""
    if isinstance(value, ScopingModel):
        cls = type(value)
        keys = _COLUMN_KEYS.get(cls)
        if keys is None:
            keys = _COLUMN_KEYS[cls] = [
                prop.key
                for prop in inspect(cls).column_attrs
                if isinstance(prop.expression, Column)
            ]
        loaded = inspect(value).dict
        return (cls.__name__, *(loaded.get(key) for key in keys))
    return value


def rows_of(result: Any, ordered: bool) -> list[tuple[Any, ...]]:
    rows = [tuple(plain(v) for v in row) for row in result]
    return rows if ordered else sorted(rows, key=repr)


class Side:
    """One database and the session that runs the statements on it."""

    def __init__(
        self,
        engine: Engine,
        make_session: Callable[[], Session],
        world: World,
        seed: Rows,
        *,
        kit: bool,
        readers: Readers | None = None,
    ) -> None:
        self.engine = engine
        self.world = world
        self.session = make_session()
        self.readers = readers if readers is not None else {None: engine.connect()}
        self.seed = seed
        self.kit = kit
        self.sent: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if all(conn is not reader for reader in self.readers.values()):
            self.sent.append((statement, parameters))

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)
        self.session.close()
        for reader in self.readers.values():
            reader.close()

    def run(self, generated: Generated) -> Outcome:
        self.sent = []
        outcome = Outcome()
        session = self.session
        try:
            result = session.execute(generated.statement)
            if generated.write and not generated.returning:
                outcome.value = ("rowcount", getattr(result, "rowcount", None))
            else:
                outcome.value = rows_of(result, generated.ordered)
            if generated.write:
                session.commit()
        except TenancyError as error:
            if not self.kit or isinstance(error, AlreadyExists):  # a database's answer
                outcome.error = error
            else:
                outcome.refused = error
                if generated.write:
                    try:
                        session.commit()  # keep whatever it sent before refusing, and look
                    except Exception as late:
                        outcome.error = late
        except Exception as error:
            outcome.error = error
        finally:
            outcome.sent = self.sent
            session.rollback()
            session.expunge_all()
        if generated.write and outcome.error is None:
            outcome.after = snapshot(self.readers, self.world)
            if outcome.after != self.seed:
                restore(self.readers, self.seed, self.world)
        return outcome


# --------------------------------------------------------------------------------------------
# Comparing


def comparable(
    rows: list[dict[str, Any]], seed_ids: set[int], explicit_ids: frozenset[int]
) -> list[tuple[Any, ...]]:
    """Rows as sorted tuples; ids the database generated for new rows are left out."""
    out = []
    for row in rows:
        row = dict(row)
        if row["id"] not in seed_ids and row["id"] not in explicit_ids:
            row["id"] = None
        out.append(tuple(sorted(row.items())))
    return sorted(out, key=repr)


def state_difference(
    world: World, kit_after: Rows, oracle_after: Rows, explicit_ids: frozenset[int]
) -> str | None:
    """What differs between the shared database and the oracle after a write, or None."""
    seeded = world.others_seed
    for name in ("project", "task"):
        others = [row for row in kit_after[name] if world.is_other(row)]
        if others != seeded[name]:
            return f"other scopes' {name} rows changed: {others} (seeded: {seeded[name]})"
    seed_ids = world.seed_ids
    for name in INSERT_ORDER:
        mine = [row for row in kit_after[name] if not world.is_other(row)]
        kit_rows = comparable(mine, seed_ids[name], explicit_ids)
        oracle_rows = comparable(oracle_after[name], seed_ids[name], explicit_ids)
        if kit_rows != oracle_rows:
            only_kit = [r for r in kit_rows if r not in oracle_rows]
            only_oracle = [r for r in oracle_rows if r not in kit_rows]
            return (
                f"{name} rows differ: only in the shared database {only_kit}, "
                f"only in the oracle {only_oracle}"
            )
    return None


def result_difference(mine: Any, theirs: Any) -> str:
    """Name how the tenant session's result differs from the oracle's."""
    if isinstance(mine, list) and isinstance(theirs, list):
        extra, missing = Counter(map(repr, mine)), Counter(map(repr, theirs))
        extra, missing = extra - missing, missing - extra
        if not extra and not missing:
            return "results differ in order"
        if not missing:
            what = "extra rows in the tenant session"
        elif not extra:
            what = "rows missing in the tenant session"
        else:
            what = "different rows"
        return (
            f"results differ, {what}: {sum(extra.values())} rows only in the tenant session, "
            f"{sum(missing.values())} only on the oracle"
        )
    return "results differ"


def shared_constraints_reject(world: World, oracle_after: Rows) -> bool:
    """Whether the oracle's rows, put beside the other scopes' (globex's; acme's bob's), break a
    primary or foreign key: then the shared database refusing the write is its constraints at
    work, not a leak."""
    seeded = world.others_seed
    other_projects = {row["id"] for row in seeded["project"]}
    other_tasks = {row["id"] for row in seeded["task"]}
    projects = {row["id"] for row in oracle_after["project"]}
    tasks = {row["id"] for row in oracle_after["task"]}
    if projects & other_projects or tasks & other_tasks:
        return True
    every_project = projects | other_projects
    return any(
        row["project_id"] is not None and row["project_id"] not in every_project
        for row in (*oracle_after["task"], *seeded["task"])
    )


@dataclass
class Failure:
    index: int
    generated: Generated
    reason: str
    kit: Outcome
    oracle: Outcome | None

    def report(self, seed: int, engine: Engine, world: World) -> str:
        lines = [
            f"{world.name} world, statement #{self.index} (TENANCY_GENERATED_SEED={seed} "
            f"TENANCY_GENERATED_ONLY={self.index}): {self.reason}",
            f"  shape: {self.generated.shape}",
            "  SQL:",
            *("    " + line for line in compiled(self.generated.statement, engine).splitlines()),
            "  sent by the tenant session:",
            *(f"    {sql} {params!r}" for sql, params in self.kit.sent[:4]),
            f"  tenant session: {self.kit.describe()}",
        ]
        if self.oracle is not None:
            lines.append(f"  oracle:         {self.oracle.describe()}")
        return "\n".join(lines)


def compiled(statement: Any, engine: Engine) -> str:
    try:
        sql = statement.compile(dialect=engine.dialect)
    except Exception as error:
        return f"<does not compile: {type(error).__name__}: {_first_line(error)}>"
    return f"{sql}\nparameters: {sql.params!r}"


def judge(index: int, generated: Generated, kit: Side, oracle: Side, counts: Counter[str]) -> Any:
    """Run one statement on both sides; count it, and return a Failure if it leaked."""
    mine = kit.run(generated)
    if mine.refused is not None:
        counts["refused"] += 1
        if mine.error is not None:
            reason = "refused, and then its transaction failed to commit"
            return Failure(index, generated, reason, mine, None)
        if generated.write and mine.after != kit.seed:
            return Failure(index, generated, "refused, but rows changed", mine, None)
        return None
    theirs = oracle.run(generated)
    if mine.error is not None and theirs.error is not None:
        counts["invalid"] += 1
        return None
    if mine.error is not None:
        if generated.write and theirs.after and shared_constraints_reject(kit.world, theirs.after):
            counts["conflict"] += 1
            return None
        counts["failed"] += 1
        if isinstance(mine.error, DBAPIError):
            reason = "database error only in the tenant session"
        else:
            reason = f"{type(mine.error).__name__} (not a TenancyError) only in the tenant session"
        return Failure(index, generated, reason, mine, theirs)
    counts["ran"] += 1
    if theirs.error is not None:
        counts["failed"] += 1
        return Failure(
            index, generated, "ran in the tenant session, failed on the oracle", mine, theirs
        )
    if mine.value != theirs.value:
        counts["failed"] += 1
        return Failure(index, generated, result_difference(mine.value, theirs.value), mine, theirs)
    if generated.write:
        assert mine.after is not None
        assert theirs.after is not None
        difference = state_difference(kit.world, mine.after, theirs.after, generated.explicit_ids)
        if difference is not None:
            counts["failed"] += 1
            return Failure(index, generated, difference, mine, theirs)
    counts["scoped-equal"] += 1
    return None


# --------------------------------------------------------------------------------------------
# Reporting to the terminal, whatever -r says

_SUMMARY_PLUGIN = "tenancy-generated-statements-summary"


class _Summary:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.section("generated statements", sep="-")
            for line in self.lines:
                terminalreporter.write_line(line)


def summarize(config: pytest.Config, line: str) -> None:
    plugin = config.pluginmanager.get_plugin(_SUMMARY_PLUGIN)
    if plugin is None:
        plugin = _Summary()
        config.pluginmanager.register(plugin, _SUMMARY_PLUGIN)
    plugin.lines.append(line)


@contextmanager
def quiet() -> Iterator[None]:
    """SQLAlchemy warns about some generated shapes (cartesian products, coercions); the
    suite turns warnings into errors, which would make them fail on one side only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------------------------
# The test


def _indexes(count: int) -> list[int]:
    only = os.environ.get("TENANCY_GENERATED_ONLY", "").strip()
    if only:
        return [int(part) for part in only.split(",") if part.strip()]
    return list(range(count))


def test_generated_statements_run_scoped_or_are_refused(
    request: pytest.FixtureRequest,
    backend: str,
    tenancy: Tenancy,
    create_tables: Any,
    make_database: Any,
) -> None:
    """The tenant world: acme's session over Project and Task."""
    check_world(TENANT_WORLD, request, backend, tenancy, create_tables, make_database)


def test_generated_statements_keep_to_the_owner(
    request: pytest.FixtureRequest,
    backend: str,
    tenancy: Tenancy,
    create_tables: Any,
    make_database: Any,
) -> None:
    """The owner world: acme's session for alice over OwnedProject and OwnedTask."""
    check_world(OWNER_WORLD, request, backend, tenancy, create_tables, make_database)


def test_generated_statements_keep_to_the_policies(
    request: pytest.FixtureRequest,
    backend: str,
    tenancy: Tenancy,
    create_tables: Any,
    make_database: Any,
) -> None:
    """The policy world: acme's session over PolicyProject and PolicyTask, live rows only."""
    check_world(POLICY_WORLD, request, backend, tenancy, create_tables, make_database)


def test_generated_statements_read_the_family(
    request: pytest.FixtureRequest,
    backend: str,
    tenancy: Tenancy,
    create_tables: Any,
    make_database: Any,
) -> None:
    """The family world: acme's session reading FamilyProject with holding's rows."""
    check_world(FAMILY_WORLD, request, backend, tenancy, create_tables, make_database)


@contextmanager
def oracle(world: World, backend: str, make_database: Any, seed: Rows) -> Iterator[Side]:
    """A private database of ``backend`` holding ``seed``, and a plain session on it."""
    with make_database(backend) as database:
        engine = database.create_engine()
        if PLACED:  # the world's tables are in the placeholder: the oracle's are plain
            engine.update_execution_options(schema_translate_map={PLACEHOLDER: None})
        try:
            oracle_metadata(world).create_all(engine)
            prepare(engine, backend, world)
            stamp_mine(engine, backend, world)
            with engine.connect() as conn:
                restore({None: conn}, seed, world)
            sync_sequences(engine, backend, world)
            side = Side(engine, lambda: Session(engine), world, seed, kit=False)
            try:
                assert snapshot(side.readers, world) == seed, "the oracle is not the seed"
                yield side
            finally:
                side.close()
        finally:
            engine.dispose()


def check_world(
    world: World,
    request: pytest.FixtureRequest,
    backend: str,
    tenancy: Tenancy,
    create_tables: Any,
    make_database: Any,
) -> None:
    count = int(os.environ.get(world.statements_variable, world.default_statements))
    mine = {row["id"] for row in world.seed_rows(mine_only=True)["project"]}
    assert set(world.schema.own_projects) == mine, "the grammar's own projects are not the seed's"
    assert not set(world.schema.other_projects) & mine, "the grammar's other projects are mine"
    seed = int(os.environ.get("TENANCY_GENERATED_SEED", DEFAULT_SEED))
    shared_engine = tenancy.engine
    assert isinstance(shared_engine, Engine)
    create_tables(shared_engine, *(world.tables[name] for name in INSERT_ORDER))
    prepare_places(tenancy, backend, world)
    seed_shared(tenancy, world)
    sync_sequences(shared_engine, backend, world)
    dialect = shared_engine.dialect
    caps = Capabilities(
        insert_returning=dialect.insert_returning,
        update_returning=dialect.update_returning,
        delete_returning=dialect.delete_returning,
        delete_using=backend != "sqlite",
        full_join=backend != "mariadb",
        self_referencing_writes=backend != "sqlite",
    )

    with ExitStack() as stack:
        writes = stack.enter_context(
            oracle(world, backend, make_database, world.seed_rows(mine_only=True))
        )
        reads = writes
        if world.family:
            reads = stack.enter_context(oracle(world, backend, make_database, world.read_seed))
        readers = None
        if PLACED:
            places = {place for table in world.tables.values() for place in places_of(table)}
            readers = {p: stack.enter_context(place_connection(tenancy, p)) for p in places}
        kit = Side(
            shared_engine,
            lambda: tenancy.make_session(world.scope),
            world,
            world.seed_rows(mine_only=False),
            kit=True,
            readers=readers,
        )
        stack.callback(kit.close)
        assert snapshot(kit.readers, world) == kit.seed, "the shared database is not the seed"
        counts: Counter[str] = Counter()
        failures: list[Failure] = []
        indexes = _indexes(count)
        started = time.perf_counter()
        with quiet():
            for index in indexes:
                try:
                    generated = generate(seed, index, caps, world.schema)
                except Exception as error:
                    message = f"the grammar failed on statement #{index} (seed {seed})"
                    raise AssertionError(message) from error
                judged_by = writes if generated.write else reads
                failure = judge(index, generated, kit, judged_by, counts)
                if failure is not None:
                    failures.append(failure)
        elapsed = time.perf_counter() - started

    total = len(indexes)
    tally = (
        f"{total} statements (seed {seed}) in {elapsed:.1f}s: "
        f"scoped-equal {counts['scoped-equal']}, refused {counts['refused']}, "
        f"invalid {counts['invalid']}, conflict {counts['conflict']}, failed {counts['failed']}"
    )
    request.node.user_properties.append(("generated_statements", dict(counts, total=total)))
    where = backend if world is TENANT_WORLD else f"{backend}, {world.name} world"
    summarize(request.config, f"{where}: {tally}")

    if failures:
        shapes = Counter((f.reason.split(":")[0], f.generated.shape) for f in failures)
        ranked = sorted(shapes.items(), key=lambda item: (item[0][0], -item[1]))
        listing = "\n".join(f"  {n} x {reason} | {shape}" for (reason, shape), n in ranked[:60])
        details = "\n\n".join(
            f.report(seed, shared_engine, world) for f in failures[:DETAILED_FAILURES]
        )
        pytest.fail(
            f"{len(failures)} generated statements were neither scoped nor refused on {where}; "
            f"{tally}\n"
            f"by reason and shape:\n{listing}\n\n{details}",
            pytrace=False,
        )
    if not os.environ.get("TENANCY_GENERATED_ONLY"):
        assert counts["ran"] >= MIN_RAN_SHARE * total, (
            f"only {counts['ran']} of {total} statements ran (not refused, not invalid): the "
            f"grammar is generating too much that cannot run; {tally}"
        )
