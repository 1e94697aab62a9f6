"""The command line on an app whose Tenancy has a pooled ``AsyncEngine``: the same commands,
every coroutine of one command on one event loop, on every database."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import ERROR, CliWorld, progress_lines, without


def test_the_commands_serve_an_async_app(cli_world: CliWorld, tmp_path: Path) -> None:
    listed = cli_world.run("tenants", "list", "--json", flavor="async")
    assert listed.status == 0, listed
    assert [json.loads(line)["slug"] for line in listed.out.splitlines()] == [
        "acme",
        "globex",
        "initech",
    ]

    exported = cli_world.run("tenants", "export", "globex", str(tmp_path / "g.zip"), flavor="async")
    assert exported.status == 0, exported
    assert progress_lines(exported.err, "exporting tenant globex")[-1] == (
        "exporting tenant globex: 8 rows"
    )

    assert cli_world.run("tenants", "suspend", "acme", flavor="async").status == 0
    before = cli_world.dump()
    purged = cli_world.run("tenants", "purge", "acme", "--yes", "--batch-size", "4", flavor="async")
    assert purged.status == 0, purged
    assert purged.out == "purged tenant acme: 8 rows (cli_task 6, cli_project 2)\n"
    assert progress_lines(purged.err, "purging tenant acme")[-1] == (
        "purging tenant acme: 8/8 rows (100%)"
    )
    assert cli_world.dump() == without(before, "acme")

    shelled = cli_world.run(
        "shell",
        "--tenant",
        "globex",
        "--command",
        "print(len((await session.exec(select(CliProject))).all()))",
        flavor="async",
    )
    assert (shelled.status, shelled.out, shelled.err) == (0, "2\n", "")

    ran = cli_world.run("run", "--all-tenants", "cli_app:add_project_async", flavor="async")
    assert ran.status == 1, ran
    assert ran.out == (
        "ran cli_app:add_project_async for 2 tenant(s): 1 succeeded, 1 failed (initech)\n"
    )
    assert [line for line in ran.err.splitlines() if line.startswith(ERROR)] == [
        f"{ERROR}tenant initech: RuntimeError: initech is broken"
    ]
    assert "job for globex" in cli_world.dataset("globex")
