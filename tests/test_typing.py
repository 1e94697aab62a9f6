"""Users' code type-checks under ``mypy --strict`` on the newest Python's rules.

``tests/typing/user_app.py`` is written as the docs show: tenant models built without
``tenant_id``, ``model_validate``, typed keys, records as keys. ``user_mistakes.py`` holds
mistakes mypy must report, so a check that stopped looking would fail here too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

HERE = Path(__file__).parent / "typing"
ROOT = Path(__file__).parent.parent


def run_mypy(path: Path, cache: Path) -> tuple[str, int]:
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--python-version",
            "3.14",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(cache),
            "--no-error-summary",
            str(path),
        ]
    )
    return stdout + stderr, status


def test_users_code_as_the_docs_show_it_type_checks(tmp_path: Path) -> None:
    output, status = run_mypy(HERE / "user_app.py", tmp_path)
    assert status == 0, output


def test_mypy_reports_the_mistakes_users_can_make(tmp_path: Path) -> None:
    output, status = run_mypy(HERE / "user_mistakes.py", tmp_path)
    lines = sorted({int(n) for n in re.findall(r"user_mistakes\.py:(\d+): error", output)})
    assert status == 1, output
    assert lines == [18, 19, 20], output
