"""Progress of long work on stderr: a tqdm bar at a terminal, plain lines elsewhere.

The bar needs the ``cli`` extra (``pip install "fastapi-tenancy-kit[cli]"``, which brings
tqdm); without it, or when stderr is not a terminal (a pipe, a log file, CI), a line tells the
count when the work starts, at most once a second while it runs, and when it ends.
"""

from __future__ import annotations

import importlib
import sys
import time
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Meter", "meter"]

LINE_INTERVAL = 1.0
"""Seconds between two progress lines, the first and last aside."""


class Meter:
    """Counts work done; this one shows nothing (``--no-progress``)."""

    def update(self, count: int = 1) -> None:
        """``count`` more units are done."""

    def close(self, failed: bool = False) -> None:
        """The work ended, or ``failed``."""

    def __enter__(self) -> Meter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(failed=exc is not None)


class _Lines(Meter):
    def __init__(self, label: str, total: int | None, unit: str, stream: TextIO) -> None:
        self.label, self.total, self.unit, self.stream = label, total, unit, stream
        self.done = 0
        self._shown: int | None = None
        self._shown_at = 0.0

    def update(self, count: int = 1) -> None:
        self.done += count
        if self._shown is None or time.monotonic() - self._shown_at >= LINE_INTERVAL:
            self._show()

    def close(self, failed: bool = False) -> None:
        # A failure before any progress is told by its error line alone.
        if self._shown != self.done and not (failed and self._shown is None):
            self._show()

    def _show(self) -> None:
        text = f"{self.label}: {self.done}"
        if self.total is not None:
            text += f"/{self.total} {self.unit}"
            if self.total:
                text += f" ({self.done * 100 // self.total}%)"
        else:
            text += f" {self.unit}"
        print(text, file=self.stream, flush=True)
        self._shown, self._shown_at = self.done, time.monotonic()


class _Bar(Meter):
    def __init__(self, tqdm: Any, label: str, total: int | None, unit: str, stream: TextIO):
        self._bar = tqdm(total=total, desc=label, unit=f" {unit}", file=stream, leave=True)

    def update(self, count: int = 1) -> None:
        self._bar.update(count)

    def close(self, failed: bool = False) -> None:
        self._bar.close()


def meter(
    label: str,
    *,
    total: int | None = None,
    unit: str = "rows",
    enabled: bool = True,
    stream: TextIO | None = None,
) -> Meter:
    """A meter of ``label``'s work out of ``total`` (unknown if ``None``) on ``stream``
    (stderr): a bar at a terminal with tqdm installed, else lines; nothing if not
    ``enabled``."""
    if not enabled:
        return Meter()
    out = sys.stderr if stream is None else stream
    tqdm = _tqdm() if out.isatty() else None
    if tqdm is not None:
        return _Bar(tqdm, label, total, unit, out)
    return _Lines(label, total, unit, out)


def _tqdm() -> Any:
    try:
        return importlib.import_module("tqdm").tqdm
    except ImportError:
        return None
