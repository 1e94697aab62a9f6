"""A TCP proxy on 127.0.0.1 that a test switches, at runtime, between a working network and its
failures.

It forwards an ephemeral local port to a real server (PostgreSQL, MariaDB, a JWKS endpoint) and
runs its own asyncio loop in a daemon thread, so it does not care which event loop or thread the
app under test runs in. The switches, callable from any thread:

``pass_through()``  forward every byte both ways (the start, and recovery after a failure)
``drop()``          an outage: every open connection is reset and every new one is reset as
                    soon as it is accepted
``stall()``         a hung server: connections are accepted and their bytes read and held,
                    nothing is forwarded either way; leaving the stall resets the connections
                    that lived through it, as a server that was restarted would
``reset()``         reset every open connection now and keep passing new ones (a failover)
``cut_on(b"...")``  reset the next connection that sends these bytes, before they are forwarded
                    (the database lost right at a COMMIT, say); one shot

Resets are real ones (``SO_LINGER`` 0: an RST, on both sides), so the server ends its session and
rolls back what was open, and the client's driver sees what it would see in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

__all__ = ["Mode", "TcpProxy"]

T = TypeVar("T")

_CHUNK = 65536
_CONTROL_TIMEOUT = 5.0  # seconds a switch may take; the loop only ever does quick work
_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 seconds: close() sends RST


class Mode(Enum):
    PASS = "pass"
    DROP = "drop"
    STALL = "stall"


@dataclass(eq=False)
class _Link:
    """One client connection and, once opened, its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    stalled: bool = False
    held: list[bytes] = field(default_factory=list)
    tasks: set[asyncio.Future[None]] = field(default_factory=set)
    eofs: int = 0  # directions that reached their end of stream
    closed: bool = False


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``; see the module."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = 0
        self.mode = Mode.PASS
        self.accepted = 0  # connections accepted, whatever became of them
        self.cuts = 0  # connections reset by cut_on()
        self.watchdog_fired = False
        self._cut_pattern: bytes | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # Life cycle ----------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = self._call(self._listen())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        """Reset every connection, stop listening and end the loop's thread."""
        if self._thread.is_alive():
            self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CONTROL_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # Switches ------------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._call(self._switch(Mode.PASS))

    def drop(self) -> None:
        self._call(self._switch(Mode.DROP))

    def stall(self) -> None:
        self._call(self._switch(Mode.STALL))

    def reset(self) -> None:
        """Reset every open connection; new ones pass (the mode becomes ``PASS``)."""
        self._call(self._switch(Mode.PASS, reset_all=True))

    def cut_on(self, pattern: bytes) -> None:
        """Reset the next connection whose client sends ``pattern``, before forwarding it."""
        self._call(self._arm(pattern))

    @contextlib.contextmanager
    def watchdog(self, seconds: float) -> Iterator[None]:
        """Bound a block that may hang on this proxy: after ``seconds``, reset everything and
        drop, so a driver blocked on a connection gets an error and the block ends. The test
        then sees the late answer and fails on its own assertion, instead of hanging."""
        timer = threading.Timer(seconds, self._fire_watchdog)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _fire_watchdog(self) -> None:
        self.watchdog_fired = True
        with contextlib.suppress(RuntimeError):  # the proxy closed meanwhile
            self.drop()

    # The loop's side ---------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("the proxy is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(_CONTROL_TIMEOUT)

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, self.host, 0)

    async def _switch(self, mode: Mode, *, reset_all: bool = False) -> None:
        leaving_stall = self.mode is Mode.STALL and mode is not Mode.STALL
        self.mode = mode
        for link in list(self._links):
            if reset_all or mode is Mode.DROP or (leaving_stall and link.stalled):
                self._reset(link)
            elif mode is Mode.STALL:
                link.stalled = True

    async def _arm(self, pattern: bytes) -> None:
        self._cut_pattern = pattern

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._reset(link)
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=_CONTROL_TIMEOUT)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        link = _Link(writer)
        try:
            await self._serve(link, reader)
        finally:
            self._reset(link)
            self._handlers.discard(handler)

    async def _serve(self, link: _Link, reader: asyncio.StreamReader) -> None:
        if self.mode is Mode.DROP:
            return
        self._links.add(link)
        if self.mode is Mode.STALL:
            link.stalled = True
            await self._hold(link, reader)
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.upstream)
        except OSError:
            return
        if link.closed:  # reset while connecting upstream
            _abort(upstream)
            return
        link.upstream = upstream
        if link.stalled:  # the server hung while connecting upstream
            await self._hold(link, reader)
            return
        link.tasks.update(
            (
                asyncio.ensure_future(self._pump(link, reader, upstream, outgoing=True)),
                asyncio.ensure_future(self._pump(link, upstream_reader, link.client)),
            )
        )
        await asyncio.wait(link.tasks)

    async def _hold(self, link: _Link, reader: asyncio.StreamReader) -> None:
        """Read and keep the client's bytes, forwarding nothing, until the link is reset."""
        with contextlib.suppress(OSError):
            while not link.closed:
                data = await reader.read(_CHUNK)
                if not data:
                    return
                link.held.append(data)

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        outgoing: bool = False,
    ) -> None:
        """Forward one direction. An end of stream is passed on as one; a reset, a cut or an
        error resets the whole link, as a broken network would."""
        ended = False
        try:
            while not link.closed:
                data = await reader.read(_CHUNK)
                if not data:
                    ended = self._ended(link, writer)
                    return
                if link.stalled:
                    link.held.append(data)
                    continue
                pattern = self._cut_pattern
                if outgoing and pattern is not None and pattern in data:
                    self._cut_pattern = None
                    self.cuts += 1
                    return
                writer.write(data)
                await writer.drain()
        except OSError:
            return
        finally:
            if not ended:
                self._reset(link)

    def _ended(self, link: _Link, writer: asyncio.StreamWriter) -> bool:
        """One direction reached its end of stream: pass it on, and close the link politely
        once both have. ``False`` when stalled: a hung server passes nothing on."""
        if link.stalled:
            return False
        if writer.can_write_eof():
            writer.write_eof()
        link.eofs += 1
        if link.eofs == 2:
            link.closed = True
            self._links.discard(link)
            link.client.close()
            if link.upstream is not None:
                link.upstream.close()
        return True

    def _reset(self, link: _Link) -> None:
        """Send RST both ways and forget the link."""
        if link.closed:
            return
        link.closed = True
        self._links.discard(link)
        _abort(link.client)
        if link.upstream is not None:
            _abort(link.upstream)
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    writer.transport.abort()
