"""Outgoing rate limits for the Telegram door (a PTB ``BaseRateLimiter``).

Every request the bot makes except ``getUpdates`` passes through here (PTB routes them),
so the door, the agents feature and anything else using the same ``Application`` share
one set of limits:

* throttling before sending: about 30 messages/s overall, a short burst then ~1/s per
  private chat, 20/minute per group (edits in groups count too) — sliding windows that
  reserve a slot per request, so one chat's waiting requests keep their order; the
  bot-wide slot is taken only when the chat's slot has come (no head-of-line blocking);
* a 429 ``RetryAfter`` is not an error: the chat is paused for ``retry_after`` seconds and
  the same request is sent again (nothing is dropped), up to ``max_retries`` times.

Other errors (403, 400, 5xx) pass through untouched: the caller decides.

Priorities inside the bot-wide budget: a message that answers a user (``sendMessage`` to a
private chat) is granted the next overall slot before housekeeping (edits, the agents' group,
any other chat); housekeeping still gets one slot in every ``LOW_SHARE`` while answers wait,
so it is slowed, never starved. The door's sender reserves its slots ahead with ``acquire``
(it marks a message "sending" between the slot and the request) and passes
``rate_limit_args=RESERVED`` so the request is not throttled twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)

# Endpoints that never wait for a slot: answering a button must be instant, and the
# start-up/admin calls are rare.
UNTHROTTLED = frozenset(
    {
        "answerCallbackQuery",
        "getMe",
        "getUpdates",
        "setWebhook",
        "deleteWebhook",
        "getWebhookInfo",
        "setMyCommands",
        "deleteMyCommands",
        "getMyCommands",
        "leaveChat",
        "getChat",
        "getFile",
        "sendChatAction",  # the typing indicator: the sender sends it at most every few seconds a chat
        "getChatMember",
        "logOut",
        "close",
    }
)


RESERVED = "reserved"  # rate_limit_args of a request whose slots were taken with acquire()
ANSWER, HOUSEKEEPING = 0, 1
LOW_SHARE = 5  # while answers wait, every 5th overall slot goes to housekeeping


def priority_of(endpoint: str, chat_id: object) -> int:
    return ANSWER if endpoint == "sendMessage" and isinstance(chat_id, int) and chat_id > 0 else HOUSEKEEPING


@dataclass(frozen=True)
class RateLimits:
    """(count, seconds) windows. ``None`` lifts a limit (the benchmark measures the door)."""

    overall: tuple[int, float] | None = (30, 1.0)
    private: tuple[int, float] | None = (3, 2.0)  # a burst of 3, then about one a second
    group: tuple[int, float] | None = (20, 60.0)
    max_retries: int = 10  # 429s in a row for one request before giving up

    @classmethod
    def unlimited(cls) -> RateLimits:
        return cls(overall=None, private=None, group=None)


def margin_for(period: float) -> float:
    """Kept in hand on every window (10% of it, at most 0.25 s): requests leave on time but
    arrive with jitter — more of it on a busy machine — and Telegram counts arrivals."""
    return min(0.25, 0.1 * period)


class _Window:
    """Sliding window: at most ``limit`` slots in any ``period`` (+ margin); slots are
    reserved in order."""

    __slots__ = ("limit", "period", "slots", "paused_until")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period + margin_for(period)
        self.slots: deque[float] = deque(maxlen=limit)
        self.paused_until = 0.0

    def earliest(self, now: float) -> float:
        t = max(now, self.paused_until)
        if self.slots:
            t = max(t, self.slots[-1])
            if len(self.slots) == self.limit:
                t = max(t, self.slots[0] + self.period)
        return t

    def take(self, t: float) -> None:
        self.slots.append(t)


class DoorRateLimiter(BaseRateLimiter[str]):
    """Throttles sends per chat and overall; waits out 429s and retries."""

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_chats: int = 50_000,
    ) -> None:
        self.limits = limits or RateLimits()
        self._clock = clock
        self._overall = _Window(*self.limits.overall) if self.limits.overall else None
        self._chats: dict[object, _Window] = {}
        self._max_chats = max_chats
        self.waited_429 = 0  # how many 429s were waited out (for logs/tests)
        self._waiters: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())
        self._granter: asyncio.Task[None] | None = None
        self._answers_in_a_row = 0

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        self._chats.clear()

    # -- windows --------------------------------------------------------------
    def _chat_window(self, chat_id: object) -> _Window | None:
        win = self._chats.get(chat_id)
        if win is not None:
            return win
        is_group = not (isinstance(chat_id, int) and chat_id > 0)
        spec = self.limits.group if is_group else self.limits.private
        if spec is None:
            return None
        if len(self._chats) >= self._max_chats:  # forget idle chats, oldest first
            now = self._clock()
            for key in [k for k, w in self._chats.items() if not w.slots or w.slots[-1] < now - w.period][
                : self._max_chats // 4
            ]:
                del self._chats[key]
        win = self._chats[chat_id] = _Window(*spec)
        return win

    @staticmethod
    def _take(win: _Window | None, now: float) -> float:
        if win is None:
            return 0.0
        t = win.earliest(now)
        win.take(t)
        return t - now

    def _reserve_chat(self, chat_id: object | None) -> float:
        """Reserve this chat's next slot (in the chat's own order); the wait for it."""
        if chat_id is None:
            return 0.0
        return self._take(self._chat_window(chat_id), self._clock())

    def _reserve_overall(self) -> float:
        """Reserve a slot of the bot-wide window. Taken only once the chat's slot has come,
        so a chat throttled far ahead never holds back the others."""
        return self._take(self._overall, self._clock())

    async def _overall_slot(self, priority: int) -> None:
        """Wait for a bot-wide slot; answers first, housekeeping never starved."""
        if self._overall is None:
            return
        if not self._waiters[ANSWER] and not self._waiters[HOUSEKEEPING]:
            now = self._clock()
            if self._overall.earliest(now) <= now:
                self._overall.take(now)
                return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[priority].append(fut)
        if self._granter is None or self._granter.done():
            self._granter = asyncio.create_task(self._grant(), name="tg-ratelimit-grant")
        await fut

    async def _grant(self) -> None:
        assert self._overall is not None
        high, low = self._waiters
        while high or low:
            now = self._clock()
            t = self._overall.earliest(now)
            if t > now:
                await asyncio.sleep(t - now)
                continue
            if high and (not low or self._answers_in_a_row < LOW_SHARE - 1):
                fut = high.popleft()
                self._answers_in_a_row += 1
            else:
                fut = low.popleft()
                self._answers_in_a_row = 0
            if fut.done():  # the caller gave up (cancelled): the slot stays free
                continue
            self._overall.take(now)
            fut.set_result(None)

    def idle(self) -> bool:
        """True when the bot-wide budget has room to spare: nothing waits for a slot and at most
        a quarter of the window is used (housekeeping that can wait, waits for this)."""
        if self._overall is None:
            return True
        if self._waiters[ANSWER] or self._waiters[HOUSEKEEPING]:
            return False
        now = self._clock()
        used = sum(1 for t in self._overall.slots if t > now - self._overall.period)
        return used <= self._overall.limit // 4

    async def acquire(self, chat_id: object | None, priority: int = ANSWER) -> None:
        """Take this chat's next slot and a bot-wide one, waiting as needed (for callers that
        then send with ``rate_limit_args=RESERVED``)."""
        delay = self._reserve_chat(chat_id)
        if delay > 0:
            await asyncio.sleep(delay)
        await self._overall_slot(priority)

    def pause(self, chat_id: object | None, seconds: float) -> None:
        """Hold every later request for this chat (or everything, for ``None``)."""
        until = self._clock() + seconds
        win = self._overall if chat_id is None else self._chat_window(chat_id)
        if win is not None:
            win.paused_until = max(win.paused_until, until)

    # -- PTB's hook --------------------------------------------------------------------
    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: str | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        chat_id = data.get("chat_id")
        throttled = endpoint not in UNTHROTTLED
        reserved = rate_limit_args == RESERVED
        attempt = 0
        while True:
            if throttled and not reserved:
                await self.acquire(chat_id, priority_of(endpoint, chat_id))
            reserved = False  # a retry after a 429 waits for fresh slots
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                attempt += 1
                wait = exc.retry_after
                seconds = wait.total_seconds() if hasattr(wait, "total_seconds") else float(wait)
                if attempt > self.limits.max_retries:
                    log.error(
                        "%s to chat %s: still 429 after %d retries; giving up",
                        endpoint,
                        chat_id,
                        attempt - 1,
                    )
                    raise
                self.waited_429 += 1
                log.warning(
                    "%s to chat %s: 429, retrying in %.1f s (attempt %d)",
                    endpoint,
                    chat_id,
                    seconds,
                    attempt,
                )
                if chat_id is not None and throttled:
                    self.pause(chat_id, seconds)
                await asyncio.sleep(seconds)
