"""Builds the PTB ``Application`` around the door and runs it: polling or webhook, start to stop.

``TelegramService(settings, runtime)`` is what ``python -m bot run`` starts, and what the
tests and the benchmark start against the fake Bot API. Start: ``getMe`` (initialize), the
command menu, the other features' start hooks, the sender (messages an earlier run left
queued go out) and the intake (updates it stored but did not finish are handled first),
then polling (``deleteWebhook`` + our own ``getUpdates`` loop, ``bot.tg.intake.Poller``) or
the webhook server and ``setWebhook`` (secret token + ``allowed_updates``).

Several processes on one database (``runtime.leadership``, ``bot.store.leader``): only the
leader polls — a follower waits and takes over polling within a few seconds of the leader's
death; in webhook mode every process serves the webhook, but a follower refuses updates from
the agents' chat (503: the load balancer tries the next instance, Telegram retries), since
only the leader has the agents' desk.

Stop (bounded: ``settings.stop_drain_seconds`` + about 1 s): take no more updates (stop
polling / close the webhook server), start no new turn (stored updates wait for the next
start), finish the turns in flight until the drain deadline, let requests already on the
wire finish, leave every unsent message queued, then run every stop hook (one failing does
not keep the others from running) and shut PTB down. The caller closes the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from telegram.ext import Application, ApplicationBuilder
from telegram.request import HTTPXRequest

from bot.config import Settings
from bot.store.leader import SoleLeader, lead

from .door import ALLOWED_UPDATES, TelegramDoor
from .http import AiohttpRequest
from .intake import Intake, Poller
from .ratelimit import DoorRateLimiter, RateLimits
from .store_pg import chat_of, telegram_store
from .webhook import WebhookServer

log = logging.getLogger(__name__)

DEFAULT_WEBHOOK_PATH = "/telegram"


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_path(url: str) -> str:
    path = urlsplit(url).path
    return path if path and path != "/" else DEFAULT_WEBHOOK_PATH


def skip_missing_sniffio() -> None:
    """httpcore does ``import sniffio`` for every connection lock and falls back to asyncio
    when it is missing; a failed import is not cached, so each request searched sys.path
    (~40% of the door's CPU in the benchmark). ``None`` in sys.modules makes it fail at once."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def build_application(
    settings: Settings,
    *,
    webhook: bool = False,
    limits: RateLimits | None = None,
    updates_read_timeout: float = 5.0,
    pool_size: int = 32,
    trust_env: bool | None = None,
    http: str = "aiohttp",
    requests: list[Any] | None = None,
) -> Application:
    """The PTB Application: our transport (``http``: "aiohttp", or PTB's default "httpx"),
    our rate limiter, sequential update handling (the door parallelises across chats
    itself), no PTB updater (``bot.tg.intake`` polls)."""
    if trust_env is None:  # honour HTTP(S)_PROXY for Telegram, never for a local server
        trust_env = not is_loopback(settings.telegram_base_url)
    if http == "httpx":
        skip_missing_sniffio()
        kwargs: dict[str, Any] = {"httpx_kwargs": {"trust_env": trust_env}}
        make: Callable[..., Any] = HTTPXRequest
    else:
        kwargs = {"trust_env": trust_env}
        make = AiohttpRequest
    request = make(
        connection_pool_size=pool_size,
        connect_timeout=5.0,
        read_timeout=10.0,
        write_timeout=10.0,
        pool_timeout=5.0,
        **kwargs,
    )
    updates_request = make(
        connection_pool_size=2,
        connect_timeout=5.0,
        read_timeout=updates_read_timeout,
        write_timeout=5.0,
        pool_timeout=5.0,
        **kwargs,
    )
    if requests is not None:  # the caller closes them if start fails half-way
        requests.extend([request, updates_request])
    builder = (
        ApplicationBuilder()
        .token(settings.telegram_token)
        .base_url(settings.telegram_base_url)
        .base_file_url(settings.telegram_base_file_url)
        .request(request)
        .get_updates_request(updates_request)
        .rate_limiter(DoorRateLimiter(limits))
        .concurrent_updates(False)
        .updater(None)  # our own intake stores updates before confirming them
    )
    return builder.build()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class TelegramService:
    """One running bot: the Application, the door, the intake and (webhook mode) the HTTP server."""

    def __init__(
        self,
        settings: Settings,
        runtime: Any,
        *,
        webhook: bool = False,
        limits: RateLimits | None = None,
        poll_timeout: float = 30.0,
        updates_read_timeout: float = 5.0,
        webhook_port: int | None = None,
        max_parallel: int = 16,
        on_fatal: Callable[[BaseException], None] | None = None,
        trust_env: bool | None = None,
        http: str = "aiohttp",
        typing_after: float = 1.0,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.webhook = webhook
        self.poll_timeout = poll_timeout
        self.updates_read_timeout = updates_read_timeout
        self.on_fatal = on_fatal
        self.fatal: BaseException | None = None
        self._requests: list[Any] = []
        self.application = build_application(
            settings,
            webhook=webhook,
            limits=limits,
            updates_read_timeout=updates_read_timeout,
            trust_env=trust_env,
            pool_size=max(16, max_parallel * 3),
            http=http,
            requests=self._requests,
        )
        service_chats = [c for c in (settings.agent_chat_id, settings.lab_chat_id) if c is not None]
        self.door = TelegramDoor(
            runtime.engine,
            runtime.store,
            runtime.knowledge.content,
            service_chats=service_chats,
            max_parallel=max_parallel,
            typing_after=typing_after,
            tg_store=telegram_store(runtime.store.database),
        )
        self.door.install(self.application)
        self.intake = Intake(
            self.application, self.door.tg_store, self.door.claimed, on_done=lambda uid: self.door.notify(uid, 0),
            direct=self.door.take,
        )
        self.poller: Poller | None = None
        self.leadership = getattr(runtime, "leadership", None) or SoleLeader()
        self._polling: asyncio.Task[None] | None = None  # polls while this process leads
        self._adopting: asyncio.Task[None] | None = None
        self.adopt_every = 1.0
        self.server: WebhookServer | None = None
        self.webhook_secret = settings.webhook_secret
        self._webhook_port = settings.webhook_port if webhook_port is None else webhook_port
        self._initialized = False
        self._started = False
        # Other features' lifecycles (agents' desk, the quote outbox worker): ``on_start``
        # runs after getMe and before the first update; ``on_stop`` after the turns in
        # flight have finished and before PTB shuts down (the bot can still send).
        self.on_start: list[Callable[[], Awaitable[Any]]] = []
        self.on_stop: list[Callable[[], Awaitable[Any]]] = []

    # -- start --------------------------------------------------------------
    async def start(self) -> None:
        app = self.application
        await app.initialize()  # getMe: a bad token fails here (InvalidToken)
        self._initialized = True
        await self.door.set_commands()
        for hook in self.on_start:
            await hook()
        await app.start()
        await self.door.start_sending()
        await self.intake.start()
        if hasattr(self.door.tg_store, "adopt"):  # several instances: take over what a dead one left
            self._adopting = asyncio.ensure_future(self._adopt())
        if self.webhook:
            await self._start_webhook()
        else:
            await app.bot.delete_webhook(drop_pending_updates=False)
            if self.leadership.is_leader:
                await self._start_poller()
            self._polling = asyncio.ensure_future(lead(self.leadership, self._poll_while_leading, "polling"))
        self._started = True
        log.info(
            "Telegram bot @%s running (%s)",
            app.bot.username,
            "webhook" if self.webhook else "long polling",
        )

    async def _start_poller(self) -> None:
        self.poller = Poller(
            self._requests[1],
            self.application.bot.base_url,
            self.intake,
            timeout=self.poll_timeout,
            allowed_updates=ALLOWED_UPDATES,
            on_fatal=self._fatal,
            read_timeout=self.updates_read_timeout,
        )
        await self.poller.start()

    async def _poll_while_leading(self) -> None:
        """Polling for one term of leadership: stopped (cancelled) when this process stops leading."""
        if self.poller is None:
            await self._start_poller()
        try:
            await asyncio.Event().wait()
        finally:
            poller, self.poller = self.poller, None
            if poller is not None:
                await poller.stop()

    async def _adopt(self) -> None:
        """Every second: the updates and messages of instances that died (or handed to this
        one) are handled and sent here (``bot.tg.store_pg``)."""
        store: Any = self.door.tg_store
        while True:
            await asyncio.sleep(self.adopt_every)
            try:
                updates, jobs = await store.adopt()
            except store.errors as exc:  # the database is away: the next round tries again
                log.warning("taking over another instance's work failed: %s", exc)
                continue
            if updates:
                self.intake.take(updates)
            if jobs and self.door.sender is not None:
                self.door.sender.add(jobs)

    def _refuses(self, raw: dict[str, Any]) -> bool:
        """A follower leaves the agents' chat to the leader (webhook: answered 503)."""
        return self.settings.agent_chat_id is not None and not self.leadership.is_leader \
            and chat_of(raw) == self.settings.agent_chat_id

    async def _start_webhook(self) -> None:
        settings = self.settings
        if not settings.webhook_url:
            raise ValueError("WEBHOOK_URL is not set")
        if not self.webhook_secret:
            self.webhook_secret = secrets.token_urlsafe(32)
            log.warning("WEBHOOK_SECRET is not set: using a random secret for this run")
        self.server = WebhookServer(
            self.application,
            self.intake,
            listen=settings.webhook_listen,
            port=self._webhook_port,
            path=webhook_path(settings.webhook_url),
            secret=self.webhook_secret,
            health=self.health,
            refuse=self._refuses,
        )
        await self.server.start()  # listen first, then tell Telegram where
        await self.application.bot.set_webhook(
            settings.webhook_url,
            secret_token=self.webhook_secret,
            allowed_updates=list(ALLOWED_UPDATES),
            drop_pending_updates=False,
            max_connections=40,
        )

    def _fatal(self, exc: BaseException) -> None:
        self.fatal = exc
        if self.on_fatal:
            self.on_fatal(exc)

    @property
    def polling(self) -> bool:
        return self.poller is not None and self.poller.running

    async def health(self) -> dict[str, Any]:
        leading = self.leadership.is_leader  # a follower in polling mode waits: that is healthy
        ok = self.application.running and (self.webhook or self.polling or not leading)
        db = "ok"
        try:
            await self.runtime.store.database.fetchone("SELECT 1")  # SQLite or PostgreSQL alike
        except Exception as exc:
            db, ok = type(exc).__name__, False
        return {
            "ok": ok,
            "mode": "webhook" if self.webhook else "polling",
            "db": db,
            "leader": leading,
            "in_flight": self.door.in_flight,
            "queued": self.door.sender.pending() if self.door.sender else 0,
        }

    # -- stop --------------------------------------------------------------
    async def stop(self) -> None:
        """Stop taking updates, finish the turns in flight (bounded), leave unsent messages
        queued, run every stop hook, shut PTB down. Safe to call twice."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.stop_drain_seconds
        app = self.application
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        if self.server is not None:
            steps.append(("the webhook server", self.server.stop))
        if self._polling is not None:
            polling, self._polling = self._polling, None
            steps.append(("polling", lambda: _cancel(polling)))
        if self.poller is not None:
            steps.append(("polling", self.poller.stop))
        if self._adopting is not None:
            adopting, self._adopting = self._adopting, None
            steps.append(("taking over", lambda: _cancel(adopting)))
        steps.append(("the intake", self.intake.stop))
        for name, step in steps:
            await self._step(name, step)
        self.door.stop_taking()
        if not await self.door.drain(timeout=max(0.0, deadline - loop.time())):
            log.warning("%d turn(s) still running at the drain deadline; their updates stay stored", self.door.in_flight)
        await self._step("the sender", lambda: self.door.stop_sending(min(deadline, loop.time() + 2.0)))
        hooks, self.on_stop = self.on_stop, []
        for hook in reversed(hooks):
            await self._step(getattr(hook, "__qualname__", str(hook)), hook)
        if app.running:
            await self._step("PTB", app.stop)
        if self._initialized:
            self._initialized = False
            await self._step("PTB shutdown", app.shutdown)
        else:  # start failed inside initialize (e.g. getMe refused): close the transports
            for request in self._requests:
                await self._step("a transport", request.shutdown)
        log.info("Telegram bot stopped")

    @staticmethod
    async def _step(name: str, fn: Callable[[], Awaitable[Any]]) -> None:
        """One part of the stop; a failure is logged and the stop goes on."""
        try:
            await asyncio.wait_for(fn(), timeout=5.0)
        except Exception:  # one part failing to stop must not keep the rest open
            log.exception("stopping %s failed", name)

    async def __aenter__(self) -> TelegramService:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
