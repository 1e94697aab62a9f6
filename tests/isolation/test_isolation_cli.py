"""``fastapi-tenancy migrate`` and ``fastapi-tenancy tenants move`` on a real app, as a user
runs them: every tenant placed apart migrated, several at once, a failed one reported in one
line with exit status 1, and a second run finishing it; a tenant moved into its own schema or
database and back, no row lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from isolation_models import PLACED, SHARED, Doc, Organization
from isolation_support import write_environment
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session, select
from tenant_databases import tenant_database_url

from fastapi_tenancy.isolation import Isolation, Strategy
from fastapi_tenancy.isolation.storage import create_storage, drop_storage

HERE = Path(__file__).resolve().parent


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastapi_tenancy.cli", *args, "--app", "iso_cli_app:make_tenancy"],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def app_env(database: Any, engine: Engine, db_url: str, tmp_path: Path, create_tables: Any) -> Any:
    """The environment of ``iso_cli_app`` on this test's database; the places it may make
    are dropped afterwards."""
    create_tables(engine, *SHARED)
    prefix = f"{database.name or 'cli'}_"
    template = tenant_database_url(database, tmp_path, prefix)("KEY", None)
    env = {
        **os.environ,
        "ISO_DATABASE_URL": db_url,
        "ISO_DATABASE_URL_TEMPLATE": template.render_as_string(hide_password=False),
        "ISO_SCHEMA_PREFIX": prefix,
        "ISO_MIGRATIONS": "",
    }
    isolation = Isolation(
        schema_prefix=prefix, database_url=tenant_database_url(database, tmp_path, prefix)
    )
    yield env, isolation
    for strategy in (Strategy.SCHEMA, Strategy.DATABASE):
        if database.backend != "sqlite" or strategy is Strategy.DATABASE:
            for key in ("acme", "globex", "initech"):
                drop_storage(engine, isolation.placement(key, strategy))


def add_tenants(engine: Engine, strategies: dict[str, str]) -> None:
    with Session(engine) as session:
        for key, strategy in strategies.items():
            session.add(Organization(slug=key, isolation=strategy))
        session.commit()


def test_migrate_runs_every_tenant_reports_a_failure_and_finishes_on_the_next_run(
    app_env: Any, engine: Engine, db_url: str, tmp_path: Path, backend: str
) -> None:
    env, isolation = app_env
    own = "database" if backend == "sqlite" else "schema"
    strategies = {"acme": own, "globex": own, "initech": "shared"}
    add_tenants(engine, strategies)
    for key, strategy in strategies.items():
        create_storage(engine, isolation.placement(key, Strategy(strategy)), [])
    env["ISO_MIGRATIONS"] = str(write_environment(tmp_path, db_url))

    first = run("migrate", "--all-tenants", "--revision", "0001", "--no-progress", env=env)
    assert first.returncode == 0, first
    assert first.stdout.strip() == (
        "migrated 2 tenant(s) to 0001: 2 migrated, 0 already there, 0 failed; "
        "1 in the shared tables left to the app's migrations"
    )
    globex = isolation.placement("globex", Strategy(own))
    qualified = f"{globex.schema}.mig_doc" if globex.schema else "mig_doc"
    target = engine if globex.url is None else create_engine(globex.url)
    with target.begin() as conn:
        for _ in range(2):
            conn.execute(text(f"INSERT INTO {qualified} (tenant_id, title) VALUES ('globex', 'x')"))  # noqa: S608

    second = run("migrate", "--all-tenants", "--jobs", "2", "--no-progress", env=env)
    assert second.returncode == 1, second
    assert second.stdout.strip() == (
        "migrated 2 tenant(s) to head: 1 migrated, 0 already there, 1 failed (globex); "
        "1 in the shared tables left to the app's migrations"
    )
    errors = second.stderr.strip().splitlines()
    assert len(errors) == 1, second.stderr
    assert errors[0].startswith(
        "fastapi-tenancy: error: tenant globex: migration from 0001 failed: "
    )

    with target.begin() as conn:
        conn.execute(text(f"DELETE FROM {qualified}"))  # noqa: S608
    third = run("migrate", "--tenant", "globex", "--no-progress", env=env)
    assert third.returncode == 0, third
    assert third.stdout.strip() == (
        "migrated 1 tenant(s) to head: 1 migrated, 0 already there, 0 failed"
    )


def test_tenants_move_takes_a_tenant_into_its_own_place_and_back(
    app_env: Any, engine: Engine, backend: str
) -> None:
    env, _ = app_env
    engine.update_execution_options(schema_translate_map={"tenant": None})
    for table in PLACED:
        table.create(engine, checkfirst=True)
    add_tenants(engine, {"globex": "shared"})
    with Session(engine) as session:
        session.add_all([Doc(title=f"doc-{n}", tenant_id="globex") for n in range(30)])
        session.commit()
    own = "database" if backend == "sqlite" else "schema"
    for strategy in (own, "shared"):
        moved = run("tenants", "move", "globex", strategy, "--no-progress", env=env)
        assert moved.returncode == 0, moved
        assert moved.stdout.strip().startswith(f"moved tenant globex to {strategy}: 30 rows")
        with Session(engine) as session:
            record = session.exec(select(Organization).where(Organization.slug == "globex")).one()
            assert record.isolation == strategy
            assert record.active
    with Session(engine) as session:
        titles = session.exec(select(Doc.title).where(Doc.tenant_id == "globex")).all()
    assert sorted(titles) == sorted(f"doc-{n}" for n in range(30))
