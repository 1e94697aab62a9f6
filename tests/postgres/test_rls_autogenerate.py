"""``alembic revision --autogenerate`` writes the tenant wall's operations, and only those needed.

The cases go through Alembic itself: an ``env.py`` of the test's own (which imports
``fastapi_tenancy.postgres.alembic``, as an application's must), ``command.revision`` with
autogenerate, then ``command.upgrade`` / ``downgrade`` running the written file, as the tables'
owner on the test's schema. The tenant columns are of the run's key type.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import produce_migrations, render_python_code
from alembic.config import Config
from alembic.migration import MigrationContext
from rls_models import KEY_CAST_TYPE
from rls_support import as_owner
from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Integer,
    MetaData,
    String,
    Table,
    false,
    or_,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

import fastapi_tenancy.postgres.alembic  # noqa: F401  (registers the operations and comparator)
from fastapi_tenancy.models import (
    TENANT_READS_INFO_KEY,
    TENANT_SHARED_ROWS_INFO_KEY,
    TENANT_TABLE_INFO_KEY,
)
from fastapi_tenancy.postgres import PolicyCondition, ScopeColumn, TenantTable
from fastapi_tenancy.postgres.alembic import DisableTenantRLSOp, EnableTenantRLSOp
from fastapi_tenancy.postgres.policies import GLOBAL_READ_INFO_KEY, enable_statements
from fastapi_tenancy.row_policies import ROW_POLICIES_INFO_KEY, TablePolicy
from fastapi_tenancy.row_scopes import ROW_SCOPES_INFO_KEY, ROW_SCOPES_PUBLIC_INFO_KEY

pytestmark = pytest.mark.backends("postgres")

TENANT_TYPE: Any = KEY_CAST_TYPE if KEY_CAST_TYPE is not None else String(63)
"""The tenant column's type in this run (a string type needs no cast in the policies)."""
RENDERED_TYPE = "" if KEY_CAST_TYPE is None else f", tenant_type=sa.{KEY_CAST_TYPE!r}"
"""How ``enable_tenant_rls`` renders this run's ``tenant_type`` (nothing for a string)."""
CORE = ["tenancy_delete", "tenancy_insert", "tenancy_select", "tenancy_update"]

SECURED = text(
    "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
    "WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r' "
    "AND relname <> 'alembic_version' ORDER BY relname"
)
POLICIES = text(
    "SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies "
    "WHERE schemaname = current_schema() ORDER BY tablename, policyname"
)

ENV_PY = """
from alembic import context

import fastapi_tenancy.postgres.alembic  # noqa: F401  (operations and autogenerate)

config = context.config
context.configure(
    connection=config.attributes["connection"],
    target_metadata=config.attributes["metadata"],
    include_object=config.attributes.get("include_object"),
)
with context.begin_transaction():
    context.run_migrations()
"""

ALEMBIC_INI = """
[alembic]
script_location = {scripts}
path_separator = os
"""

SCRIPT_MAKO = '''\
"""${message}"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''


class Migrations:
    """An Alembic project in a temporary folder, run on the owner's connection."""

    def __init__(self, owner: Engine, folder: Path) -> None:
        self.owner = owner
        scripts = folder / "migrations"
        (scripts / "versions").mkdir(parents=True)
        (scripts / "env.py").write_text(textwrap.dedent(ENV_PY), encoding="utf-8")
        (scripts / "script.py.mako").write_text(SCRIPT_MAKO, encoding="utf-8")
        ini = folder / "alembic.ini"
        ini.write_text(ALEMBIC_INI.format(scripts=scripts), encoding="utf-8")
        self.config = Config(str(ini))
        self.metadata = MetaData()
        self.count = 0

    def _run(self, action: Any, *args: Any, **kwargs: Any) -> Any:
        with self.owner.begin() as connection:
            self.config.attributes["connection"] = connection
            self.config.attributes["metadata"] = self.metadata
            return action(self.config, *args, **kwargs)

    def revision(self, metadata: MetaData, **attributes: Any) -> str:
        """Autogenerate a revision against ``metadata``; answers the file's text."""
        self.metadata = metadata
        self.config.attributes.update(attributes)
        self.count += 1
        script = self._run(command.revision, message=f"r{self.count}", autogenerate=True)
        return Path(script.path).read_text(encoding="utf-8")

    def upgrade(self, target: str = "head") -> None:
        self._run(command.upgrade, target)

    def downgrade(self, target: str) -> None:
        self._run(command.downgrade, target)


@pytest.fixture
def migrations(owner: Engine, tmp_path: Path) -> Migrations:
    return Migrations(owner, tmp_path)


def section(script: str, name: str) -> str:
    """The body of the script's ``upgrade`` or ``downgrade`` function."""
    body = script.split(f"def {name}() -> None:", 1)[1]
    return body.split("\ndef ", 1)[0]


def operations(body: str) -> list[tuple[str, str]]:
    """The ``op.`` calls of a function body, in order: (operation, first quoted name)."""
    return [
        (found[1], found[2])
        for line in body.splitlines()
        if (found := re.match(r"\s*op\.(\w+)\(.*?'([^']*)'", line))
    ]


def tenant_table(metadata: MetaData, name: str, *, column: str = "tenant_id", **info: Any) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True),
        Column(column, TENANT_TYPE, nullable=False, index=True),
        info={TENANT_TABLE_INFO_KEY: column, **info},
    )


def secured(owner: Engine) -> dict[str, tuple[bool, bool]]:
    with as_owner(owner) as conn:
        return {name: (rls, forced) for name, rls, forced in conn.execute(SECURED)}


def policies(owner: Engine, table: str | None = None) -> list[tuple[Any, ...]]:
    with as_owner(owner) as conn:
        rows = [tuple(row) for row in conn.execute(POLICIES)]
    return [row for row in rows if table is None or row[0] == table]


def policy_names(owner: Engine, table: str) -> list[str]:
    return [row[1] for row in policies(owner, table)]


def plant(owner: Engine, statements: list[str]) -> None:
    with as_owner(owner) as conn:
        for statement in statements:
            conn.execute(text(statement))


def wall(name: str, **options: Any) -> list[str]:
    """The kit's DDL for a hand-made table ``name`` of this run's key type."""
    return enable_statements(TenantTable(name, tenant_type=KEY_CAST_TYPE, **options))


def created(name: str, column: str = "tenant_id") -> str:
    sql_type = TENANT_TYPE.compile(dialect=postgresql.dialect())
    return f"CREATE TABLE {name} (id serial PRIMARY KEY, {column} {sql_type} NOT NULL)"


def test_a_new_tenant_table_gets_the_wall_after_its_table_and_index(migrations, owner):
    metadata = MetaData()
    tenant_table(metadata, "ag_project")
    tenant_table(metadata, "ag_template", **{GLOBAL_READ_INFO_KEY: True})
    tenant_table(metadata, "ag_shared", **{TENANT_SHARED_ROWS_INFO_KEY: True})
    Table("ag_plan", metadata, Column("id", Integer, primary_key=True), Column("tenant_id", String))

    script = migrations.revision(metadata)

    upgrade = section(script, "upgrade")
    assert "import fastapi_tenancy.postgres.alembic  # noqa: F401" in script
    assert (
        f"op.enable_tenant_rls('ag_project'{RENDERED_TYPE}, global_read=False, shared_rows=False)"
        in upgrade
    )
    assert (
        f"op.enable_tenant_rls('ag_template'{RENDERED_TYPE}, global_read=True, shared_rows=False)"
        in upgrade
    )
    assert (
        f"op.enable_tenant_rls('ag_shared'{RENDERED_TYPE}, global_read=False, shared_rows=True)"
        in upgrade
    )
    ops = operations(upgrade)
    for name in ("ag_project", "ag_template", "ag_shared"):
        position = ops.index(("enable_tenant_rls", name))
        assert ops[position - 2 : position] == [
            ("create_table", name),
            ("create_index", f"ix_{name}_tenant_id"),
        ]
    assert [op for op in ops if op[1] == "ag_plan"] == [("create_table", "ag_plan")]
    downgrade = operations(section(script, "downgrade"))
    for name in ("ag_project", "ag_template", "ag_shared"):
        position = downgrade.index(("disable_tenant_rls", name))
        assert downgrade[position + 1 : position + 3] == [
            ("drop_index", f"ix_{name}_tenant_id"),
            ("drop_table", name),
        ]

    migrations.upgrade()

    assert secured(owner) == {
        "ag_plan": (False, False),
        "ag_project": (True, True),
        "ag_shared": (True, True),
        "ag_template": (True, True),
    }
    assert policy_names(owner, "ag_project") == CORE
    assert policy_names(owner, "ag_template") == sorted([*CORE, "tenancy_global_read"])
    assert policy_names(owner, "ag_plan") == []

    again = migrations.revision(metadata)

    assert operations(section(again, "upgrade")) == []
    assert operations(section(again, "downgrade")) == []
    plant(owner, [created("ag_reference"), *wall("ag_reference", shared_rows=True)])
    reference = [row[1:] for row in policies(owner, "ag_reference")]
    assert [row[1:] for row in policies(owner, "ag_shared")] == reference  # as apply_rls makes

    migrations.downgrade("base")

    assert set(secured(owner)) == {"ag_reference"}


def test_a_dropped_tenant_table_loses_its_wall_first_and_the_downgrade_restores_it(
    migrations, owner
):
    with as_owner(owner) as conn:
        admin = conn.execute(text("SELECT current_user")).scalar_one()
    plant(
        owner,
        [
            created("ag_badge", "org"),
            *wall("ag_badge", tenant_column="org", global_read=True, admin_roles=[admin]),
        ],
    )
    before = policies(owner, "ag_badge")
    migrations.upgrade()  # an empty history: the table predates the migrations

    script = migrations.revision(MetaData())

    assert operations(section(script, "upgrade")) == [
        ("disable_tenant_rls", "ag_badge"),
        ("drop_table", "ag_badge"),
    ]
    assert "op.disable_tenant_rls('ag_badge', tenant_column='org')" in script
    downgrade = section(script, "downgrade")
    assert operations(downgrade) == [
        ("create_table", "ag_badge"),
        ("enable_tenant_rls", "ag_badge"),
    ]
    assert "tenant_column='org'" in downgrade
    assert "global_read=True" in downgrade
    assert f"admin_roles=[{admin!r}]" in downgrade

    migrations.upgrade()
    assert "ag_badge" not in secured(owner)

    migrations.downgrade("-1")

    assert secured(owner)["ag_badge"] == (True, True)
    assert policies(owner, "ag_badge") == before


def test_an_existing_table_gets_the_wall_only_when_it_lacks_it(migrations, owner):
    plant(
        owner,
        [
            created("ag_bare"),
            created("ag_unforced"),
            *wall("ag_unforced"),
            "ALTER TABLE ag_unforced NO FORCE ROW LEVEL SECURITY",
            created("ag_done"),
            *wall("ag_done"),
            created("ag_own"),  # the application's own policies: left alone
            "ALTER TABLE ag_own ENABLE ROW LEVEL SECURITY",
            "ALTER TABLE ag_own FORCE ROW LEVEL SECURITY",
            "CREATE POLICY mine ON ag_own USING (tenant_id IS NOT NULL)",
        ],
    )
    metadata = MetaData()
    for name in ("ag_bare", "ag_unforced", "ag_done", "ag_own"):
        Table(
            name,
            metadata,
            Column("id", Integer, primary_key=True),
            Column("tenant_id", TENANT_TYPE, nullable=False),
            info={TENANT_TABLE_INFO_KEY: "tenant_id"},
        )

    script = migrations.revision(metadata)

    assert operations(section(script, "upgrade")) == [
        ("enable_tenant_rls", "ag_bare"),
        ("enable_tenant_rls", "ag_unforced"),
    ]
    assert operations(section(script, "downgrade")) == [
        ("enable_tenant_rls", "ag_unforced"),  # the wall it had, not none at all
        ("disable_tenant_rls", "ag_bare"),
    ]

    migrations.upgrade()

    assert secured(owner) == dict.fromkeys(
        ["ag_bare", "ag_done", "ag_own", "ag_unforced"], (True, True)
    )
    assert policy_names(owner, "ag_bare") == CORE
    assert policy_names(owner, "ag_own") == ["mine"]
    assert operations(migrations.revision(metadata)) == []


def test_a_model_that_turns_global_access_gets_its_wall_replaced(migrations, owner):
    plant(owner, [created("ag_price"), *wall("ag_price")])
    metadata = MetaData()
    tenant_table(metadata, "ag_price", **{GLOBAL_READ_INFO_KEY: True})
    plant(owner, ["CREATE INDEX ix_ag_price_tenant_id ON ag_price (tenant_id)"])

    script = migrations.revision(metadata)

    assert operations(section(script, "upgrade")) == [("enable_tenant_rls", "ag_price")]
    assert "global_read=True" in section(script, "upgrade")
    assert "global_read=False" in section(script, "downgrade")
    migrations.upgrade()
    assert "tenancy_global_read" in policy_names(owner, "ag_price")
    assert operations(section(migrations.revision(metadata), "upgrade")) == []

    migrations.downgrade("-1")

    assert policy_names(owner, "ag_price") == CORE


def test_a_table_that_stops_being_a_tenant_table_loses_its_wall_before_its_column(
    migrations, owner
):
    plant(owner, [created("ag_note"), *wall("ag_note")])
    metadata = MetaData()
    Table("ag_note", metadata, Column("id", Integer, primary_key=True))

    script = migrations.revision(metadata)

    assert operations(section(script, "upgrade")) == [
        ("disable_tenant_rls", "ag_note"),
        ("drop_column", "ag_note"),  # its policies would refuse the drop of their column
    ]
    migrations.upgrade()  # and it runs

    assert secured(owner)["ag_note"] == (False, False)
    assert policies(owner, "ag_note") == []


def test_include_object_keeps_a_table_out(migrations, owner):
    metadata = MetaData()
    tenant_table(metadata, "ag_skipped")

    def include_object(obj: Any, name: str | None, type_: str, *args: Any) -> bool:
        return not (type_ == "table" and name == "ag_skipped")

    script = migrations.revision(metadata, include_object=include_object)

    assert operations(section(script, "upgrade")) == []


def test_the_operations_show_as_differences_for_alembic_check(owner):
    metadata = MetaData()
    tenant_table(metadata, "ag_checked")
    with as_owner(owner) as conn:
        metadata.create_all(conn)
        script = produce_migrations(MigrationContext.configure(conn), metadata)

    upgrade = script.upgrade_ops
    assert upgrade is not None
    assert [d for d in upgrade.as_diffs() if "tenant_rls" in d[0]] == [
        ("enable_tenant_rls", None, "ag_checked")
    ]
    [operation] = [op for op in upgrade.ops if isinstance(op, EnableTenantRLSOp)]
    assert isinstance(operation.reverse(), DisableTenantRLSOp)
    assert "op.enable_tenant_rls('ag_checked'" in render_python_code(upgrade)


def test_other_dialects_get_no_operations(tmp_path):
    metadata = MetaData()
    tenant_table(metadata, "ag_lite")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'lite.db'}")
    try:
        with engine.connect() as conn:
            script = produce_migrations(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()

    upgrade = script.upgrade_ops
    assert upgrade is not None
    assert [d[0] for d in upgrade.as_diffs()] == ["add_table", "add_index"]


def test_row_scopes_get_their_restrictive_policies(migrations, owner):
    metadata = MetaData()
    Table(
        "ag_note",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("tenant_id", TENANT_TYPE, nullable=False, index=True),
        Column("owner_id", String(50), nullable=False),
        Column("team_id", Integer, nullable=False),
        info={
            TENANT_TABLE_INFO_KEY: "tenant_id",
            ROW_SCOPES_INFO_KEY: {"owner": "owner_id", "team": "team_id"},
        },
    )
    scoped = sorted([*CORE, "tenancy_scope_owner", "tenancy_scope_team"])

    script = migrations.revision(metadata)

    upgrade = section(script, "upgrade")
    assert "row_scopes={'owner': 'owner_id', 'team': 'team_id'}" in upgrade
    assert "row_scope_types={'team': sa.Integer()}" in upgrade
    assert "row_scopes={'owner': 'owner_id', 'team': 'team_id'}" in section(script, "downgrade")
    migrations.upgrade()
    assert policy_names(owner, "ag_note") == scoped
    assert operations(section(migrations.revision(metadata), "upgrade")) == []
    migrations.upgrade()

    plant(owner, ["DROP POLICY tenancy_scope_team ON ag_note"])  # a database missing one

    again = migrations.revision(metadata)
    assert operations(section(again, "upgrade")) == [("enable_tenant_rls", "ag_note")]
    migrations.upgrade()
    assert policy_names(owner, "ag_note") == scoped
    migrations.downgrade("base")
    assert "ag_note" not in secured(owner)


def test_family_reads_and_public_rows_get_their_policies(migrations, owner):
    metadata = MetaData()
    tenant_table(metadata, "ag_catalog", **{TENANT_READS_INFO_KEY: "ancestors"})
    Table(
        "ag_post",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("tenant_id", TENANT_TYPE, nullable=False, index=True),
        Column("owner_id", String(50), nullable=False),
        Column("published", Boolean, nullable=False),
        info={
            TENANT_TABLE_INFO_KEY: "tenant_id",
            ROW_SCOPES_INFO_KEY: {"owner": "owner_id"},
            ROW_SCOPES_PUBLIC_INFO_KEY: {"owner": "published"},
        },
    )
    owned = ["tenancy_owned_delete_owner", "tenancy_owned_update_owner"]
    public = sorted([*CORE, *owned, "tenancy_scope_owner"])

    script = migrations.revision(metadata)

    upgrade = section(script, "upgrade")
    assert "tenant_reads='ancestors'" in upgrade
    assert "row_scope_public={'owner': 'published'}" in upgrade
    migrations.upgrade()
    assert policy_names(owner, "ag_post") == public
    assert operations(section(migrations.revision(metadata), "upgrade")) == []
    migrations.upgrade()

    # a database of before: no family in the select policy, no public arm on the scope
    plant(
        owner, wall("ag_catalog") + wall("ag_post", row_scopes=[ScopeColumn("owner", "owner_id")])
    )
    assert policy_names(owner, "ag_post") == sorted([*CORE, "tenancy_scope_owner"])

    again = migrations.revision(metadata)
    assert sorted(operations(section(again, "upgrade"))) == [
        ("enable_tenant_rls", "ag_catalog"),
        ("enable_tenant_rls", "ag_post"),
    ]
    assert "row_scope_public" not in section(again, "downgrade")  # the wall it replaces
    assert "tenant_reads" not in section(again, "downgrade")
    migrations.upgrade()
    assert policy_names(owner, "ag_post") == public
    migrations.downgrade("-1")
    assert policy_names(owner, "ag_post") == sorted([*CORE, "tenancy_scope_owner"])
    migrations.downgrade("base")
    assert "ag_post" not in secured(owner)


Predicate = Callable[[Table], ColumnElement[bool]]


def document(**predicates: Predicate) -> MetaData:
    """A metadata of one tenant table, ``ag_document``, with these named row policies."""
    metadata = MetaData()
    table = Table(
        "ag_document",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("tenant_id", TENANT_TYPE, nullable=False, index=True),
        Column("archived", Boolean, nullable=False),
        Column("level", Integer, nullable=False),
        Column("status", String(20), nullable=False),
        info={TENANT_TABLE_INFO_KEY: "tenant_id"},
    )
    table.info[ROW_POLICIES_INFO_KEY] = {
        name: TablePolicy(name, predicate(table), ()) for name, predicate in predicates.items()
    }
    return metadata


def restored(found: list[tuple[Any, ...]], before: list[tuple[Any, ...]]) -> bool:
    """Whether the policies ``found`` are those of ``before``: the same names, and the same
    expressions but for the ``IN`` list on a ``VARCHAR``, which PostgreSQL prints in another
    form once read back (autogenerate sees no difference, as the callers check)."""
    return [row[1] for row in found] == [row[1] for row in before] and [
        row for row in found if row[1] != "tenancy_policy_cleared"
    ] == [row for row in before if row[1] != "tenancy_policy_cleared"]


def walls(owner: Engine, metadata: MetaData) -> list[tuple[Any, ...]]:
    """The wall's differences autogenerate finds now (a database not at its head, too)."""
    with as_owner(owner) as conn:
        script = produce_migrations(MigrationContext.configure(conn), metadata)
    assert script.upgrade_ops is not None
    return [d for d in script.upgrade_ops.as_diffs() if "tenant_rls" in d[0]]


def live(table: Table) -> ColumnElement[bool]:
    return table.c.archived == false()


def cleared(table: Table) -> ColumnElement[bool]:
    return or_(table.c.level <= 2, table.c.status.in_(["public", "x'y"]))


def test_row_policies_get_their_restrictive_policies_and_lose_the_obsolete_ones(migrations, owner):
    first = document(live=live, cleared=cleared)
    named = sorted([*CORE, "tenancy_policy_cleared", "tenancy_policy_live"])

    script = migrations.revision(first)

    upgrade = section(script, "upgrade")
    rendered = (
        "row_policies={'cleared': \"level <= 2 OR status IN ('public', 'x''y')\", "
        "'live': 'archived = false'}"
    )
    assert rendered in upgrade
    assert rendered in section(script, "downgrade")  # disable_tenant_rls drops them by name
    migrations.upgrade()
    assert policy_names(owner, "ag_document") == named
    both = policies(owner, "ag_document")
    again = migrations.revision(first)
    assert operations(section(again, "upgrade")) == []
    assert operations(section(again, "downgrade")) == []
    migrations.upgrade()

    # one policy gone, the other on another column
    second = document(live=lambda table: table.c.level >= 0)
    script = migrations.revision(second)
    assert operations(section(script, "upgrade")) == [("enable_tenant_rls", "ag_document")]
    assert "row_policies={'live': 'level >= 0'}" in section(script, "upgrade")
    assert "'cleared': \"(level <= 2) OR ((status)::text = ANY" in section(script, "downgrade")
    migrations.upgrade()
    assert policy_names(owner, "ag_document") == sorted([*CORE, "tenancy_policy_live"])
    [moved] = [row for row in policies(owner, "ag_document") if row[1] == "tenancy_policy_live"]
    assert moved[3].startswith("((level >= 0) OR")
    assert operations(section(migrations.revision(second), "upgrade")) == []
    migrations.upgrade()

    # the same column, another predicate
    third = document(live=lambda table: table.c.level >= 1)
    assert operations(section(migrations.revision(third), "upgrade")) == [
        ("enable_tenant_rls", "ag_document")
    ]
    migrations.upgrade()
    assert operations(section(migrations.revision(third), "upgrade")) == []
    migrations.upgrade()

    migrations.downgrade("-4")  # back over the empty revisions and both changes

    assert restored(policies(owner, "ag_document"), both)
    assert walls(owner, first) == []
    migrations.downgrade("base")
    assert "ag_document" not in secured(owner)


def test_a_dropped_table_loses_its_row_policies_and_the_downgrade_restores_them(migrations, owner):
    migrations.revision(document(live=live, cleared=cleared))
    migrations.upgrade()
    before = policies(owner, "ag_document")

    script = migrations.revision(MetaData())

    assert operations(section(script, "upgrade"))[0] == ("disable_tenant_rls", "ag_document")
    assert "'live': '(archived = false)'" in section(script, "upgrade")
    assert "'live': '(archived = false)'" in section(script, "downgrade")
    migrations.upgrade()
    assert "ag_document" not in secured(owner)

    migrations.downgrade("-1")

    assert restored(policies(owner, "ag_document"), before)
    assert walls(owner, document(live=live, cleared=cleared)) == []


def test_a_row_policy_missing_from_the_database_is_put_back(migrations, owner):
    metadata = document(live=live)
    migrations.revision(metadata)
    migrations.upgrade()
    plant(owner, ["DROP POLICY tenancy_policy_live ON ag_document"])

    script = migrations.revision(metadata)

    assert operations(section(script, "upgrade")) == [("enable_tenant_rls", "ag_document")]
    assert "row_policies" not in section(script, "downgrade")  # the wall it replaces
    migrations.upgrade()
    assert "tenancy_policy_live" in policy_names(owner, "ag_document")


def test_row_policies_under_admin_roles_read_back_their_own_condition(migrations, owner):
    with as_owner(owner) as conn:
        admin = conn.execute(text("SELECT current_user")).scalar_one()
    metadata = document(live=live)
    with as_owner(owner) as conn:
        metadata.create_all(conn)
    conditions = [PolicyCondition("live", "archived = false OR level > 5")]
    plant(owner, wall("ag_document", admin_roles=[admin], row_policies=conditions))
    migrations.upgrade()

    script = migrations.revision(MetaData())

    assert "row_policies={'live': '(archived = false) OR (level > 5)'}" in script
    migrations.upgrade()
    migrations.downgrade("-1")
    assert walls(owner, document(live=lambda t: or_(t.c.archived == false(), t.c.level > 5))) == []
    assert walls(owner, metadata) == [("enable_tenant_rls", None, "ag_document")]
