"""The Celery integration without a broker: eager runs, direct calls and header stamping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from fastapi_tenancy import InvalidTenantKey, TenantRequired, get_current_tenant, with_tenant
from fastapi_tenancy.integrations.celery import TENANT_HEADER, TenantTask, stamp_tenant


@pytest.fixture
def app() -> Iterator[Celery]:
    celery_app = Celery("eager", broker="memory://", backend="cache+memory://", task_cls=TenantTask)
    celery_app.conf.update(task_always_eager=True, task_store_eager_result=False)

    @celery_app.task(name="eager.whoami", shared=False)
    def whoami() -> str | None:
        return get_current_tenant()

    @celery_app.task(name="eager.anyone", tenantless=True, shared=False)
    def anyone() -> str | None:
        return get_current_tenant()

    yield celery_app
    celery_app.close()


def test_an_eager_task_runs_as_the_tenant_that_queued_it(app: Celery) -> None:
    with with_tenant("acme"):
        result = app.tasks["eager.whoami"].delay()
    assert result.get() == "acme"
    assert get_current_tenant() is None


def test_an_eager_task_queued_with_no_tenant_fails_without_running(app: Celery) -> None:
    result = app.tasks["eager.whoami"].apply()
    assert result.failed()
    assert isinstance(result.result, TenantRequired)


def test_an_eager_task_with_a_forged_header_fails(app: Celery) -> None:
    result = app.tasks["eager.whoami"].apply(headers={TENANT_HEADER: {"v": 1, "tenant": "A B"}})
    assert isinstance(result.result, InvalidTenantKey)


def test_apply_runs_the_task_here_as_the_bound_tenant(app: Celery) -> None:
    with with_tenant("initech"):
        assert app.tasks["eager.whoami"].apply().get() == "initech"


def test_a_tenantless_task_runs_unbound_unless_its_message_carries_a_tenant(app: Celery) -> None:
    assert app.tasks["eager.anyone"].apply().get() is None
    with with_tenant("acme"):
        assert app.tasks["eager.anyone"].delay().get() == "acme"


def test_a_direct_call_is_a_plain_function_call_in_the_callers_context(app: Celery) -> None:
    assert app.tasks["eager.whoami"]() is None
    with with_tenant("globex"):
        assert app.tasks["eager.whoami"]() == "globex"


def test_stamp_tenant_adds_the_bound_tenant_and_keeps_one_already_there() -> None:
    headers: dict[str, Any] = {}
    stamp_tenant(headers)
    assert headers == {}
    with with_tenant("acme", source="jwt"):
        stamp_tenant(headers)
        assert headers[TENANT_HEADER] == {"v": 1, "tenant": "acme", "source": "jwt"}
    with with_tenant("globex"):
        stamp_tenant(headers)
    assert headers[TENANT_HEADER]["tenant"] == "acme"
