"""Small HTTP servers of the tests, run in a thread for the length of a fixture."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any, TypeVar

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


@dataclass(frozen=True)
class Answer:
    body: bytes
    status: int = 200
    delay: float = 0.0


class JWKSServer(ThreadingHTTPServer):
    """A JWKS endpoint whose answer the test sets, counting the fetches that reach it."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _JWKSHandler)
        self.answer = Answer(b"")
        self.hits = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/jwks.json"

    def serve(self, body: bytes | dict[str, Any], status: int = 200, delay: float = 0.0) -> None:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        self.answer = Answer(body, status, delay)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that gave up, or a connection a proxy reset, is expected here


class _JWKSHandler(BaseHTTPRequestHandler):
    server: JWKSServer

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits += 1
            answer = self.server.answer
        time.sleep(answer.delay)
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        return
