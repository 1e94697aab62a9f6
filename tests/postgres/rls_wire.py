"""A TCP relay between the driver and PostgreSQL that counts network round trips.

A round trip starts whenever the client sends after the server last spoke (or first), which
is what a client waiting on each answer does. ``delay`` holds each answer back, to make round
trips visible in latency.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from typing import Any


class RoundTripCounter:
    """Relay ``127.0.0.1:<port>`` to ``target``; ``round_trips`` counts client turns."""

    def __init__(self, host: str, port: int, *, delay: float = 0.0) -> None:
        self.target = (host, port)
        self.delay = delay
        self.round_trips = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ)
        selector.register(server, selectors.EVENT_READ)
        last = "server"
        try:
            while True:
                for key, _ in selector.select():
                    sock: Any = key.fileobj
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if last == "server":
                            with self._lock:
                                self.round_trips += 1
                        last = "client"
                        server.sendall(data)
                    else:
                        if self.delay and last == "client":
                            time.sleep(self.delay)
                        last = "server"
                        client.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            client.close()
            server.close()

    def count(self) -> int:
        with self._lock:
            return self.round_trips

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
