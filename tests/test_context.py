"""The tenant contextvar's blocks: what they bind, when they log, and that they always unbind."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import pytest

from fastapi_tenancy import (
    TenancyMisuse,
    get_current_tenant,
    mutable_tenant,
    with_tenant,
    without_tenant,
)
from fastapi_tenancy.context import get_tenant_context


def test_without_tenant_logs_when_the_block_is_entered_not_when_it_is_made(caplog) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_tenancy.audit")
    block = without_tenant(reason="nightly export")
    assert caplog.records == []
    with block as context:
        assert context.unscoped
        assert get_tenant_context() is context
    assert [r.tenancy_event for r in caplog.records] == ["without_tenant"]
    assert caplog.records[0].tenancy_reason == "nightly export"
    assert get_tenant_context() is None


def test_mutable_tenant_keeps_the_tenant_bound_when_entered_and_logs_it(caplog) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_tenancy.audit")
    block = mutable_tenant(reason="merge accounts")
    with with_tenant("acme"):
        with block as context:
            assert (context.id, context.mutable) == ("acme", True)
        after = get_tenant_context()
        assert after is not None
        assert not after.mutable
    assert [(r.tenancy_event, r.tenancy_tenant) for r in caplog.records] == [
        ("mutable_tenant", "acme")
    ]


@pytest.mark.anyio
async def test_every_block_works_as_async_with_and_unbinds_on_error() -> None:
    seen = []

    async def move() -> None:
        async with with_tenant("acme"), mutable_tenant() as context:
            seen.append((context.id, context.mutable))
            raise LookupError

    with pytest.raises(LookupError):
        await move()
    assert seen == [("acme", True)]
    assert get_current_tenant() is None
    async with without_tenant() as context:
        assert context.unscoped
    assert get_tenant_context() is None


def test_a_block_cannot_be_entered_twice_at_once() -> None:
    block = with_tenant("acme")
    with block, pytest.raises(RuntimeError, match="already active"), block:
        pass
    assert get_current_tenant() is None


# --------------------------------------------------------------------------------------------
# Bypass blocks refuse generator frames: a generator runs in its consumer's context, so a block
# held open across ``yield`` would bind the bypass for the consumer's loop body, and for good if
# the consumer stopped early.

BYPASSES = {
    "without_tenant": lambda: without_tenant(reason="export"),
    "mutable_tenant": lambda: mutable_tenant(reason="move"),
}


@pytest.mark.parametrize("make_block", BYPASSES.values(), ids=BYPASSES.keys())
def test_a_bypass_block_cannot_be_entered_inside_a_generator(make_block) -> None:
    seen = []

    def rows() -> Iterator[int]:
        with make_block():
            yield 1
            yield 2

    def consume() -> None:
        for row in rows():
            seen.append((row, get_tenant_context()))

    with with_tenant("acme"), pytest.raises(TenancyMisuse, match="generator") as refused:
        consume()
    assert "consumer" in str(refused.value)
    assert "around the loop" in str(refused.value)
    assert seen == []
    assert get_tenant_context() is None


@pytest.mark.parametrize("make_block", BYPASSES.values(), ids=BYPASSES.keys())
@pytest.mark.anyio
async def test_a_bypass_block_cannot_be_entered_inside_an_async_generator(make_block) -> None:
    async def entered_with_async_with() -> AsyncIterator[int]:
        async with make_block():
            yield 1

    async def entered_with_with() -> AsyncIterator[int]:
        with make_block():
            yield 1

    for rows in (entered_with_async_with, entered_with_with):
        with pytest.raises(TenancyMisuse, match="generator"):
            async for _ in rows():
                pass
        assert get_tenant_context() is None


@pytest.mark.anyio
async def test_breaking_out_of_an_async_for_leaves_no_bypass_bound() -> None:
    seen = []

    async def every_tenants_rows() -> AsyncIterator[int]:
        async with without_tenant(reason="export"):
            yield 1
            yield 2

    async def consume() -> None:
        async for row in every_tenants_rows():
            seen.append((row, get_tenant_context()))
            break

    with pytest.raises(TenancyMisuse):
        await consume()
    assert seen == []
    assert get_tenant_context() is None


def test_an_exit_stack_inside_a_generator_does_not_hide_the_bypass_from_the_check() -> None:
    def rows() -> Iterator[int]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(without_tenant(reason="export"))
            yield 1

    with pytest.raises(TenancyMisuse, match="generator"):
        next(rows())
    assert get_tenant_context() is None


def test_a_contextmanager_helper_may_hold_a_bypass_block_across_its_yield() -> None:
    @contextlib.contextmanager
    def unscoped() -> Iterator[None]:
        with without_tenant(reason="helper"), mutable_tenant(reason="helper"):
            yield

    with with_tenant("acme"):
        with unscoped():
            context = get_tenant_context()
            assert context is not None
            assert (context.unscoped, context.mutable) == (True, True)
        assert get_current_tenant() == "acme"
    assert get_tenant_context() is None


@pytest.mark.anyio
async def test_an_asynccontextmanager_helper_may_hold_a_bypass_block_across_its_yield() -> None:
    @contextlib.asynccontextmanager
    async def unscoped() -> AsyncIterator[None]:
        async with without_tenant(reason="helper"):
            yield

    async with unscoped():
        context = get_tenant_context()
        assert context is not None
        assert context.unscoped
    assert get_tenant_context() is None


@pytest.mark.anyio
async def test_bypass_blocks_still_work_in_plain_functions_and_coroutines() -> None:
    def sync_report() -> bool:
        with without_tenant(reason="report"), mutable_tenant(reason="report") as context:
            return context.unscoped and context.mutable

    async def async_report() -> bool:
        async with without_tenant(reason="report"), mutable_tenant(reason="report") as context:
            return context.unscoped and context.mutable

    assert sync_report()
    assert await async_report()
    assert get_tenant_context() is None


@pytest.mark.anyio
async def test_a_generator_based_coroutine_may_enter_a_bypass_block() -> None:
    @types.coroutine
    def legacy_coroutine() -> Generator[Any, None, bool]:
        with without_tenant(reason="legacy") as context:
            yield from asyncio.sleep(0).__await__()
            return context.unscoped

    assert await legacy_coroutine()
    assert get_tenant_context() is None


def test_with_tenant_may_still_be_held_inside_a_generator_such_as_a_fixture() -> None:
    def acme_fixture() -> Iterator[None]:
        with with_tenant("acme"):
            yield

    fixture = acme_fixture()
    next(fixture)
    assert get_current_tenant() == "acme"
    with pytest.raises(StopIteration):
        next(fixture)
    assert get_current_tenant() is None
