"""docs/security-model.md stays true: the tests it names exist, and its attack list is complete.

The page's attack list names test modules and test functions by path
(``tests/scoping/test_reads.py::test_...``). These tests fail when a named module or test is
renamed or removed, when a new attack module is added without a row in the list, and when the
page's list of tests that run on fewer than three databases no longer matches the suite.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "security-model.md"
REFERENCE = re.compile(r"`(tests/[\w./-]+?)(?:::(\w+))?`")
ATTACK_LIST = "## The attack list the suite runs"
FEWER_THAN_THREE = "Tests that take a database but run on fewer than three, and why:"
ATTACK_DIRS = (
    "tests/scoping",
    "tests/resolvers",
    "tests/postgres",
    "tests/example_app",
    "tests/isolation",
)
BACKENDS = ["mariadb", "postgres", "sqlite"]

# Loaded with ``-p`` by the collecting subprocess: which backends each test function runs on.
BACKEND_REPORT = """
import json
import os


def pytest_collection_finish(session):
    found = {}
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        backend = None if callspec is None else callspec.params.get("backend")
        if backend is not None:
            found.setdefault(item.nodeid.split("[")[0], set()).add(backend)
    with open(os.environ["BACKEND_REPORT_FILE"], "w") as out:
        json.dump({name: sorted(backends) for name, backends in found.items()}, out)
"""


def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def attack_list() -> str:
    text = page()
    start = text.index(ATTACK_LIST)
    end = text.find("\n## ", start + len(ATTACK_LIST))
    return text[start:] if end == -1 else text[start:end]


def references(text: str) -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in REFERENCE.finditer(text)]


def table_modules() -> set[str]:
    rows = [line for line in attack_list().splitlines() if line.startswith("|")]
    return {path for row in rows for path, _ in references(row) if path.endswith(".py")}


def defined_tests(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return {node.name for node in tree.body if isinstance(node, kinds)}


def listed_fewer_than_three() -> set[str]:
    """The page's list: ``path::test`` for one test, a module or folder path for all of its."""
    lines = attack_list().splitlines()
    start = lines.index(FEWER_THAN_THREE) + 1
    while not lines[start].strip():
        start += 1
    listed = set()
    for line in lines[start:]:
        if not line.startswith("- "):
            break
        (path, name), *_ = references(line)
        listed.add(path if name is None else f"{path}::{name}")
    return listed


def covers(entry: str, test: str) -> bool:
    if "::" in entry:
        return entry == test
    return test.startswith(entry if entry.endswith("/") else f"{entry}::")


def test_every_test_module_and_test_named_on_the_page_exists() -> None:
    named = references(page())
    assert sum(name is not None for _, name in named) >= 10, "the page names too few tests"
    missing = []
    for path, name in named:
        target = ROOT / path
        if path.endswith("/"):
            if not target.is_dir():
                missing.append(path)
        elif not target.is_file():
            missing.append(path)
        elif name is not None and name not in defined_tests(target):
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/security-model.md names tests that do not exist: {missing}"


def test_the_attack_list_has_a_row_for_every_attack_module() -> None:
    in_table = table_modules()
    on_disk = {
        path.relative_to(ROOT).as_posix()
        for directory in ATTACK_DIRS
        for path in (ROOT / directory).glob("test_*.py")
    }
    assert on_disk, "no attack modules found"
    missing = sorted(on_disk - in_table)
    assert not missing, f"add these modules to the attack list of the security model: {missing}"


def test_the_page_lists_exactly_the_tests_that_run_on_fewer_than_three_databases(
    tmp_path: Path,
) -> None:
    (tmp_path / "backend_report.py").write_text(BACKEND_REPORT, encoding="utf-8")
    report = tmp_path / "backends.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "BACKEND_REPORT_FILE": str(report),
        # Collection only: no server is needed, and none is probed.
        "TENANCY_TEST_POSTGRES_URL": "off",
        "TENANCY_TEST_MARIADB_URL": "off",
        "TENANCY_TEST_REDIS_URL": "off",
    }
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "backend_report"]
    done = subprocess.run(
        [*command, *sorted(table_modules())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    backends: dict[str, list[str]] = json.loads(report.read_text(encoding="utf-8"))
    assert any(found == BACKENDS for found in backends.values()), backends
    fewer = {test for test, found in backends.items() if found != BACKENDS}
    listed = listed_fewer_than_three()
    unlisted = sorted(test for test in fewer if not any(covers(e, test) for e in listed))
    assert not unlisted, f"add these to the security model's list of narrowed tests: {unlisted}"
    stale = sorted(e for e in listed if not any(covers(e, test) for test in fewer))
    assert not stale, f"these run on all three databases, or no longer exist: {stale}"
