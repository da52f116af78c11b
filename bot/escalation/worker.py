"""The outbox worker: delivers stored quote requests to the lab, durably, in the background.

Outside the engine: it reads the outbox rows the quote form wrote (``QuoteStore``) and
delivers them through a ``Transport`` (SMTP or Maildir), the optional ``LabNotifier`` (lab
chat) and tells people about failures through an ``Alerter`` (agents' chat).

Guarantees (docs/quotes.md):
* nothing is lost — a row stays in the outbox until the server accepted it, failed for good
  (then it is kept, marked failed and a person is alerted), or an operator retries it;
* a row is sent by one process at a time (a lease naming host and pid; a dead owner's
  leases are taken back at start);
* the Message-ID is fixed before the first attempt, so every copy of one request carries
  the same one; the only window for a second copy is the server taking the message while
  the connection dies before its "250" reaches us, or a crash between "250" and the commit.

``start()`` / ``await stop()`` run it as an asyncio task; ``kick()`` wakes it at once (a new
request); ``run_once()`` is one pass, for tests and the command line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.core.content import Content

from .ports import (
    TELEGRAM_DOWNLOAD_LIMIT,
    Alerter,
    FileFetcher,
    FileTooLarge,
    LabNotifier,
    LoggingAlerter,
    OutboxRow,
    PhotoPart,
)
from .reference import message_id as make_message_id
from .render import MAIL_ATTACHMENT_BUDGET, build_email, lab_chat_text
from .rowmap import local_owner_prefix
from .store import QuoteStore
from .transport import DeliveryError, Session, Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with a cap and jitter.

    Per message (4xx answers, connections lost mid-message): ``base * factor**(n-1)`` capped at
    ``cap``, then failed after ``max_attempts``. The server as a whole (unreachable, refuses
    the session): ``server_base``... ``server_cap``; rows are not charged for an outage.
    """

    base: float = 10.0
    factor: float = 2.0
    cap: float = 900.0
    max_attempts: int = 12
    jitter: float = 0.5  # the delay is drawn from [(1 - jitter) * d, d]
    server_base: float = 1.0
    server_cap: float = 60.0

    def delay(self, attempts: int, rnd: float) -> float:
        d = min(self.cap, self.base * self.factor ** max(attempts - 1, 0))
        return d * (1 - self.jitter * rnd)

    def server_delay(self, failures: int, rnd: float) -> float:
        d = min(self.server_cap, self.server_base * self.factor ** max(failures - 1, 0))
        return d * (1 - self.jitter * rnd)


class OutboxWorker:
    def __init__(
        self,
        quotes: QuoteStore,
        transport: Transport,
        content: Content,
        *,
        mail_from: str,
        lab_emails: Sequence[str],
        fetcher: FileFetcher | None = None,
        alerter: Alerter | None = None,
        lab_notifier: LabNotifier | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        concurrency: int = 4,
        batch: int = 200,
        poll: float = 5.0,
        lease: float = 900.0,
        fetch_timeout: float = 20.0,
        outage_alert_after: float = 600.0,
        alerts: bool = True,
    ) -> None:
        self.quotes = quotes
        self.transport = transport
        self.content = content
        self.mail_from = mail_from
        self.lab_emails = tuple(lab_emails)
        self.fetcher = fetcher
        self.alerter: Alerter = alerter or LoggingAlerter()
        self.alerter_is_person = alerter is not None
        self.lab_notifier = lab_notifier
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.rng = rng
        self.concurrency = max(1, concurrency)
        self.batch = max(1, batch)
        self.poll = poll
        self.lease = lease
        self.fetch_timeout = fetch_timeout
        self.outage_alert_after = outage_alert_after
        self.alerts = alerts  # False: leave alerts to the bot's own worker (command line)
        self.owner = f"{local_owner_prefix()}{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._server_failures = 0
        self._server_retry_at = 0.0
        self._down_since: float | None = None
        self._outage_alerted = False
        self._last_error = ""
        self._waiting = 0
        self._recovered_note = ""
        self.delivered = 0  # counters for tests, the bench and logs
        self.passes = 0

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="quote-outbox")
            log.info("quote outbox worker started: %s", self.transport.description)

    async def stop(self, grace: float = 10.0) -> None:
        """Let the current pass finish (up to ``grace`` seconds), then end the task."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=grace)
        except TimeoutError:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.quotes.release_owner(self.owner, self.clock())
        log.info("quote outbox worker stopped")

    def kick(self) -> None:
        """Something new is due: look now (a server backoff still applies)."""
        self._wake.set()

    @property
    def server_down(self) -> bool:
        return self._down_since is not None

    async def _run(self) -> None:
        n = await self.quotes.reclaim_dead(self.clock())
        if n:
            log.warning("took back %d outbox row(s) from a process that died while sending", n)
        while not self._stopping:
            self._wake.clear()  # a kick during the pass below makes the next wait end at once
            busy, pause = False, 0.0
            try:
                busy = await self.run_once() >= self.batch
            except asyncio.CancelledError:
                raise
            except Exception:  # the worker must outlive any single bad row or database hiccup
                log.exception("quote outbox pass failed")
                pause = min(self.poll, 1.0)
            if busy:
                continue
            try:
                wait = await self._wait_time()
            except Exception:
                log.exception("quote outbox: cannot read the next due time")
                wait = self.poll
            await self._sleep(max(wait, pause))

    async def _wait_time(self) -> float:
        now = self.clock()
        if self.server_down:
            return max(0.0, self._server_retry_at - now)
        due = await self.quotes.next_due()
        wait = self.poll if due is None else max(0.0, min(self.poll, due - now))
        return wait

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass

    # -- one pass ------------------------------------------------------------------
    async def run_once(self, ref: str | None = None, channel: str | None = None) -> int:
        """Deliver what is due now (or only ``ref``'s rows); return how many rows were claimed."""
        self.passes += 1
        now = self.clock()
        if self.server_down and now < self._server_retry_at and ref is None:
            await self._send_alerts()
            return 0
        rows = await self.quotes.claim(
            now, self.owner, self.lease, self.batch, ref=ref, channel=channel
        )
        if rows:
            mail_rows = [r for r in rows if r.channel == "email"]
            other = [r for r in rows if r.channel != "email"]
            if mail_rows:
                await self._deliver_mail(mail_rows)
            for row in other:
                await self._deliver_chat(row)
        await self._send_alerts()
        return len(rows)

    async def _deliver_mail(self, rows: list[OutboxRow]) -> None:
        queue = deque(rows)
        server_error: list[str] = []
        progress = 0

        async def lane() -> None:
            nonlocal progress
            session: Session | None = None
            strikes = 0  # server-level failures in a row on this lane
            try:
                while queue and strikes < 2:
                    if session is None:
                        try:
                            session = await self.transport.open()
                        except DeliveryError as exc:
                            server_error.append(str(exc))
                            return
                    row = queue.popleft()
                    outcome = await self._deliver_one(session, row)
                    if outcome == "server":  # the session broke before the message went out
                        queue.appendleft(row)
                        server_error.append(self._last_error)
                        strikes += 1
                    else:
                        progress += 1
                        strikes = 0
                    if outcome != "ok":
                        await session.close()
                        session = None
            finally:
                if session is not None:
                    await session.close()

        await asyncio.gather(*(lane() for _ in range(min(self.concurrency, len(rows)))))
        now = self.clock()
        if queue:  # the server could not take them: an outage, not the messages' fault
            err = server_error[-1] if server_error else "server unreachable"
            await self.quotes.release([r.id for r in queue], self.owner, err, now)
            self._server_failed(err, now, waiting=len(queue))
        elif progress:
            self._server_ok(now)

    async def _deliver_one(self, session: Session, row: OutboxRow) -> str:
        """Send one row on an open session: 'ok', 'reconnect' (session spent) or 'server'."""
        rec = await self.quotes.quote(row.ref)
        now = self.clock()
        if rec is None:  # pragma: no cover - foreign keys keep quotes and outbox together
            await self.quotes.mark_failed(
                row.id, self.owner, "the request is missing", "permanent", now
            )
            return "ok"
        mid = row.message_id or await self.quotes.set_message_id(
            row.id, make_message_id(rec.ref, rec.created_at, self.mail_from)
        )
        photos = await self._photos(rec.ref)
        msg = build_email(
            rec,
            self.content,
            message_id=mid,
            mail_from=self.mail_from,
            to=self.lab_emails,
            photos=photos,
        )
        try:
            accepted = await session.send(msg, self.mail_from, self.lab_emails, key=rec.ref)
        except DeliveryError as exc:
            if exc.kind == "server":
                self._last_error = str(exc)
                return "server"
            await self._failed_attempt(row, exc.kind, str(exc))
            return "reconnect" if exc.kind == "ambiguous" else "ok"
        if await self.quotes.mark_delivered(row.id, self.owner, accepted, self.clock()):
            self.delivered += 1
            log.info(
                "quote %s delivered (%s): %s", rec.ref, self.transport.description, accepted[:200]
            )
        else:
            log.warning("quote %s delivered but its lease had been taken over", rec.ref)
        return "ok"

    async def _failed_attempt(self, row: OutboxRow, kind: str, error: str) -> None:
        now = self.clock()
        if kind == "permanent" or row.attempts >= self.policy.max_attempts:
            reason = (
                error if kind == "permanent" else f"gave up after {row.attempts} attempts: {error}"
            )
            await self.quotes.mark_failed(row.id, self.owner, reason, kind, now)
            log.error("quote %s (%s) failed for good: %s", row.ref, row.channel, reason)
            return
        delay = self.policy.delay(row.attempts, self.rng())
        await self.quotes.mark_retry(row.id, self.owner, error, kind, now + delay, now)
        log.warning(
            "quote %s (%s) attempt %d failed (%s), retry in %.1fs: %s",
            row.ref,
            row.channel,
            row.attempts,
            kind,
            delay,
            error,
        )

    async def _deliver_chat(self, row: OutboxRow) -> None:
        rec = await self.quotes.quote(row.ref)
        if rec is None:  # pragma: no cover
            return
        if self.lab_notifier is None:
            await self._failed_attempt(row, "temporary", "no lab chat notifier in this process")
            return
        try:
            await self.lab_notifier.notify(lab_chat_text(rec, self.content))
        except Exception as exc:  # a notifier is the door's code: any error is one failed attempt
            await self._failed_attempt(row, "temporary", f"{type(exc).__name__}: {exc}")
            return
        await self.quotes.mark_delivered(row.id, self.owner, "sent to the lab chat", self.clock())

    # -- photos ----------------------------------------------------------------------
    async def _photos(self, ref: str) -> list[PhotoPart]:
        parts: list[PhotoPart] = []
        budget = MAIL_ATTACHMENT_BUDGET
        for position, file_id, status, mime, data in await self.quotes.attachments(ref):
            if status == "pending" and self.fetcher is not None:
                status, mime, data = await self._fetch(file_id)
                if status != "pending":  # keep the outcome: every retry sends the same photos
                    await self.quotes.save_attachment(ref, position, status, mime, data)
            if status == "fetched" and data is not None:
                if len(data) > budget:
                    parts.append(PhotoPart(position, "over_budget"))
                    continue
                budget -= len(data)
                parts.append(PhotoPart(position, "fetched", bytes(data), mime or "image/jpeg"))
            else:
                parts.append(PhotoPart(position, status))
        return parts

    async def _fetch(self, file_id: str) -> tuple[str, str, bytes | None]:
        assert self.fetcher is not None
        try:
            got = await asyncio.wait_for(self.fetcher.fetch(file_id), timeout=self.fetch_timeout)
        except FileTooLarge:
            return "too_big", "", None
        except (TimeoutError, OSError, ConnectionError) as exc:
            log.warning("photo %s could not be fetched now: %s", file_id[:40], exc)
            return "pending", "", None  # try again with the next attempt, if there is one
        except Exception as exc:  # the door's code: never let it break a delivery
            log.warning(
                "photo %s could not be fetched: %s: %s", file_id[:40], type(exc).__name__, exc
            )
            return "unavailable", "", None
        if got is None:
            return "unavailable", "", None
        data, mime = got
        if len(data) > TELEGRAM_DOWNLOAD_LIMIT:
            return "too_big", "", None
        return "fetched", mime or "image/jpeg", data

    # -- the server's health and alerts -----------------------------------------------
    def _server_failed(self, error: str, now: float, waiting: int) -> None:
        self._server_failures += 1
        delay = self.policy.server_delay(self._server_failures, self.rng())
        self._server_retry_at = now + delay
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "lab mail server unreachable (%s); %d request(s) wait; retry in %.1fs",
                error,
                waiting,
                delay,
            )
        else:
            log.info("lab mail server still unreachable (%s); retry in %.1fs", error, delay)
        self._last_error = error
        self._waiting = waiting

    def _server_ok(self, now: float) -> None:
        if self._down_since is not None:
            log.info("lab mail server reachable again after %.0fs", now - self._down_since)
            if self._outage_alerted:
                self._recovered_note = (
                    "The lab's mail server is reachable again; waiting quote requests "
                    "are being delivered."
                )
        self._server_failures = 0
        self._server_retry_at = 0.0
        self._down_since = None
        self._outage_alerted = False

    async def _send_alerts(self) -> None:
        if not self.alerts:
            return
        if self._recovered_note:
            text, self._recovered_note = self._recovered_note, ""
            await self._alert(text)
        if (
            self._down_since is not None
            and not self._outage_alerted
            and self.clock() - self._down_since >= self.outage_alert_after
        ):
            self._outage_alerted = True
            await self._alert(
                f"The lab's mail server ({self.transport.description}) has been unreachable for "
                f"{int(self.clock() - self._down_since)} s: {self._last_error}. "
                f"{self._waiting} quote request(s) are waiting; they are kept and go out "
                "when it is back."
            )
        for row in await self.quotes.pending_alerts():
            what = "e-mail to the lab" if row.channel == "email" else "lab chat summary"
            ok = await self._alert(
                f"Quote request {row.ref} could not be delivered ({what}): {row.last_error[:300]}. "
                f"It is kept. Fix the cause, then: python -m bot outbox retry {row.ref}"
            )
            if ok:
                await self.quotes.set_alert_state(
                    row.id, "sent" if self.alerter_is_person else "logged"
                )

    async def _alert(self, text: str) -> bool:
        try:
            await self.alerter.alert(text)
            return True
        except Exception:  # the agents' chat may be down too: keep the alert pending
            log.exception("could not alert the agents' chat")
            return False
