"""The quote feature: the quote form's actions and commands (``form``), the connection its
store uses, and the outbox worker that delivers requests to the lab.

One ``Escalation`` per runtime, passed to ``open_runtime(features=[...])``. After ``bind``
(done by ``open_runtime``) requests are stored and queued — enough for tests and
``python -m bot check``; ``start(ports)`` (``Runtime.start``) adds the background worker,
with the door's photo fetcher, the lab chat and the alerter from ``Ports``::

    quotes = Escalation(settings)
    runtime = await open_runtime(db, content_dir, flows_dir, features=[quotes])
    await runtime.start(Ports(file_fetcher=..., lab_chat=..., alerter=...))
    ...                                   # runtime.close() stops the worker
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from bot.config import Settings
from bot.core.actions import ActionFn
from bot.core.content import Content
from bot.core.engine import CommandFn

from . import form, schema
from .ports import Alerter, FileFetcher, LabNotifier
from .render import cost_label, cost_row
from .store import QuoteStore
from .transport import MaildirTransport, SMTPTransport, build_transport, recipients
from .worker import OutboxWorker, RetryPolicy

if TYPE_CHECKING:
    from bot.runtime import Core, Ports
    from bot.store import SQLiteStore

log = logging.getLogger(__name__)

# texts the feature's code uses directly (flows/quote.yaml's are checked with the flows)
REQUIRED_TEXTS = (
    "quote.photos_too_many",
    "quote.price_unknown",
    "quote.sent_where_mail",
    "quote.sent_where_maildir",
    "quote.sent_contact_both",
    "quote.sent_contact_email",
    "quote.sent_contact_phone",
    "quote.status_delivered",
    "quote.status_queued",
    "quote.status_failed",
    "quote.status_failed_alerted",
    "quote.status_draft",
    "quote.status_none",
    "quote.value.no_photos",
    "quote.value.not_given",
    "quote.value.photos",
)


class Escalation:
    """The quote feature (``bot.runtime.Feature``). ``deliver=False``: no outbox worker on
    ``start`` (requests stay queued for another process, or a test starts one itself);
    ``worker_options`` go to ``start_worker`` (``policy``, ``transport``, timings)."""

    name = "quotes"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        deliver: bool = True,
        clock: Callable[[], float] = time.time,
        **worker_options: Any,
    ) -> None:
        self.settings = settings or Settings()
        self.deliver = deliver
        self.worker_options = worker_options
        self.store: SQLiteStore | None = None
        self.content: Content | None = None
        self.clock = clock
        self.worker: OutboxWorker | None = None
        self.channels: tuple[str, ...] = ("email",)
        self.maildir: str | None = None  # set when delivery goes to a Maildir
        # the form's settings (DEFAULT_REGION, LAB_REPLY_HOURS)
        self.phone_region = self.settings.default_region
        self.reply_hours = self.settings.lab_reply_hours
        self._quotes: QuoteStore | None = None

    # -- the feature seam ----------------------------------------------------------------
    def migrations(self) -> Sequence[str]:
        return schema.BY_DIALECT

    def actions(self) -> Mapping[str, tuple[ActionFn, tuple[str, ...]]]:
        return form.make_actions(self)

    def commands(self) -> Mapping[str, CommandFn]:
        return form.make_commands(self)

    def required_texts(self) -> Sequence[str]:
        return REQUIRED_TEXTS

    def bind(self, core: Core) -> None:
        self.store = core.store
        self.content = core.content

    async def start(self, ports: Ports) -> None:
        """The outbox worker (unless ``deliver`` is off), with the door's ports."""
        if not self.deliver:
            return
        if self.content is None:
            raise RuntimeError("the quote feature is not bound to a runtime (open_runtime binds it)")
        await self.start_worker(
            self.settings,
            self.content,
            fetcher=ports.file_fetcher,
            alerter=ports.alerter,
            lab_notifier=ports.lab_chat,
            **self.worker_options,
        )
        log.info("%s", self.delivery_note())

    # -- the agents' port (bot.agents.ports.QuoteStates): reads on the store's connection -------
    async def quote_state(self, conversation_id: str) -> str:
        if self.store is None:
            return ""
        return await QuoteStore.sharing(self.store).latest_state(conversation_id)

    async def quote_changes(self, since: float) -> list[tuple[str, str, float]]:
        if self.store is None:
            return []
        return await QuoteStore.sharing(self.store).changes_since(since)

    async def quote_case(self, conversation_id: str) -> tuple[str, str, str, str] | None:
        """(reference, device, contact, price band) of the newest request, for the case card."""
        if self.store is None or self.content is None:
            return None
        qs = QuoteStore.sharing(self.store)
        latest = await qs.statuses_for(conversation_id, 1)
        rec = await qs.quote(latest[0].ref) if latest else None
        if rec is None:
            return None
        f, content = rec.fields, self.content
        contact = " · ".join(x for x in (f.email, f.phone) if x) or content.raw("quote.mail.no_contact")
        row = cost_row(content, f.damage)
        price = (
            content.text(
                "quote.mail.price_value", {"price": row.price, "days": row.days, "label": cost_label(content, row)}
            )
            if row
            else content.raw("quote.mail.price_none")
        )
        return rec.ref, f.device, contact, price

    # -- connections -----------------------------------------------------------------
    @asynccontextmanager
    async def quotes(self) -> AsyncIterator[QuoteStore]:
        """The worker's connection when it runs, else a short-lived one of our own."""
        if self._quotes is not None:
            yield self._quotes
            return
        if self.store is None:
            raise RuntimeError("the quote feature needs a store")
        qs = await QuoteStore.beside(self.store)
        try:
            yield qs
        finally:
            await qs.close()

    # -- the worker ------------------------------------------------------------------
    async def start_worker(
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
        self._quotes = await QuoteStore.beside(self.store)
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
