"""The tenant contextvar's blocks: what they bind, when they log, and that they always unbind."""

from __future__ import annotations

import logging

import pytest

from fastapi_tenancy import get_current_tenant, mutable_tenant, with_tenant, without_tenant
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
