"""The progress meter: lines on a stream that is not a terminal, a tqdm bar on one that is."""

from __future__ import annotations

import io

import pytest

from fastapi_tenancy.cli import progress
from fastapi_tenancy.cli.progress import Meter, meter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_tell_the_first_count_at_most_one_a_second_and_the_last() -> None:
    stream = io.StringIO()
    with meter("purging tenant acme", total=3000, stream=stream) as shown:
        for _ in range(3):
            shown.update(1000)
    assert stream.getvalue().splitlines() == [
        "purging tenant acme: 1000/3000 rows (33%)",
        "purging tenant acme: 3000/3000 rows (100%)",
    ]


def test_lines_without_a_total_and_after_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.0)
    stream = io.StringIO()
    with meter("exporting tenant acme", stream=stream) as shown:
        shown.update(1000)
        shown.update(5)
    assert stream.getvalue().splitlines() == [
        "exporting tenant acme: 1000 rows",
        "exporting tenant acme: 1005 rows",
    ]


def test_a_failure_before_any_progress_shows_nothing_and_no_work_shows_zero() -> None:
    stream = io.StringIO()
    with pytest.raises(RuntimeError), meter("exporting tenant acme", stream=stream):
        raise RuntimeError("no such tenant")
    assert stream.getvalue() == ""
    with meter("running job", total=0, unit="tenants", stream=stream):
        pass
    assert stream.getvalue() == "running job: 0/0 tenants\n"


def test_a_terminal_gets_a_tqdm_bar() -> None:
    pytest.importorskip("tqdm", reason="the cli extra (tqdm) is not installed")
    stream = Terminal()
    with meter("purging tenant acme", total=20, stream=stream) as shown:
        shown.update(10)
        shown.update(10)
    assert "\rpurging tenant acme: 100%|" in stream.getvalue()
    assert "| 20/20 [" in stream.getvalue()


def test_a_terminal_without_tqdm_gets_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "_tqdm", lambda: None)
    stream = Terminal()
    with meter("purging tenant acme", total=2, stream=stream) as shown:
        shown.update(2)
    assert stream.getvalue() == "purging tenant acme: 2/2 rows (100%)\n"


def test_no_progress_shows_nothing() -> None:
    shown = meter("purging tenant acme", total=2, enabled=False)
    assert type(shown) is Meter
    with shown:
        shown.update(2)
