"""The body read's own timer: 408 when the body does not arrive in time, and a cancellation from
elsewhere (server shutdown) is never taken for one."""

from __future__ import annotations

import asyncio

import pytest

from custos.errors import ProxyError
from sidecar.app import _read_body


async def _never() -> dict:
    await asyncio.sleep(3600)
    return {}


async def test_body_not_in_time_is_408() -> None:
    with pytest.raises(ProxyError) as err:
        await _read_body(_never, 1024, 0.05)
    assert err.value.status == 408
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_body_in_time_is_read() -> None:
    messages = [
        {"type": "http.request", "body": b"b", "more_body": False},
        {"type": "http.request", "body": b"a", "more_body": True},
    ]

    async def receive() -> dict:
        return messages.pop()

    assert await _read_body(receive, 1024, 5) == b"ab"


async def test_other_cancellation_passes_through() -> None:
    task = asyncio.ensure_future(_read_body(_never, 1024, 5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
