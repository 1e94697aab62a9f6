"""Running ``fastapi-tenancy`` as a subprocess, and reading what it did to the database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli_app import TABLES, TENANTS, CliProject, CliTask
from sqlalchemy import Engine, insert, select, text

HERE = Path(__file__).resolve().parent
PROGRAM = (sys.executable, "-m", "fastapi_tenancy.cli")
ERROR = "fastapi-tenancy: error: "


@dataclass(frozen=True)
class Result:
    """What one run of the command answered."""

    status: int
    out: str
    err: str

    def failure(self, status: int = 1) -> str:
        """The one line of a failure, after checking the status, that nothing went to stdout
        and that stderr holds that line and nothing else."""
        assert self.status == status, self
        assert self.out == "", self
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith(ERROR), self.err
        return lines[0].removeprefix(ERROR)


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str = "",
    program: Sequence[str] = PROGRAM,
) -> Result:
    """Run the command in this directory (where ``cli_app`` is), stdin a pipe, never a TTY."""
    completed = subprocess.run(
        [*program, *args],
        cwd=HERE,
        env=dict(os.environ if env is None else env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


@dataclass
class CliWorld:
    """A seeded database and the environment that points the test app at it."""

    engine: Engine
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, stdin: str = "", flavor: str = "sync") -> Result:
        app = "cli_app:make_async_tenancy" if flavor == "async" else "cli_app:make_tenancy"
        return run_cli(*args, env={**self.env, "FASTAPI_TENANCY_APP": app}, stdin=stdin)

    def seed(self) -> None:
        """Three tenants, each with 2 projects of 3 tasks."""
        org = TABLES[0]
        with self.engine.begin() as conn:
            conn.execute(
                insert(org), [{"slug": t, "name": t.title(), "active": True} for t in TENANTS]
            )
            project_id = 0
            for tenant in TENANTS:
                for number in range(2):
                    project_id += 1
                    conn.execute(
                        insert(CliProject),
                        [{"id": project_id, "tenant_id": tenant, "name": f"{tenant} {number}"}],
                    )
                    conn.execute(
                        insert(CliTask),
                        [
                            {"tenant_id": tenant, "project_id": project_id, "title": f"t{i}"}
                            for i in range(3)
                        ],
                    )
            if conn.dialect.name == "postgresql":  # the ids were given: move the sequence on
                conn.execute(text("SELECT setval(pg_get_serial_sequence('cli_project', 'id'), 99)"))

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table, by primary key."""
        with self.engine.connect() as conn:
            return {
                model.__tablename__: [
                    dict(row._mapping)
                    for row in conn.execute(select(table).order_by(*table.primary_key.columns))
                ]
                for model in TABLES
                for table in [model.__table__]  # type: ignore[attr-defined]
            }

    def dataset(self, tenant: str) -> dict[str, list[str]]:
        """A tenant's projects by name, each with its tasks' titles: its data without ids."""
        rows = self.dump()
        names = {p["id"]: p["name"] for p in rows["cli_project"] if p["tenant_id"] == tenant}
        tasks: dict[str, list[str]] = {name: [] for name in names.values()}
        for task in rows["cli_task"]:
            if task["tenant_id"] == tenant:
                tasks[names[task["project_id"]]].append(task["title"])
        return {name: sorted(titles) for name, titles in tasks.items()}

    def tenants(self) -> dict[str, dict[str, Any]]:
        """The tenants table by key."""
        return {row["slug"]: row for row in self.dump()["cli_org"]}


def without(rows: dict[str, list[dict[str, Any]]], tenant: str) -> dict[str, list[Any]]:
    """A dump without ``tenant``'s rows, its record included."""
    return {
        name: [row for row in found if tenant not in (row.get("tenant_id"), row.get("slug"))]
        for name, found in rows.items()
    }


def progress_lines(err: str, label: str) -> list[str]:
    """The progress lines of ``label`` on stderr."""
    return [line for line in err.splitlines() if line.startswith(f"{label}: ")]
