"""Fault injection: answers the fake gives instead of the real one — ``Fault`` (the next N
calls of a method fail with a status), ``Stall`` (calls held until released or a timeout), and
rate-limit policies enforcing Telegram's quotas with 429s (``RateLimitPolicy`` per chat,
``TotalRateLimit`` bot-wide)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .objects import SEND_METHODS, ApiError, Call

if TYPE_CHECKING:
    from .server import FakeBotAPI

@dataclass
class Fault:
    status: int
    description: str
    retry_after: int | None
    times: int
    when: Callable[[dict[str, Any]], bool] | None = None


class Stall:
    """Holds matching calls until ``seconds`` pass, ``release()`` is called, or shutdown."""

    def __init__(self, seconds: float | None, times: int, when: Callable[[dict[str, Any]], bool] | None):
        self.seconds = seconds
        self.times = times
        self.when = when
        self.released = asyncio.Event()
        self.hit = asyncio.Event()  # set once a call is being held
        self.held = 0

    def release(self) -> None:
        self.released.set()

    async def hold(self) -> None:
        self.held += 1
        self.hit.set()
        if self.seconds is None:
            await self.released.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), self.seconds)


class RateLimitPolicy:
    """Refuse with 429 when more than ``limit`` matching calls hit one chat in ``period`` s.

    ``fake.limit_groups(per_minute=20)`` installs the group limit; the agents feature can
    build others (e.g. ``RateLimitPolicy(30, 1.0, chats=lambda c: True)`` for the overall cap).
    """

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        chats: Callable[[Any], bool],
        methods: Iterable[str] = SEND_METHODS,
    ) -> None:
        self.limit = limit
        self.period = period
        self.chats = chats
        self.methods = frozenset(methods)
        self.hits: dict[Any, deque[float]] = {}
        self.refused = 0

    def __call__(self, fake: FakeBotAPI, call: Call) -> ApiError | None:
        if call.method not in self.methods or not self.chats(call.chat_id):
            return None
        now = fake.clock()
        q = self.hits.setdefault(call.chat_id, deque())
        while q and q[0] <= now - self.period:
            q.popleft()
        if len(q) >= self.limit:
            self.refused += 1
            wait = max(1, math.ceil(q[0] + self.period - now))
            return ApiError(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
        q.append(now)
        return None


class TotalRateLimit:
    """Refuse with 429 when more than ``limit`` sends (any chat) arrive in ``period`` s — the
    bot-wide quota (``fake.policies.append(TotalRateLimit(30, 1.0))``)."""

    def __init__(self, limit: int, period: float, methods: Iterable[str] = SEND_METHODS) -> None:
        self.limit = limit
        self.period = period
        self.methods = frozenset(methods)
        self.hits: deque[float] = deque()
        self.refused = 0

    def __call__(self, fake: FakeBotAPI, call: Call) -> ApiError | None:
        if call.method not in self.methods:
            return None
        now = fake.clock()
        while self.hits and self.hits[0] <= now - self.period:
            self.hits.popleft()
        if len(self.hits) >= self.limit:
            self.refused += 1
            return ApiError(429, "Too Many Requests: retry after 1", retry_after=1)
        self.hits.append(now)
        return None


def is_group_chat(chat_id: Any) -> bool:
    return not (isinstance(chat_id, int) and chat_id > 0)


Policy = Callable[["FakeBotAPI", Call], "ApiError | None"]
Handler = Callable[[Call], Awaitable[Any]]
