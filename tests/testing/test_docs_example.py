"""docs/testing.md's example test module: it runs green, and the page shows it as it is."""

from __future__ import annotations

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


def test_the_testing_page_includes_the_example_module_whole() -> None:
    page = PAGE.read_text()
    assert '```python\n--8<-- "docs/examples/test_team_notes.py"\n```\n' in page
