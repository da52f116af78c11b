"""The quote feature's per-store hub: which connection to use, the running outbox worker,
and what the runtime/doors must call to start and stop it.

The engine's actions and commands (bot.escalation.form) find the hub through the store
they were given (``escalation_for(store)``). Without ``start()`` requests are still stored
and queued (tests, ``python -m bot check``); ``start()`` adds the background worker::

    esc = await attach_escalation(runtime, settings, fetcher=..., alerter=..., lab_notifier=...)
    ...                                   # runtime.close() stops the worker
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.core.content import Content

from .ports import Alerter, FileFetcher, LabNotifier
from .store import QuoteStore
from .transport import MaildirTransport, SMTPTransport, build_transport, recipients
from .worker import OutboxWorker, RetryPolicy

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from bot.store import SQLiteStore

log = logging.getLogger(__name__)


class Escalation:
    def __init__(self, store: SQLiteStore | None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.worker: OutboxWorker | None = None
        self.channels: tuple[str, ...] = ("email",)
        self.maildir: str | None = None  # set when delivery goes to a Maildir
        # the form's settings (DEFAULT_REGION, LAB_REPLY_HOURS); the defaults until start()
        self.phone_region = Settings.default_region
        self.reply_hours = Settings.lab_reply_hours
        self._quotes: QuoteStore | None = None

    # -- connections -----------------------------------------------------------------
    @asynccontextmanager
    async def quotes(self) -> AsyncIterator[QuoteStore]:
        """The worker's connection when it runs, else a short-lived one of our own."""
        if self._quotes is not None:
            yield self._quotes
            return
        if self.store is None:
            raise RuntimeError("the quote feature needs a store")
        if self.store.path == ":memory:":
            yield QuoteStore.sharing(self.store)
            return
        qs = await QuoteStore.open(self.store.path)
        try:
            yield qs
        finally:
            await qs.close()

    # -- the worker ------------------------------------------------------------------
    async def start(
        self,
        settings: Settings,
        content: Content,
        *,
        fetcher: FileFetcher | None = None,
        alerter: Alerter | None = None,
        lab_notifier: LabNotifier | None = None,
        transport: SMTPTransport | MaildirTransport | None = None,
        policy: RetryPolicy | None = None,
        **worker_options: float,
    ) -> OutboxWorker:
        """Open the worker's connection and start delivering. ``lab_notifier`` is used only
        when LAB_CHAT_ID is set; ``alerter`` should post to AGENT_CHAT_ID (else: the log)."""
        if self.worker is not None:
            return self.worker
        if self.store is None:
            raise RuntimeError("the quote feature needs a store")
        self.phone_region = settings.default_region
        self.reply_hours = settings.lab_reply_hours
        transport = transport or build_transport(settings)
        self._quotes = (
            QuoteStore.sharing(self.store)
            if self.store.path == ":memory:"
            else await QuoteStore.open(self.store.path)
        )
        notifier = lab_notifier if settings.lab_chat_id is not None else None
        self.channels = ("email", "lab_chat") if notifier is not None else ("email",)
        self.maildir = str(transport.path) if isinstance(transport, MaildirTransport) else None
        self.worker = OutboxWorker(
            self._quotes,
            transport,
            content,
            mail_from=settings.mail_from,
            lab_emails=recipients(settings),
            fetcher=fetcher,
            alerter=alerter,
            lab_notifier=notifier,
            policy=policy,
            clock=self.clock,
            **worker_options,
        )  # type: ignore[arg-type]
        self.worker.start()
        return self.worker

    def kick(self) -> None:
        if self.worker is not None:
            self.worker.kick()

    async def close(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.stop()
        qs, self._quotes = self._quotes, None
        if qs is not None:
            await qs.close()

    def delivery_note(self) -> str:
        """For a door's banner: where quote requests go."""
        if self.worker is None:
            return "Quote requests are stored; no delivery worker runs in this process."
        return f"Quote requests go to: {self.worker.transport.description}"

    # -- photos over Telegram's download limit ------------------------------------------


_HUBS: weakref.WeakKeyDictionary[object, Escalation] = weakref.WeakKeyDictionary()
_NO_STORE = Escalation(None)


def escalation_for(store: object | None) -> Escalation:
    """The hub of ``store`` (one per store object), created on first use."""
    if store is None:
        return _NO_STORE
    hub = _HUBS.get(store)
    if hub is None:
        hub = Escalation(store)  # type: ignore[arg-type]
        _HUBS[store] = hub
    return hub


async def attach_escalation(
    runtime: Runtime,
    settings: Settings,
    *,
    fetcher: FileFetcher | None = None,
    alerter: Alerter | None = None,
    lab_notifier: LabNotifier | None = None,
    **options: object,
) -> Escalation:
    """What a door calls after ``open_runtime``: starts the outbox worker, lets the hub see
    photo sizes, and registers the stop with ``runtime.close()``."""
    hub = escalation_for(runtime.store)
    await hub.start(
        settings,
        runtime.knowledge.content,
        fetcher=fetcher,
        alerter=alerter,
        lab_notifier=lab_notifier,
        **options,
    )  # type: ignore[arg-type]
    runtime.closers.append(hub.close)
    log.info("%s", hub.delivery_note())
    return hub
