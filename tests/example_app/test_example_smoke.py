"""``python -m example_app`` for real: a uvicorn socket on a free port, a SQLite file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"example_app exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"example_app did not answer /healthz in {STARTUP_TIMEOUT}s:\n{log.read_text()}")


def _wait_for(log: Path, *texts: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        output = log.read_text()
        missing = [text for text in texts if text not in output]
        if not missing:
            return output
        if time.monotonic() > deadline:
            pytest.fail(f"{missing} never appeared in the output:\n{output}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Server:
    base: str
    log: Path
    process: subprocess.Popen[bytes]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """The app started as a newcomer starts it: its URL, its output file and its process."""
    port = _free_port()
    log = tmp_path / "example_app.log"
    env = {
        **os.environ,
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'example.db'}",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("EXAMPLE_JWT_SECRET", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "example_app"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_healthy(base, process, log)
        yield Server(base, log, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_the_app_serves_over_a_real_socket(server: Server) -> None:
    base, log = server.base, server.log
    with httpx.Client(base_url=base, timeout=10.0) as client:
        r = client.post("/auth/login", json={"email": "bob@globex.test", "password": "bob-pass"})
        assert r.status_code == 200, r.text
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

        r = client.get("/projects", headers=headers)
        assert r.status_code == 200, r.text
        assert [p["name"] for p in r.json()] == ["Onboarding", "Volcano lair"]

        r = client.get("/projects", headers={**headers, "X-Tenant-ID": "acme"})
        assert r.status_code == 403, r.text

    # An access line is written once its response has gone out, so they may come late and in
    # any order.
    output = _wait_for(
        log, "GET /projects 200 tenant=globex user=bob@globex.test", "GET /projects 403 tenant=-"
    )
    assert f"serving {base}" in output
    assert "WARNING: EXAMPLE_JWT_SECRET is not set" in output
    assert f"curl -s -X POST {base}/auth/login" in output


@pytest.mark.slow
def test_sigterm_shuts_the_app_down_and_closes_its_database_connections(server: Server) -> None:
    r = httpx.post(
        f"{server.base}/auth/login",
        json={"email": "bob@globex.test", "password": "bob-pass"},
        timeout=10.0,
    )
    assert r.status_code == 200, r.text  # a pooled connection is open now

    server.process.send_signal(signal.SIGTERM)
    # uvicorn raises the signal again once the app has shut down: the process ends by it
    assert server.process.wait(timeout=STARTUP_TIMEOUT) in (0, -signal.SIGTERM)

    output = server.log.read_text()
    assert "Application shutdown complete" in output
    assert "shutdown: database connections closed" in output
