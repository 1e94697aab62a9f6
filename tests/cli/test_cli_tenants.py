"""``fastapi-tenancy tenants ...`` run as a subprocess against the test app, on every database:
each command does what the API does, says so in one line, shows progress of long work on
stderr, and fails with one line (never an empty success) on an unknown or taken key."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import CliWorld, progress_lines, without


def test_list_create_suspend_and_resume(cli_world: CliWorld) -> None:
    listed = cli_world.run("tenants", "list")
    assert listed.status == 0, listed
    header, *rows = listed.out.splitlines()
    assert header.split()[:2] == ["slug", "active"]
    assert [row.split()[:2] for row in rows] == [
        ["acme", "yes"],
        ["globex", "yes"],
        ["initech", "yes"],
    ]

    created = cli_world.run(
        "tenants", "create", "umbrella", "--set", "name=Umbrella Corp", "--set", "seats=5"
    )
    assert (created.status, created.out) == (0, "created tenant umbrella\n"), created
    umbrella = cli_world.tenants()["umbrella"]
    assert (umbrella["name"], umbrella["seats"], umbrella["plan"]) == ("Umbrella Corp", 5, "free")
    assert umbrella["active"] is True
    assert umbrella["created_at"] is not None
    again = cli_world.run("tenants", "create", "umbrella")
    assert again.failure() == "tenant 'umbrella' exists already (tenant_exists)"
    not_a_number = cli_world.run("tenants", "create", "hooli", "--set", "seats=many")
    assert not_a_number.failure(status=2) == "--set seats: 'many' is not of type int"

    suspended = cli_world.run("tenants", "suspend", "globex")
    assert (suspended.status, suspended.out) == (0, "suspended tenant globex\n"), suspended
    only = cli_world.run("tenants", "list", "--suspended", "--json")
    (globex,) = [json.loads(line) for line in only.out.splitlines()]
    assert (globex["slug"], globex["active"], globex["name"]) == ("globex", False, "Globex")
    assert globex["suspended_at"] is not None

    resumed = cli_world.run("tenants", "resume", "globex")
    assert (resumed.status, resumed.out) == (0, "resumed tenant globex\n"), resumed
    active = cli_world.run("tenants", "list", "--active", "--json")
    slugs = [json.loads(line)["slug"] for line in active.out.splitlines()]
    assert slugs == ["acme", "globex", "initech", "umbrella"]

    unknown = cli_world.run("tenants", "suspend", "nobody")
    assert unknown.failure() == "no tenant 'nobody' (tenant_not_found)"
    invalid = cli_world.run("tenants", "resume", "Not A Key!")
    assert invalid.failure() == "'Not A Key!' is not a valid tenant key for this app"


def test_purge_counts_refuses_an_active_tenant_and_deletes_only_the_tenants_rows(
    cli_world: CliWorld,
) -> None:
    active = cli_world.run("tenants", "purge", "acme", "--yes")
    assert "tenant 'acme' is active: suspend it before purging it" in active.failure()
    assert cli_world.run("tenants", "suspend", "acme").status == 0
    before = cli_world.dump()

    dry = cli_world.run("tenants", "purge", "acme", "--dry-run")
    assert dry.status == 0, dry
    assert (
        dry.out == "dry run: purging tenant acme would delete 8 rows (cli_task 6, cli_project 2)\n"
    )
    unconfirmed = cli_world.run("tenants", "purge", "acme")
    assert "add --yes" in unconfirmed.failure()
    assert cli_world.dump() == before

    purged = cli_world.run("tenants", "purge", "acme", "--yes", "--batch-size", "4")
    assert purged.status == 0, purged
    assert purged.out == "purged tenant acme: 8 rows (cli_task 6, cli_project 2)\n"
    assert progress_lines(purged.err, "purging tenant acme") == [
        "purging tenant acme: 4/8 rows (50%)",  # the first batch, then the last count
        "purging tenant acme: 8/8 rows (100%)",
    ]
    assert cli_world.dump() == without(before, "acme")
    unknown = cli_world.run("tenants", "purge", "acme", "--yes")
    assert unknown.failure() == "no tenant 'acme' (tenant_not_found)"


def test_export_import_and_clone_copy_a_tenants_rows_under_a_new_key(
    cli_world: CliWorld, tmp_path: Path
) -> None:
    acme = cli_world.dataset("acme")
    directory = tmp_path / "acme"
    exported = cli_world.run("tenants", "export", "acme", str(directory))
    assert exported.status == 0, exported
    assert (
        exported.out == f"exported tenant acme to {directory}: 8 rows (cli_project 2, cli_task 6)\n"
    )
    assert progress_lines(exported.err, "exporting tenant acme")[-1] == (
        "exporting tenant acme: 8 rows"
    )
    assert sorted(p.name for p in directory.iterdir()) == [
        "cli_project.jsonl",
        "cli_task.jsonl",
        "manifest.json",
    ]
    again = cli_world.run("tenants", "export", "acme", str(directory))
    assert "is not empty" in again.failure()

    before = cli_world.dump()
    imported = cli_world.run("tenants", "import", str(directory), "acme2", "--set", "plan=pro")
    assert imported.status == 0, imported
    assert (
        imported.out
        == f"imported tenant acme2 from {directory}: 8 rows (cli_project 2, cli_task 6)\n"
    )
    assert progress_lines(imported.err, "importing tenant acme2")[-1] == (
        "importing tenant acme2: 8/8 rows (100%)"
    )
    assert cli_world.dataset("acme2") == acme
    assert (cli_world.tenants()["acme2"]["name"], cli_world.tenants()["acme2"]["plan"]) == (
        "Acme",  # from the export's record
        "pro",  # from --set
    )
    assert without(cli_world.dump(), "acme2") == before
    taken = cli_world.run("tenants", "import", str(directory), "acme2")
    assert taken.failure() == "tenant 'acme2' exists already (tenant_exists)"

    archive = tmp_path / "initech.zip"
    assert cli_world.run("tenants", "export", "initech", str(archive)).status == 0
    from_zip = cli_world.run("tenants", "import", str(archive), "initech2")
    assert from_zip.status == 0, from_zip
    assert cli_world.dataset("initech2") == cli_world.dataset("initech") != {}

    cloned = cli_world.run("tenants", "clone", "globex", "globex2")
    assert cloned.status == 0, cloned
    assert cloned.out == "cloned tenant globex as globex2: 8 rows (cli_project 2, cli_task 6)\n"
    assert cli_world.dataset("globex2") == cli_world.dataset("globex") != {}
    missing = cli_world.run("tenants", "clone", "nobody", "nobody2")
    assert missing.failure() == "no tenant 'nobody' (tenant_not_found)"


def test_rename_moves_a_suspended_tenant_and_its_rows(cli_world: CliWorld) -> None:
    active = cli_world.run("tenants", "rename", "acme", "acme-two")
    assert "suspend it before renaming it" in active.failure()
    assert cli_world.run("tenants", "suspend", "acme").status == 0
    acme = cli_world.dataset("acme")
    taken = cli_world.run("tenants", "rename", "acme", "globex")
    assert taken.failure() == "tenant 'globex' exists already (tenant_exists)"

    renamed = cli_world.run("tenants", "rename", "acme", "acme-two")
    assert renamed.status == 0, renamed
    assert renamed.out == (
        "renamed tenant acme to acme-two: 8 rows (cli_task 6, cli_project 2); it stays "
        "suspended until resumed\n"
    )
    assert cli_world.dataset("acme-two") == acme
    assert cli_world.dataset("acme") == {}
    tenants = cli_world.tenants()
    assert "acme" not in tenants
    assert tenants["acme-two"]["active"] is False
