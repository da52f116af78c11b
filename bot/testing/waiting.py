"""Waiting for what the fake Bot API receives, for the load runs (``kill_telegram``,
``two_instances``): ``wait_until(more, event, timeout)`` returns True as soon as ``more()`` is
true — re-checked whenever ``event`` is set (the fake's ``on_call`` hook sets it when a call for
that user arrives) — or False after ``timeout`` seconds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable


async def wait_until(more: Callable[[], bool], event: asyncio.Event, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not more():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        event.clear()  # no await since more() was checked: an arrival cannot slip in between
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), left)
    return True
