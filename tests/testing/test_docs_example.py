"""docs/testing.md's example test module: it runs green, and the page shows it as it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "test_team_notes.py"
PAGE = ROOT / "docs" / "testing.md"


def test_the_example_test_module_passes_with_the_plugin_alone(pytester: pytest.Pytester) -> None:
    # A process of its own: the example defines tables, which a process may define only once.
    result = pytester.runpytest_subprocess(
        str(EXAMPLE), "-p", "no:cacheprovider", "--rootdir", str(ROOT), "-W", "error"
    )
    result.assert_outcomes(passed=9)


def test_the_testing_page_shows_the_example_module_verbatim() -> None:
    page = PAGE.read_text()
    match = re.search(
        r"<!-- file: docs/examples/test_team_notes.py -->\n```python\n(.*?)```\n", page, re.S
    )
    assert match is not None, "docs/testing.md lost the example block"
    assert match.group(1) == EXAMPLE.read_text()
