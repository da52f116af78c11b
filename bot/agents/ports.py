"""The agents feature's ports: the narrow Telegram gateway it needs, its errors, clocks.

``AgentDesk`` never imports ``telegram``: it talks to the agents' group and to users only
through :class:`GroupGateway`. ``bot/tg/agents_gateway.py`` implements it on
python-telegram-bot; ``bot/agents/memory.py`` implements it in memory for tests and the
benchmark. Clocks are injected so tests can move time (pause expiry) and the benchmark can
run Telegram's 20-messages-a-minute window faster than real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.core.messages import Reply

# -- errors a gateway raises (translated from the transport's own) ----------------------------


class GatewayError(Exception):
    """Any other failure talking to Telegram (bad request, server error, timeout)."""


class ThreadNotFound(GatewayError):
    """The forum topic was deleted ("message thread not found"): recreate it."""


class UserBlocked(GatewayError):
    """403: the user blocked the bot (or the bot is not in that chat)."""


class MessageGone(GatewayError):
    """The message to edit or pin does not exist any more (or can't be edited)."""


class NotModified(GatewayError):
    """An edit with exactly the same content: nothing to do."""


class RetryLater(GatewayError):
    """429: wait ``retry_after`` seconds before the next call to that chat."""

    def __init__(self, retry_after: float, message: str = "") -> None:
        super().__init__(message or f"retry after {retry_after}s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Sent:
    """What the gateway reports back about a message it sent."""

    message_id: int
    thread_id: int | None = None


class QuoteStates(Protocol):
    """What the desk asks the quote feature (``bot.escalation.Escalation``) for the case card."""

    async def quote_state(self, conversation_id: str) -> str:
        """failed / delivered / sent for the newest request, "" for none."""
        ...

    async def quote_changes(self, since: float) -> list[tuple[str, str, float]]:
        """(conversation id, status, when) of deliveries that changed after ``since``."""
        ...

    async def quote_case(self, conversation_id: str) -> tuple[str, str, str, str] | None:
        """(reference, device, contact, price band) of the newest request, None for none."""
        ...


class GroupGateway(Protocol):
    """Everything the desk does on Telegram. HTML text, already escaped by the caller.

    Group methods address the one agents' supergroup (``thread_id`` None = General topic)
    and are rate-limited by the desk, never by the caller. User methods address a user's
    private chat by numeric chat id.
    """

    # the agents' group (forum)
    async def create_topic(self, name: str) -> int: ...
    async def rename_topic(self, thread_id: int, name: str) -> None: ...
    async def delete_topic(self, thread_id: int) -> None: ...
    async def send(self, thread_id: int | None, html: str, buttons: Sequence[tuple[str, str]] = ()) -> Sent: ...
    async def edit(self, message_id: int, html: str, buttons: Sequence[tuple[str, str]] = ()) -> None: ...
    async def pin(self, message_id: int) -> None: ...
    async def send_document(
        self, thread_id: int | None, filename: str, data: bytes, caption_html: str = ""
    ) -> Sent: ...
    async def answer_callback(self, callback_id: str, text: str = "") -> None: ...
    async def is_member(self, user_id: int) -> bool: ...
    async def is_admin(self, user_id: int) -> bool: ...
    async def delete_messages(self, message_ids: Sequence[int], chat_id: int | None = None) -> None:
        """Delete up to 100 messages in one call (``chat_id`` None: the group; else a private
        chat). Raises ``MessageGone`` when none of them could be deleted (too old, gone)."""
        ...

    # users (private chats)
    async def send_to_user(self, chat_id: int, html: str) -> int: ...
    async def copy_to_user(self, chat_id: int, from_message_id: int, caption_html: str | None) -> int: ...
    # a user's message (photo, voice...) copied from their chat into a topic (a group call)
    async def copy_to_topic(
        self, thread_id: int | None, from_chat_id: int, message_id: int, caption_html: str | None
    ) -> Sent: ...
    async def edit_user_message(self, chat_id: int, message_id: int, html: str, caption: bool) -> None: ...
    async def send_replies(self, chat_id: int, replies: Sequence[Reply]) -> None: ...
    async def send_private(self, chat_id: int, html: str, buttons: Sequence[tuple[str, str]] = ()) -> int: ...
    async def send_private_document(self, chat_id: int, filename: str, data: bytes, caption_html: str = "") -> int: ...
    async def edit_private(self, chat_id: int, message_id: int, html: str) -> None: ...


# -- clocks ----------------------------------------------------------------------------------------


class Clock(Protocol):
    """Wall-clock seconds (``time.time`` scale) and a matching sleep."""

    def now(self) -> float: ...
    def sleep(self, seconds: float) -> Awaitable[None]: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Time that runs ``scale`` times faster than real time (benchmarks, rate-limit tests).

    ``now()`` starts at the real wall-clock time; ``sleep(60)`` at scale 100 takes 0.6 s.
    """

    def __init__(self, scale: float) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = scale
        self._t0 = time.time()
        self._m0 = time.monotonic()

    def now(self) -> float:
        return self._t0 + (time.monotonic() - self._m0) * self.scale

    def real(self, seconds: float) -> float:
        return seconds / self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)


class ManualClock:
    """Time that moves only when a test calls ``advance``; sleepers wake in order."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> asyncio.Future[None]:
        """Registered at once (not when first awaited), so an ``advance`` right after the call
        is never missed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if seconds <= 0:
            fut.set_result(None)
            return fut
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._ids), fut))
        return fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline passed; let them run."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        for _ in range(5):
            await asyncio.sleep(0)
