"""Celery: the tenant travels in each task message's headers and is bound in the worker.

Declare tasks on :class:`TenantTask` and call :func:`carry_tenant_in_messages` once where the
application publishes tasks (it connects Celery's ``before_task_publish`` signal, so
``app.send_task("name")`` carries the tenant too)::

    from celery import Celery
    from fastapi_tenancy.integrations.celery import TenantTask, carry_tenant_in_messages

    celery_app = Celery("proj", broker=..., task_cls=TenantTask)
    carry_tenant_in_messages()


    @celery_app.task
    def rebuild_report(report_id: int) -> None:
        with tenancy.session() as session:  # scoped to the tenant that queued the job
            ...


    # in a route: the request's tenant goes with the message
    rebuild_report.delay(7)

Publishing stamps the tenant bound at that moment (see :func:`fastapi_tenancy.capture`) under
the :data:`TENANT_HEADER` header; in a worker, a task published while another runs (a
callback, a chain's next step, a sub-task) inherits that task's tenant. The worker restores the
tenant around the task's body. A message whose tenant is missing or malformed makes the task
fail with ``TenantRequired`` or ``InvalidTenantKey`` before its body runs: it never runs
unscoped. A task that really has no tenant (a fan-out over tenants, a cleanup across them) is
declared ``@celery_app.task(tenantless=True)``: it runs with no tenant bound (queries on tenant
models still fail closed) unless its message carries one.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, ClassVar

from celery import Task, current_task, signals

from fastapi_tenancy.context import bind, unbind
from fastapi_tenancy.keys import DEFAULT_KEY_PATTERN, TenantKeyType
from fastapi_tenancy.propagation import capture, restore

__all__ = ["TENANT_HEADER", "TenantTask", "carry_tenant_in_messages", "stamp_tenant"]

TENANT_HEADER = "fastapi_tenancy"
"""Name of the message header holding the captured tenant (a dict, see ``capture()``)."""

_DISPATCH_UID = "fastapi_tenancy.integrations.celery.stamp"


def _carried(request: Any) -> Any:
    """The captured tenant a task request carries, or ``None``."""
    if request is None:
        return None
    value = getattr(request, TENANT_HEADER, None)
    if value is None:
        # Eager runs (``task.apply``) keep custom headers under ``request.headers``.
        headers = getattr(request, "headers", None)
        if isinstance(headers, Mapping):
            value = headers.get(TENANT_HEADER)
    return value


def _tenant_to_send() -> Any:
    captured = capture()
    if captured is not None:
        return captured
    running = current_task._get_current_object() if current_task else None
    if running is None or getattr(running.request, "called_directly", True):
        return None
    return _carried(running.request)


def stamp_tenant(headers: MutableMapping[str, Any]) -> None:
    """Put the tenant to send in message ``headers``, unless they already name one.

    The tenant is the one bound now or, inside a worker, the running task's.
    """
    if TENANT_HEADER in headers:
        return
    data = _tenant_to_send()
    if data is not None:
        headers[TENANT_HEADER] = data


def _on_publish(sender: Any = None, headers: Any = None, **_: Any) -> None:
    if isinstance(headers, MutableMapping):
        stamp_tenant(headers)


def carry_tenant_in_messages() -> None:
    """Stamp the tenant on every task message this process publishes (idempotent).

    Connects a receiver to Celery's ``before_task_publish`` signal. Celery signals are
    process-wide, so this covers every app in the process; a message is stamped only when a
    tenant is bound (or a tenant task is running), so other tasks are unaffected.
    """
    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid=_DISPATCH_UID)


class TenantTask(Task):  # type: ignore[misc]
    """A Celery task that runs bound to the tenant its message carries.

    ``apply_async``, ``delay`` and ``apply`` (eager) stamp the bound tenant; the body runs
    inside ``restore()`` of the carried one, and the task fails without running when there is
    none, unless the task is declared ``tenantless``. Restored ids must match
    ``tenant_key_pattern``; set it if your ``Tenancy`` uses another pattern, and
    ``tenant_key_type`` to your ``Tenancy``'s ``keys`` for keys of a type of your own.
    """

    tenantless: ClassVar[bool] = False
    tenant_key_pattern: ClassVar[str] = DEFAULT_KEY_PATTERN
    tenant_key_type: ClassVar[TenantKeyType[Any] | None] = None

    def apply_async(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        """Queue the task as usual, with the bound tenant in its headers."""
        headers = dict(options.get("headers") or {})
        stamp_tenant(headers)
        if headers:
            options["headers"] = headers
        return super().apply_async(args, kwargs, *rest, **options)

    def apply(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        """Run the task here and now (eagerly), as the bound tenant."""
        headers = dict(options.get("headers") or {})
        stamp_tenant(headers)
        if headers:
            options["headers"] = headers
        return super().apply(args, kwargs, *rest, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the body bound to the carried tenant, or refuse to run it."""
        request = self.request
        if getattr(request, "called_directly", True):
            # A plain function call: it runs in the caller's own tenant context.
            return super().__call__(*args, **kwargs)
        carried = _carried(request)
        if carried is None and self.tenantless:
            token = bind(None)
            try:
                return super().__call__(*args, **kwargs)
            finally:
                unbind(token)
        with restore(carried, key_pattern=self.tenant_key_pattern, key_type=self.tenant_key_type):
            return super().__call__(*args, **kwargs)
