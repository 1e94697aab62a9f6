"""Celery round trip with a real worker and broker: the tenant travels in the message headers.

The worker runs ``tests/celery_tasks.py`` in a subprocess (solo pool, a queue of its own per
run) on Redis, ``TENANCY_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``; ``off``
disables). Without a reachable Redis the module is skipped with one line, unless ``CI`` is
true, where that is a failure.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, chain
from celery.result import AsyncResult
from sqlalchemy import Engine, text
from sqlmodel import SQLModel, create_engine

from fastapi_tenancy import InvalidTenantKey, TenantRequired, with_tenant
from fastapi_tenancy.integrations.celery import TENANT_HEADER, carry_tenant_in_messages
from tests.celery_tasks import WORKER_ENV, CeleryNote, create_celery_app
from tests.redis_server import usable_redis_url

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 20  # seconds for the worker to answer its first task
RESULT_TIMEOUT = 10


REDIS_URL = usable_redis_url("Celery suite")


@dataclass
class Worker:
    app: Celery
    engine: Engine
    queue: str

    def result(self, result: AsyncResult) -> Any:
        return result.get(timeout=RESULT_TIMEOUT)

    def failure(self, result: AsyncResult) -> BaseException:
        outcome = result.get(timeout=RESULT_TIMEOUT, propagate=False)
        assert result.state == "FAILURE", (result.state, outcome)
        assert isinstance(outcome, BaseException), outcome
        return outcome

    def notes(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT tenant_id, text FROM celery_note ORDER BY id"))
            return [(row[0], row[1]) for row in rows]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    redis_url = REDIS_URL
    directory = tmp_path_factory.mktemp("celery")
    database_url = f"sqlite:///{directory / 'notes.sqlite3'}"
    engine = create_engine(database_url)
    SQLModel.metadata.create_all(engine, tables=[CeleryNote.__table__])
    queue = f"tenancy-test-{secrets.token_hex(6)}"
    log = directory / "worker.log"
    env = {
        **os.environ,
        WORKER_ENV: f"{redis_url}|{queue}|{database_url}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.celery_tasks",
        "worker",
        "--pool=solo",
        "--queues",
        queue,
        "--hostname",
        f"{queue}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=INFO",
    ]
    carry_tenant_in_messages()
    app = create_celery_app(redis_url, queue, database_url)
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)
    try:
        try:
            app.send_task("tenancy_tests.ping").get(timeout=STARTUP_TIMEOUT)
        except Exception as exc:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"the Celery worker did not start ({exc!r}); its log:\n{tail}")
        yield Worker(app, engine, queue)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck worker
            process.kill()
            process.wait()
        client = redis.Redis.from_url(redis_url)
        client.delete(queue, f"_kombu.binding.{queue}")
        client.close()
        app.close()
        engine.dispose()


def test_two_tenants_interleaved_each_run_bound_to_their_own_tenant(worker: Worker) -> None:
    sent = []
    for round_ in range(3):
        for tenant in ("acme", "globex"):
            with with_tenant(tenant, source="jwt"):
                # .delay() on the task object, and send_task by name (the publish signal)
                sent.append((tenant, worker.app.tasks["tenancy_tests.whoami"].delay()))
                sent.append(
                    (tenant, worker.app.send_task("tenancy_tests.note", [f"{tenant}-{round_}"]))
                )
    for tenant, result in sent:
        answer = worker.result(result)
        assert answer["tenant"] == tenant, answer
        if "visible" in answer:
            assert all(note.startswith(f"{tenant}-") for note in answer["visible"]), answer
        else:
            assert answer["source"] == "jwt"
    assert sorted(worker.notes()) == sorted(
        (tenant, f"{tenant}-{round_}") for round_ in range(3) for tenant in ("acme", "globex")
    )


def test_a_job_with_no_tenant_fails_and_never_runs(worker: Worker) -> None:
    before = worker.notes()
    error = worker.failure(worker.app.send_task("tenancy_tests.note", ["ghost"]))
    assert isinstance(error, TenantRequired)
    error = worker.failure(worker.app.tasks["tenancy_tests.note"].delay("ghost"))
    assert isinstance(error, TenantRequired)
    assert worker.notes() == before


@pytest.mark.parametrize(
    "carried",
    [
        pytest.param({"v": 1, "tenant": "Not A Key"}, id="key-outside-the-pattern"),
        pytest.param({"v": 99, "tenant": "acme"}, id="unknown-version"),
        pytest.param("acme", id="not-a-capture"),
    ],
)
def test_a_job_whose_tenant_cannot_be_restored_fails_and_never_runs(
    worker: Worker, carried: Any
) -> None:
    before = worker.notes()
    result = worker.app.send_task(
        "tenancy_tests.note", ["forged"], headers={TENANT_HEADER: carried}
    )
    assert isinstance(worker.failure(result), InvalidTenantKey)
    assert worker.notes() == before


def test_a_tenantless_task_runs_unbound_and_its_tenant_queries_still_fail_closed(
    worker: Worker,
) -> None:
    assert worker.result(worker.app.send_task("tenancy_tests.ping")) == {"tenant": None}
    error = worker.failure(worker.app.send_task("tenancy_tests.count_notes"))
    assert isinstance(error, TenantRequired)


def test_sub_tasks_chains_and_fan_outs_carry_the_right_tenant(worker: Worker) -> None:
    app = worker.app
    with with_tenant("initech"):
        child_id = worker.result(app.send_task("tenancy_tests.spawn", ["from-parent"]))
        chained = chain(
            app.tasks["tenancy_tests.note"].si("chained"), app.tasks["tenancy_tests.whoami"].si()
        ).delay()
    assert worker.result(AsyncResult(child_id, app=app))["tenant"] == "initech"
    # The chain's second step is published by the worker, after the first one returned.
    assert worker.result(chained)["tenant"] == "initech"

    ids = worker.result(app.send_task("tenancy_tests.fan_out", [["acme", "globex"], "fan"]))
    tenants = [worker.result(AsyncResult(job, app=app))["tenant"] for job in ids]
    assert tenants == ["acme", "globex"]


def test_the_worker_process_is_not_left_with_a_tenant_between_tasks(worker: Worker) -> None:
    with with_tenant("acme"):
        worker.result(worker.app.send_task("tenancy_tests.whoami"))
    # The solo pool runs every task on one thread: the next unbound job must see nothing.
    assert worker.result(worker.app.send_task("tenancy_tests.ping")) == {"tenant": None}
