"""Waiting in tests: poll a condition until it holds, or fail after a deadline saying what was awaited.

Every test that waits for something to happen uses these instead of a fixed sleep, so a slow
machine makes a test slower, not flaky, and a fast one does not wait for nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

# A server that is starting, restarting or cut off refuses or drops connections: that is "not yet",
# and the last such error is reported if the deadline passes.
NOT_YET = (httpx.HTTPError, OSError)


def wait_until(check: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.05,
               what: str = "the condition", ignoring: tuple[type[BaseException], ...] = NOT_YET) -> T:
    """Call ``check`` until it returns something truthy, and return that value.

    Args:
        check: polled every ``interval`` seconds; an exception in ``ignoring`` counts as "not yet".
        timeout: seconds before giving up.
        what: what is awaited, for the failure message ("deployment ready").

    Raises:
        AssertionError: ``timeout`` passed first; the message names ``what`` and the last result.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            last: Any = check()
        except ignoring as exc:
            last = exc
        if last and not isinstance(last, BaseException):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


async def wait_until_async(check: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.01,
                           what: str = "the condition") -> T:
    """``wait_until`` for a test running on an event loop: the loop keeps running while it waits.

    Raises:
        AssertionError: ``timeout`` passed first.
    """
    deadline = time.monotonic() + timeout
    while not (last := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)
    return last
