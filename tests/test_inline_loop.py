"""Sync code run inline on the server's event loop (fleet/inline_loop.py): it does not see the
loop, and the async calls it makes (channel-layer sends) run on that loop once it returns."""

from __future__ import annotations

import asyncio
import logging

import pytest
from asgiref.sync import sync_to_async

from fleet.inline_loop import call_async, running_inline


async def test_inline_code_does_not_see_the_loop_and_its_async_calls_run_after_it():
    done: list[str] = []

    async def mark(value: str) -> None:
        done.append(value)

    loop = asyncio.get_running_loop()
    with running_inline():
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()
        call_async(mark, "inline")
        assert done == []  # the loop is busy running this code
    assert asyncio.get_running_loop() is loop
    await asyncio.sleep(0)
    assert done == ["inline"]


async def test_outside_inline_code_an_async_call_from_a_thread_waits_for_its_result():
    done: list[str] = []

    async def mark(value: str) -> None:
        done.append(value)

    await sync_to_async(call_async)(mark, "thread")
    assert done == ["thread"]  # async_to_sync: finished before call_async returned


async def test_a_failed_inline_async_call_is_logged_not_raised(caplog):
    async def fail() -> None:
        raise ValueError("layer is gone")

    with caplog.at_level(logging.WARNING, logger="fleet.inline_loop"), running_inline():
        call_async(fail)
    for _ in range(3):
        await asyncio.sleep(0)
    assert "layer is gone" in caplog.text
