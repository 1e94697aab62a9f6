"""``fastapi-tenancy shell --tenant KEY``: Python with a tenant bound and a session at hand.

The tenant is bound (``with_tenant``) for the shell's life, so sessions made in it are scoped
to the tenant, and ``session`` is one ready made. Names at hand: ``tenancy``, ``tenant`` (the
key), ``record`` (its row of the tenants table, with a registry), ``session``, ``select``, and
the app's tenant models and tenants model by class name.

At a terminal (or with ``--interactive``) it is a console; else it runs what stdin holds (or
``--command``) as a script, and a failure of it is one line and exit status 1. On an
``AsyncEngine``, ``session`` is an ``AsyncSession`` and both accept top-level ``await``:
``(await session.exec(select(Project))).all()``.
"""

from __future__ import annotations

import argparse
import ast
import code
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table
from sqlmodel import select

from ..context import with_tenant
from ..models import TenantScoped
from .errors import CliError
from .runtime import Runtime

__all__ = ["add_parser"]


def add_parser(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    """Add ``shell`` to the ``commands`` of the main parser."""
    parser = commands.add_parser(
        "shell",
        parents=common,
        help="a Python console with a tenant bound and a session scoped to it",
        description="A Python console with the tenant bound and a session scoped to it "
        "(session, tenancy, tenant, record, select and the app's models at hand). With stdin "
        "not a terminal, runs stdin as a script instead.",
    )
    parser.add_argument("--tenant", required=True, metavar="KEY")
    parser.add_argument("-c", "--command", help="run this code instead of a console")
    parser.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="a console even when stdin is not a terminal",
    )
    parser.set_defaults(handler=_shell)


def _shell(args: argparse.Namespace, runtime: Runtime) -> int:
    tenancy = runtime.tenancy
    key = runtime.key(args.tenant)
    record = None
    if tenancy.registry is not None:
        with runtime.naming(missing=key):
            record = runtime.wait(runtime.tenants.get(key))
    with with_tenant(key, source="cli"):
        session: Any = (
            tenancy.async_session(tenant=key) if tenancy.is_async else tenancy.session(tenant=key)
        )
        namespace: dict[str, Any] = {"__name__": "__console__", **_models(tenancy)}
        namespace.update(tenancy=tenancy, tenant=key, record=record, session=session, select=select)
        try:
            if args.command is not None:
                _run_script(args.command, "<command>", namespace, runtime.wait)
            elif args.interactive or sys.stdin.isatty():
                _Console(namespace, runtime.wait).interact(
                    banner=_banner(runtime, key, record, namespace), exitmsg=""
                )
            else:
                _run_script(sys.stdin.read(), "<stdin>", namespace, runtime.wait)
        finally:
            runtime.wait(session.close())
    return 0


def _run_script(
    source: str, filename: str, namespace: dict[str, Any], wait: Callable[[Any], Any]
) -> None:
    try:
        compiled = compile(source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as error:
        raise CliError(f"{filename} line {error.lineno}: SyntaxError: {error.msg}") from error
    try:
        wait(types.FunctionType(compiled, namespace)())
    except Exception as error:
        lines = [
            f.lineno for f in traceback.extract_tb(error.__traceback__) if f.filename == filename
        ]
        where = f" line {lines[-1]}" if lines else ""
        raise CliError(f"{filename}{where}: {type(error).__name__}: {error}") from error


class _Console(code.InteractiveConsole):
    """A console that takes top-level ``await`` (as ``python -m asyncio`` does), each awaited
    statement run to its end on the command's event loop."""

    def __init__(self, namespace: dict[str, Any], wait: Callable[[Any], Any]) -> None:
        super().__init__(namespace, filename="<console>")
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.namespace = namespace
        self.wait = wait

    def runcode(self, code: types.CodeType) -> None:
        try:
            self.wait(types.FunctionType(code, self.namespace)())
        except SystemExit:
            raise
        except BaseException:
            self.showtraceback()

    def raw_input(self, prompt: str = "") -> str:
        # No prompts when stdin is piped (--interactive): the output is only what ran.
        return input(prompt if sys.stdin.isatty() else "")


def _models(tenancy: Any) -> dict[str, type[Any]]:
    """The mapped tenant models and the tenants model by class name (a name two models share
    is left out)."""
    found: list[type[Any]] = []
    pending: list[type[Any]] = [TenantScoped]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if isinstance(cls.__dict__.get("__table__"), Table):
            found.append(cls)
    if tenancy.registry is not None:
        found.append(tenancy.registry.model)
    names = [cls.__name__ for cls in found]
    return {cls.__name__: cls for cls in found if names.count(cls.__name__) == 1}


def _banner(runtime: Runtime, key: Any, record: Any, namespace: dict[str, Any]) -> str:
    state = ""
    if record is not None and not getattr(record, runtime.registry.active):
        state = " (suspended)"
    kind = "AsyncSession: await its calls" if runtime.tenancy.is_async else "Session"
    names = ", ".join(sorted(name for name in namespace if not name.startswith("__")))
    return (
        f"fastapi-tenancy shell: tenant {runtime.spell(key)}{state} is bound; session is a "
        f"{kind} scoped to it.\nAt hand: {names}.\nCtrl-D (Ctrl-Z Enter on Windows) leaves."
    )
