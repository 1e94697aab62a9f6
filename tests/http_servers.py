"""A small HTTP server of a test, run in a thread for the length of a fixture."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import HTTPServer
from typing import TypeVar

ServerT = TypeVar("ServerT", bound=HTTPServer)


@contextmanager
def serving(server: ServerT) -> Iterator[ServerT]:
    """Serve ``server`` in a daemon thread; shut it down and close it on exit."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
