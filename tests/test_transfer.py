"""Export, import, clone and rename: a tenant's rows leave and come back whole, nowhere else.

An export holds exactly the tenant's rows (not another tenant's, not the shared ones); an
import of it under a new key gives an equal dataset with new ids and foreign keys that follow
them, and leaves every other row byte-identical; a rename moves every row; refusals change
nothing. On every database, with sync and async engines.
"""

from __future__ import annotations

import datetime
import decimal
import json
import threading
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from http_app import tenant_header
from purge_models import PurgeTask, World, dump, without
from sqlalchemy import JSON, Engine, create_engine, event, insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool
from sqlmodel import Field, select

from fastapi_tenancy import (
    CrossTenantWrite,
    Tenancy,
    TenancyMisuse,
    TenantActive,
    TenantExists,
    TenantNotFound,
    TenantScoped,
    tenant_foreign_key,
    tenant_unique,
)

TENANT_TABLES = ("purge_project", "purge_task", "purge_catalog", "purge_note")  # tenant_id first


class TransferDoc(TenantScoped, table=True):
    """A key the model makes (``default_factory``) and values JSON lacks."""

    __tablename__ = "transfer_doc"
    __table_args__ = (tenant_unique("id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    title: str = Field(max_length=100)
    signed_on: datetime.date
    amount: decimal.Decimal = Field(max_digits=10, decimal_places=2)
    scan: bytes | None = None
    tags: dict[str, Any] = Field(sa_type=JSON)


class TransferPart(TenantScoped, table=True):
    __tablename__ = "transfer_part"
    __table_args__ = (tenant_foreign_key("doc_id", "transfer_doc.id"),)

    id: int | None = Field(default=None, primary_key=True)
    doc_id: uuid.UUID
    body: str = Field(max_length=100)


def sends_no_bytes(world: World) -> bool:
    """aiomysql with this PyMySQL fails to send any bytes value (``escape_bytes_prefixed`` is
    no function there): a driver bug, not the export's."""
    return world.tenancy.engine.dialect.driver == "aiomysql"


def docs_of(tenancy: Tenancy, tenant: str) -> list[tuple[Any, ...]]:
    """The tenant's documents with their parts, without ids."""
    with tenancy.session(tenant=tenant) as session:
        docs = session.exec(select(TransferDoc)).all()
        parts = session.exec(select(TransferPart)).all()
        by_doc = {doc.id: sorted(p.body for p in parts if p.doc_id == doc.id) for doc in docs}
        return sorted((d.title, d.signed_on, d.amount, d.scan, d.tags, by_doc[d.id]) for d in docs)


def dataset(engine: Engine, tenant: str) -> dict[str, Any]:
    """A tenant's data without its ids: each project's tasks by title, and its catalogue."""
    rows = dump(engine)
    projects = {row[1]: row[2] for row in rows["purge_project"] if row[0] == tenant}
    tasks: dict[str, list[str]] = {name: [] for name in projects.values()}
    for tenant_id, _, project_id, title in rows["purge_task"]:
        if tenant_id == tenant:
            tasks[projects[project_id]].append(title)  # KeyError: a task of another's project
    catalogue = sorted(row[2] for row in rows["purge_catalog"] if row[0] == tenant)
    return {
        "tasks": {name: sorted(titles) for name, titles in tasks.items()},
        "catalogue": catalogue,
    }


def lines(path: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / name).read_text().splitlines()]


def test_an_export_holds_every_row_of_the_tenant_and_nothing_else(
    world: World, tmp_path: Path
) -> None:
    report = world.call("export", "acme", tmp_path / "acme")
    assert report.rows == {
        "purge_catalog": 1,
        "purge_note": 2,
        "purge_project": 4,
        "purge_task": 12,
    }
    files = sorted(path.name for path in (tmp_path / "acme").iterdir())
    assert files == [
        "manifest.json",
        "purge_catalog.jsonl",
        "purge_note.jsonl",
        "purge_project.jsonl",
        "purge_task.jsonl",
    ]
    everything = [row for name in files[1:] for row in lines(tmp_path / "acme", name)]
    assert len(everything) == 19
    assert {row["tenant_id"] for row in everything} == {"acme"}  # no shared, no other tenant
    manifest = json.loads((tmp_path / "acme" / "manifest.json").read_text())
    assert manifest["tenant"] == "acme"
    # parents before children, so an import can remap the children's references
    names = [table["name"] for table in manifest["tables"]]
    assert names.index("purge_project") < names.index("purge_task")


def test_import_gives_an_equal_dataset_under_a_new_key_and_touches_nothing_else(
    world: World, tmp_path: Path
) -> None:
    world.call("export", "acme", tmp_path / "acme")
    before = dump(world.engine)
    report = world.call("import_", tmp_path / "acme", "newco")
    assert report.total == 19
    assert dataset(world.engine, "newco") == dataset(world.engine, "acme")
    after = dump(world.engine)
    assert without(after, "newco") == before
    new_ids = {row[1] for row in after["purge_project"] if row[0] == "newco"}
    old_ids = {row[1] for row in before["purge_project"]}
    assert new_ids
    assert not new_ids & old_ids  # fresh ids, which the tasks follow
    r = world.client.get("/whoami", headers=tenant_header("newco"))
    assert r.status_code == 200, r.text


def test_a_zip_export_round_trips_and_clone_copies_a_template(world: World, tmp_path: Path) -> None:
    world.call("export", "globex", tmp_path / "globex.zip")
    with zipfile.ZipFile(tmp_path / "globex.zip") as archive:
        assert "manifest.json" in archive.namelist()
    world.call("import_", tmp_path / "globex.zip", "fromzip")
    world.call("clone", "initech", "cloned")
    assert dataset(world.engine, "fromzip") == dataset(world.engine, "globex")
    assert dataset(world.engine, "cloned") == dataset(world.engine, "initech")
    assert dataset(world.engine, "cloned")["tasks"]  # not two empty datasets


def test_keys_the_model_makes_are_made_anew_and_values_json_lacks_come_back(
    world: World, create_tables: Any, tmp_path: Path
) -> None:
    create_tables(world.engine, TransferDoc, TransferPart)
    tenancy = Tenancy(world.engine, resolvers=[])  # sync, to seed and read on any flavour
    with tenancy.session(tenant="acme") as session:
        for n in range(2):
            doc = TransferDoc(
                title=f"contract {n}",
                signed_on=datetime.date(2026, 1, n + 1),
                amount=decimal.Decimal("1234.50") + n,
                scan=None if sends_no_bytes(world) else bytes(range(256)) + b"\x00" * n,
                tags={"kind": "contract", "n": n, "parties": ["acme", "ünïcode"]},
            )
            session.add(doc)
            session.flush()
            session.add_all(TransferPart(doc_id=doc.id, body=f"part {n}.{i}") for i in range(2))
        session.commit()
    world.call("clone", "acme", "newco")
    assert docs_of(tenancy, "newco") == docs_of(tenancy, "acme")
    assert len(docs_of(tenancy, "newco")) == 2
    with tenancy.session(tenant="acme") as session:
        acme_ids = set(session.exec(select(TransferDoc.id)).all())
    with tenancy.session(tenant="newco") as session:
        newco_ids = set(session.exec(select(TransferDoc.id)).all())
    assert len(newco_ids) == 2
    assert not newco_ids & acme_ids  # made anew, and the parts follow (docs_of joins them)


def test_refused_imports_and_exports_change_nothing(world: World, tmp_path: Path) -> None:
    world.call("export", "acme", tmp_path / "acme")
    before = dump(world.engine)
    with pytest.raises(TenantExists):
        world.call("import_", tmp_path / "acme", "globex")
    with pytest.raises(TenantNotFound):
        world.call("export", "nobody", tmp_path / "nobody")
    assert not (tmp_path / "nobody").exists()
    (tmp_path / "taken.zip").write_bytes(b"someone's file")  # not a zip at all
    (tmp_path / "acme" / "manifest.json").unlink()  # an export cut short has no manifest
    with pytest.raises(TenancyMisuse, match="not a complete tenant export"):
        world.call("import_", tmp_path / "acme", "newco")
    for missing in (tmp_path / "nowhere", tmp_path / "nowhere.zip", tmp_path / "taken.zip"):
        with pytest.raises(TenancyMisuse, match="not a complete tenant export"):
            world.call("import_", missing, "newco")
    with pytest.raises(TenancyMisuse, match="not empty"):
        world.call("export", "acme", tmp_path / "acme")
    with pytest.raises(TenancyMisuse, match="never overwrites"):
        world.call("export", "acme", tmp_path / "taken.zip")
    assert (tmp_path / "taken.zip").read_bytes() == b"someone's file"
    assert dump(world.engine) == before


def test_an_import_naming_another_tenant_in_its_rows_still_lands_in_its_own(
    world: World, tmp_path: Path
) -> None:
    world.call("export", "acme", tmp_path / "acme")
    tasks = tmp_path / "acme" / "purge_task.jsonl"
    rows = lines(tmp_path / "acme", "purge_task.jsonl")
    for row in rows:
        row["tenant_id"] = "globex"  # a tampered file
    tasks.write_text("".join(json.dumps(row) + "\n" for row in rows))
    before_globex = dataset(world.engine, "globex")
    world.call("import_", tmp_path / "acme", "newco")
    assert dataset(world.engine, "globex") == before_globex
    assert dataset(world.engine, "newco") == dataset(world.engine, "acme")


def test_an_import_whose_rows_point_at_another_tenants_row_is_refused_whole(
    world: World, tmp_path: Path
) -> None:
    world.call("export", "acme", tmp_path / "acme")
    before = dump(world.engine)
    globex_project = next(row[1] for row in before["purge_project"] if row[0] == "globex")
    rows = lines(tmp_path / "acme", "purge_task.jsonl")
    rows[-1]["project_id"] = globex_project  # not a project of the export: kept, and refused
    (tmp_path / "acme" / "purge_task.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in rows)
    )
    with pytest.raises(CrossTenantWrite):
        world.call("import_", tmp_path / "acme", "newco")
    assert dump(world.engine) == before  # not even the record


def test_an_export_reads_one_snapshot_while_the_tenant_is_written(
    world: World, engine: Engine, tmp_path: Path
) -> None:
    """A task added after the projects were read, just before the tasks are, is not read."""
    used = world.tenancy.engine
    watched = used.sync_engine if isinstance(used, AsyncEngine) else used
    writer = create_engine(engine.url, poolclass=NullPool, **_short_wait(engine))
    outcome: list[str] = []

    def write() -> None:
        try:
            with writer.begin() as other:
                other.execute(
                    insert(PurgeTask), [{"tenant_id": "acme", "project_id": 1, "title": "late"}]
                )
            outcome.append("written")
        except OperationalError:  # SQLite: the export's read transaction holds the file
            outcome.append("locked")

    def write_between_tables(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "FROM purge_task" in statement and not outcome:
            thread = threading.Thread(target=write)
            thread.start()
            thread.join(10)

    event.listen(watched, "before_cursor_execute", write_between_tables)
    try:
        report = world.call("export", "acme", tmp_path / "acme")
    finally:
        event.remove(watched, "before_cursor_execute", write_between_tables)
        writer.dispose()
    assert outcome == ["locked" if engine.dialect.name == "sqlite" else "written"]
    assert report.rows["purge_task"] == 12  # not 13: the tasks were read in the same snapshot
    assert "late" not in (tmp_path / "acme" / "purge_task.jsonl").read_text()


def _short_wait(engine: Engine) -> dict[str, Any]:
    return {"connect_args": {"timeout": 0.3}} if engine.dialect.name == "sqlite" else {}


def test_rename_moves_every_row_and_the_record(world: World) -> None:
    before = dump(world.engine)
    acme = dataset(world.engine, "acme")
    with pytest.raises(TenantActive, match="suspend it before renaming"):
        world.call("rename", "acme", "acme-corp")
    world.call("suspend", "acme")
    with pytest.raises(TenantExists):
        world.call("rename", "acme", "globex")
    report = world.call("rename", "acme", "acme-corp")
    assert report.rows == {
        "purge_task": 12,
        "purge_catalog": 1,
        "purge_note": 2,
        "purge_project": 4,
    }
    after = dump(world.engine)
    assert dataset(world.engine, "acme-corp") == acme
    assert "acme" not in {row[0] for name in TENANT_TABLES for row in after[name]}
    assert "acme" not in {row[1] for row in after["purge_org"]}
    assert without(after, "acme-corp") == without(before, "acme")
    with pytest.raises(TenantNotFound):
        world.call("get", "acme")
    assert world.call("get", "acme-corp").active is False  # still suspended: resume it
    r = world.client.get("/whoami", headers=tenant_header("acme"))
    assert (r.status_code, r.json()["code"]) == (404, "tenant_not_found"), r.text
