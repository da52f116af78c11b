"""The fake Telegram Bot API for tests, and a harness that runs the real bot against it.

The server itself has one implementation, ``bot/testing/fakeapi/`` (a package) (the benchmark uses it
outside the test suite); it is re-exported here. ``running_bot(runtime)`` starts the real
PTB ``Application`` + door (``bot.tg.service.TelegramService``) against a fresh fake, in
polling or webhook mode, and yields a ``BotUnderTest`` whose helpers push an update and
wait — on conditions, never sleeps — until the door has finished handling it.

    async with running_bot(runtime, mode="webhook") as bot:
        new = await bot.command(42, "start")
        assert new[-1].labels
        new = await bot.press(42, index=0)
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from bot.config import Settings
from bot.testing.fakeapi import (
    KNOWN_METHODS,
    SEND_METHODS,
    ApiError,
    Call,
    FakeBotAPI,
    Fault,
    RateLimitPolicy,
    SentMessage,
    Stall,
    bad_request,
    is_group_chat,
    parse_html,
    utf16_len,
)
from bot.tg.ratelimit import RateLimits
from bot.tg.service import TelegramService

WEBHOOK_SECRET = "test-secret_0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BotUnderTest:
    fake: FakeBotAPI
    service: TelegramService
    runtime: Any
    mode: str
    handled: Counter[int] = field(default_factory=Counter)

    @property
    def door(self) -> Any:
        return self.service.door

    def _on_done(self, update_id: int, chat_id: int) -> None:
        self.handled[update_id] += 1
        self.fake.notify()

    async def wait_handled(self, update: dict[str, Any], timeout: float = 5.0, times: int = 1) -> None:
        """Wait until the door has finished ``update`` (``times`` deliveries of its id)."""
        uid = update["update_id"]
        await self.fake.wait_for(lambda: self.handled[uid] >= times, timeout, f"update {uid} handled")

    async def _push(self, chat_id: int, make: Any, timeout: float = 5.0) -> list[SentMessage]:
        before = {m.message_id for m in self.fake.sent(chat_id)}
        update = make()
        await self.wait_handled(update, timeout)
        return [m for m in self.fake.sent(chat_id) if m.message_id not in before]

    async def say(self, chat_id: int, text: str, **kw: Any) -> list[SentMessage]:
        """The user types ``text``; returns the messages the bot sent in answer."""
        return await self._push(chat_id, lambda: self.fake.send_text(chat_id, text, **kw))

    async def command(self, chat_id: int, name: str, arg: str = "") -> list[SentMessage]:
        return await self._push(chat_id, lambda: self.fake.command(chat_id, name, arg))

    async def press(self, chat_id: int, **kw: Any) -> list[SentMessage]:
        return await self._push(chat_id, lambda: self.fake.press(chat_id, **kw))

    async def media(self, chat_id: int, kind: str, **kw: Any) -> list[SentMessage]:
        return await self._push(chat_id, lambda: self.fake.send_media(chat_id, kind, **kw))

    async def push(self, update: dict[str, Any]) -> None:
        """Queue a raw update and wait until the door has handled it."""
        await self.wait_handled(self.fake.push(update))

    async def settled(self, timeout: float = 5.0) -> None:
        """Wait until the door's outgoing queue is empty (everything queued was sent)."""
        sender = self.door.sender
        await self.fake.wait_for(lambda: sender.pending() == 0, timeout, "outgoing queue empty")


@asynccontextmanager
async def running_bot(
    runtime: Any,
    *,
    mode: str = "polling",
    limits: RateLimits | None = None,
    settings: Settings | None = None,
    fake: FakeBotAPI | None = None,
    **service_kw: Any,
) -> AsyncIterator[BotUnderTest]:
    """The real bot (PTB Application + door + ``runtime``'s engine) against a fake Bot API.

    ``limits`` defaults to no rate limits (tests that check limits pass their own).
    """
    own_fake = fake is None
    fake = fake or FakeBotAPI()
    if own_fake:
        await fake.start()
    try:
        base = settings or Settings()
        base = replace(
            base,
            telegram_token=fake.token,
            telegram_base_url=fake.base_url,
            telegram_base_file_url=fake.base_file_url,
        )
        kw: dict[str, Any] = {"poll_timeout": 1.0, "updates_read_timeout": 1.0, "trust_env": False}
        if mode == "webhook":
            port = free_port()
            base = replace(
                base,
                webhook_listen="127.0.0.1",
                webhook_port=port,
                webhook_url=f"http://127.0.0.1:{port}/telegram/hook",
                webhook_secret=base.webhook_secret or WEBHOOK_SECRET,
            )
        kw.update(service_kw)
        service = TelegramService(
            base,
            runtime,
            webhook=mode == "webhook",
            limits=limits or RateLimits.unlimited(),
            **kw,
        )
        bot = BotUnderTest(fake, service, runtime, mode)
        service.door.listeners.append(bot._on_done)
        service.door.sender.listeners.append(fake.notify)
        async with service:
            yield bot
    finally:
        if own_fake:
            await fake.stop()


__all__ = [
    "FakeBotAPI",
    "ApiError",
    "Call",
    "SentMessage",
    "Stall",
    "Fault",
    "RateLimitPolicy",
    "is_group_chat",
    "parse_html",
    "utf16_len",
    "bad_request",
    "SEND_METHODS",
    "KNOWN_METHODS",
    "BotUnderTest",
    "running_bot",
    "free_port",
    "WEBHOOK_SECRET",
]
