"""Delivers the durable outgoing queue (``bot.tg.store``) to Telegram, in order per chat.

One worker per chat with something to send: answers first (``ANSWER`` jobs in id order), then
housekeeping (the pressed message's "» choice" edit, an old keyboard's retirement). Each job
takes its slots from the shared rate limiter first (``acquire``: the chat's ~1/s and the bot's
~30/s, answers granted before housekeeping and the agents' group), then leaves through the
queue's own transport (``bot.tg.wire``, ``rate_limit_args=RESERVED`` so it is not throttled
twice): a message (``sendMessage``) is marked ``sending`` in the very moment its request is
written — the transport has its connection and its bytes ready, the store commits the mark and
the bytes go into the socket with nothing in between (``TelegramStore.mark_then``), so a kill
-9 finds a marked message unsent only in that gap. (Behind an HTTP(S) proxy, which that
transport does not speak, the bot's own transport is used, marked just before; a wider gap.)
When Telegram answers, the outcome is recorded (``settle``). Retiring an old keyboard
is the laziest job: it waits until no user waits for an answer and the bot-wide budget is
at most a quarter used.

Failures: 429 is waited out by the limiter; 403 means the user blocked the bot (the chat's
jobs are dropped, the door marks the conversation inactive); 400 is logged and the job
failed ("message is not modified" on an edit counts as done); a 5xx answer or a request that
never reached the server (no connection) is sent again after a back-off; a request that may
have reached Telegram (read timeout, connection lost mid-request) is **not** sent again blindly:
it is ``unsure`` and logged.

The typing indicator: while a chat waits for an answer (the door calls ``expect`` when a
turn starts) longer than ``typing_after`` seconds — a slow turn, a full budget, a 429 —
``sendChatAction(typing)`` is sent, again every ``TYPING_EVERY`` s while it still waits. It
is not a message: it does not spend the message budget. It and the door's button toasts
(``answerCallbackQuery``) leave through ``call``: the rate limiter's ``process_request`` (no
slot for these endpoints; a 429 waited out) and the queue's transport with a plain JSON body,
no PTB objects built, no mark (the bot's own transport behind a proxy).

``stop(deadline)``: no new job starts; requests already on the wire get until the deadline to
finish; everything else stays queued in the database for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from .http import JSONRequestData, never_reached_server, server_refused
from .ratelimit import RESERVED
from .store import ANSWER, HOUSEKEEPING, Job, TelegramStore
from .wire import GuardedRequestData, WireRequest

log = logging.getLogger(__name__)

NO_PREVIEW = {"is_disabled": True}
MAX_ATTEMPTS = 8  # a job refused (5xx / no connection) this often in a row is given up
TYPING_EVERY = 4.5  # Telegram shows "typing…" for about 5 s
TYPING_PER_TICK = 5  # indicators per 0.25 s at most
LAZY_WAIT = 1.0  # how often a deferred keyboard retirement looks for spare budget


def _nothing() -> None:
    return None


def markup_of(rows: list[list[list[str]]] | None) -> dict[str, Any] | None:
    """A stored keyboard ([[label, data], ...] rows) as the Bot API's ``reply_markup``."""
    if not rows:
        return None
    return {"inline_keyboard": [[{"text": label, "callback_data": data} for label, data in row] for row in rows]}


def request_of(job: Job) -> tuple[str, dict[str, Any]] | None:
    """The Bot API method and its parameters for a job (plain JSON: no PTB objects built)."""
    body = job.body
    if job.kind == "send":
        return "sendMessage", {
            "chat_id": job.chat_id,
            "text": body["html"],
            "parse_mode": ParseMode.HTML.value,
            "reply_markup": markup_of(body.get("keyboard")),
            "link_preview_options": NO_PREVIEW,
            "message_thread_id": body.get("thread_id"),
        }
    if job.kind == "edit" and body.get("html") is not None:
        return "editMessageText", {
            "chat_id": job.chat_id,
            "message_id": body["message_id"],
            "text": body["html"],
            "parse_mode": ParseMode.HTML.value,
            "reply_markup": markup_of(body.get("keyboard")),
            "link_preview_options": NO_PREVIEW,
        }
    if job.kind in ("edit", "retire"):  # a retired keyboard: no reply_markup at all
        keyboard = body.get("keyboard") if job.kind == "edit" else None
        return "editMessageReplyMarkup", {"chat_id": job.chat_id, "message_id": body["message_id"], "reply_markup": markup_of(keyboard)}
    return None


class Sender:
    def __init__(
        self,
        bot: Any,
        store: TelegramStore,
        limiter: Any,
        *,
        on_blocked: Callable[[int, Exception], Any] | None = None,
        on_answer: Callable[[int, bool], None] | None = None,
        retry_delay: float = 0.5,
        typing_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_on_wire: int = 24,
    ) -> None:
        self.bot = bot
        # connections for requests waiting for or on the wire, apart per priority: housekeeping
        # waiting for its (rarer) rate-limit slots must never hold the connections answers need
        housekeeping = max(1, max_on_wire // 3)
        self._max_on_wire = max_on_wire
        self._wire_slots = {ANSWER: asyncio.Semaphore(max_on_wire - housekeeping), HOUSEKEEPING: asyncio.Semaphore(housekeeping)}
        self.store = store
        self.limiter = limiter
        self.on_blocked = on_blocked
        # (chat, delivered) when an answer (a message to a user) is sent, or given up for good
        self.on_answer = on_answer
        self.retry_delay = retry_delay
        self.typing_after = typing_after
        self.clock = clock
        self._jobs: dict[int, deque[Job]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._on_wire: set[asyncio.Task[Any]] = set()
        self._waiting: dict[int, asyncio.Future[None]] = {}  # job id -> done
        self._current: dict[int, int] = {}  # chat -> the job on the wire
        self._nudge: dict[int, asyncio.Event] = {}  # chat -> set when a job is added
        self._expect: dict[int, float] = {}  # chat -> since when an answer is awaited
        self._typing_sent: dict[int, float] = {}
        self._typing_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.listeners: list[Callable[[], None]] = []  # told whenever a job finished
        self.wire: WireRequest | None = None  # the queue's own transport (start)
        self.sent = 0
        self.typing = 0  # typing indicators sent (tests, bench)
        self.unsure = 0

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> int:
        """Load what an earlier run left queued; returns how many jobs that is."""
        await self.store.open()
        if WireRequest.usable_for(self.bot.base_url):
            # the queue's requests, and toasts and typing indicators (``call``) beside them
            self.wire = WireRequest(connection_pool_size=self._max_on_wire + 16)
            await self.wire.initialize()
        else:
            log.info("an HTTP(S) proxy applies to the Bot API: messages go out through the bot's own transport")
        jobs, unsure = await self.store.recover()
        if unsure:
            self.unsure += unsure
            log.warning("%d message(s) were being sent when the bot stopped: not sent again (they may have arrived)", unsure)
        self.add(jobs)
        self._typing_task = asyncio.create_task(self._typing_loop(), name="tg-typing")
        if jobs:
            log.info("%d queued message(s) from the last run go out now", len(jobs))
        return len(jobs)

    async def stop(self, deadline: float) -> None:
        """Start nothing new; let requests on the wire finish until ``deadline`` (clock time)."""
        self._stopping = True
        if self._typing_task is not None:
            self._typing_task.cancel()
        waiting = [t for t in self._workers.values() if not t.done()]
        if self._on_wire:
            remaining = max(0.0, deadline - self.clock())
            await asyncio.wait(set(self._on_wire), timeout=remaining)
        for task in waiting:
            task.cancel()
        if waiting:
            await asyncio.wait(waiting, timeout=1.0)
        if self._typing_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._typing_task
        if self.wire is not None:
            await self.wire.shutdown()
        await self.store.close()
        left = sum(len(q) for q in self._jobs.values())
        if left:
            log.info("%d message(s) stay queued for the next start", left)

    # -- queueing --------------------------------------------------------------
    def add(self, jobs: Iterable[Job]) -> None:
        loop = asyncio.get_running_loop()
        for job in jobs:
            self._jobs.setdefault(job.chat_id, deque()).append(job)
            self._waiting.setdefault(job.id, loop.create_future())
            nudge = self._nudge.get(job.chat_id)
            if nudge is not None:
                nudge.set()
            if self._stopping:
                continue
            worker = self._workers.get(job.chat_id)
            if worker is None or worker.done():
                self._workers[job.chat_id] = asyncio.create_task(self._work(job.chat_id), name=f"tg-send-{job.chat_id}")

    def done_future(self, jobs: Iterable[Job]) -> asyncio.Future[Any] | None:
        """A future that completes when all ``jobs`` are finished (sent, failed or given up)."""
        futs = [f for f in (self._waiting.get(job.id) for job in jobs) if f is not None]  # missing: done
        return asyncio.gather(*futs) if futs else None

    def pending(self, chat_id: int | None = None) -> int:
        if chat_id is not None:
            return len(self._jobs.get(chat_id, ()))
        return sum(len(q) for q in self._jobs.values())

    def expect(self, chat_id: int, since: float | None = None) -> None:
        """A user in ``chat_id`` waits for an answer (since ``since``)."""
        self._expect.setdefault(chat_id, self.clock() if since is None else since)

    def answered(self, chat_id: int) -> None:
        if not any(j.priority == ANSWER for j in self._jobs.get(chat_id, ())):
            self._expect.pop(chat_id, None)
            self._typing_sent.pop(chat_id, None)

    def idle(self) -> bool:
        """No user waits for an answer and the bot-wide budget has room: the moment for work
        nobody waits for (retiring an old keyboard — a stale press is detected anyway)."""
        return not self._expect and self.limiter.idle()

    # -- the per-chat worker --------------------------------------------------------------
    def _next(self, chat_id: int) -> Job | None:
        q = self._jobs.get(chat_id)
        if not q:
            return None
        for job in q:
            if job.priority == ANSWER:
                return job
        for job in q:  # an old keyboard's retirement waits for a quiet moment: not in front
            if job.kind != "retire":
                return job
        return q[0]

    def _finish(self, job: Job) -> None:
        q = self._jobs.get(job.chat_id)
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(job)
            if not q:
                del self._jobs[job.chat_id]
                self._nudge.pop(job.chat_id, None)
        fut = self._waiting.pop(job.id, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
        if job.priority == ANSWER:
            self.answered(job.chat_id)
        for listener in self.listeners:
            listener()

    async def _work(self, chat_id: int) -> None:
        while not self._stopping:
            try:
                await self._work_once(chat_id)
                return
            except self.store.errors as exc:  # the database is busy or failing: the jobs stay queued
                log.error("sending to %s paused: %s", chat_id, exc)
                await asyncio.sleep(1.0)

    async def _work_once(self, chat_id: int) -> None:
        delay = self.retry_delay
        while not self._stopping:
            job = self._next(chat_id)
            if job is None:
                return
            if job.kind == "retire" and not self.idle():
                await self._nudged(chat_id, LAZY_WAIT)  # an old keyboard can wait for a quiet moment
                continue
            # a wire slot first (fewer requests at once than the transport has connections),
            # then the rate-limit slot; the transport then takes its connection and builds the
            # request, and the mark and the write happen together (bot.tg.wire)
            async with self._wire_slots[ANSWER if job.priority == ANSWER else HOUSEKEEPING]:
                if job.priority == ANSWER:
                    await self.limiter.acquire(chat_id, job.priority)
                elif not await self._acquire_unless_answered(chat_id, job.priority):
                    continue  # an answer for this chat came in meanwhile: it goes first
                if self._stopping:
                    return
                self._current[chat_id] = job.id
                wire = asyncio.create_task(self._call(job))  # not cancelled by stop(): it finishes
                self._on_wire.add(wire)
                wire.add_done_callback(self._on_wire.discard)
                status, message_id, error = await asyncio.shield(wire)
            if status == "pending":
                if job.attempts + 1 >= MAX_ATTEMPTS:
                    status = "failed"
                    log.error("message %s to %s given up after %d attempts: %s", job.id, chat_id, job.attempts + 1, error)
                else:
                    job = self._bump(job)
            if status == "pending":
                await self._settle(job, status, message_id, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = self.retry_delay
            if status == "sent":
                self.sent += 1
            elif status == "unsure":
                self.unsure += 1
            if job.kind == "send" and job.priority == ANSWER and status in ("sent", "failed") and self.on_answer is not None:
                self.on_answer(job.chat_id, status == "sent")
            if status == "blocked":
                self.add(await self._settle(job, status, message_id, error))
                await self._blocked(chat_id, error)
                self._finish(job)
                continue
            # the outcome is recorded in the background (the next message need not wait for
            # it); a stop waits for it — if it is cut short the message stays marked: not resent
            record = asyncio.create_task(self._record(job, status, message_id, error))
            self._on_wire.add(record)
            record.add_done_callback(self._on_wire.discard)
            self._finish(job)

    async def _acquire_unless_answered(self, chat_id: int, priority: int) -> bool:
        """Housekeeping's rate-limit slot; given up (False) as soon as an answer for the same
        chat is queued, so a user never waits behind their own chat's tidying up."""
        nudge = self._nudge.setdefault(chat_id, asyncio.Event())
        acquire = asyncio.ensure_future(self.limiter.acquire(chat_id, priority))
        try:
            while True:
                nudge.clear()
                if any(j.priority == ANSWER for j in self._jobs.get(chat_id, ())):
                    return False
                nudged = asyncio.ensure_future(nudge.wait())
                try:
                    await asyncio.wait({acquire, nudged}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    nudged.cancel()
                if acquire.done():
                    acquire.result()
                    return True
        finally:
            if not acquire.done():
                acquire.cancel()  # the limiter skips a cancelled waiter: its slot stays free
                with contextlib.suppress(asyncio.CancelledError):
                    await acquire

    async def _record(self, job: Job, status: str, message_id: int | None, error: str) -> None:
        retire = await self._settle(job, status, message_id, error)
        if not self._stopping:
            self.add(retire)

    async def _settle(self, job: Job, status: str, message_id: int | None, error: str) -> list[Job]:
        """Record the outcome; the request is done, so a busy database is waited out, never
        answered by sending again."""
        while True:
            try:
                return await self.store.settle([(job, status, message_id, error)])
            except self.store.errors as exc:
                log.error("recording message %s failed (%s); retrying", job.id, exc)
                await asyncio.sleep(0.5)

    async def _nudged(self, chat_id: int, timeout: float) -> None:
        """Wait until a job is added for this chat, or ``timeout``."""
        ev = self._nudge.setdefault(chat_id, asyncio.Event())
        ev.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout)

    def _bump(self, job: Job) -> Job:
        q = self._jobs.get(job.chat_id)
        bumped = Job(job.id, job.chat_id, job.kind, job.priority, job.body, job.update_id, job.attempts + 1, job.created_at)
        if q is not None:
            for i, j in enumerate(q):
                if j.id == job.id:
                    q[i] = bumped
        return bumped

    async def _blocked(self, chat_id: int, error: str) -> None:
        for job in list(self._jobs.get(chat_id, ())):
            if job.id != self._current.get(chat_id):
                self._finish(job)
        await self.store.drop_chat(chat_id, "blocked")
        if self.on_blocked is not None:
            await self.on_blocked(chat_id, Forbidden(error))

    async def _call(self, job: Job) -> tuple[str, int | None, str]:
        """One Bot API call; (status, message id, error) — status: sent | pending | failed |
        unsure | blocked."""
        body = job.body
        try:
            request = request_of(job)
            if request is None:
                log.error("unknown outgoing job kind %r (job %s): dropped", job.kind, job.id)
                return "failed", None, f"unknown kind {job.kind}"
            method, payload = request
            # a message is marked "sending" as its request is written (edits are idempotent:
            # sent again after a kill, no harm)
            ids = [job.id] if job.kind == "send" else None
            result = await self.limiter.process_request(self._post, (method, payload, ids), {}, method, payload, RESERVED)
            if job.kind == "send":
                return "sent", int(result["message_id"]), ""  # type: ignore[index]
            return "sent", int(body["message_id"]), ""
        except Forbidden as exc:
            return "blocked", None, exc.message
        except BadRequest as exc:
            if job.kind != "send" and "not modified" in exc.message.lower():
                return "sent", int(body["message_id"]), ""
            level = logging.ERROR if job.kind == "send" else logging.INFO
            log.log(level, "Telegram refused %s %s to %s: %s", job.kind, job.id, job.chat_id, exc.message)
            return "failed", None, exc.message
        except RetryAfter as exc:  # the limiter's retries are used up: later
            return "pending", None, str(exc)
        except NetworkError as exc:  # includes TimedOut
            if never_reached_server(exc) or server_refused(exc):
                log.warning("%s %s to %s failed (%s); retrying", job.kind, job.id, job.chat_id, exc)
                return "pending", None, str(exc)
            log.error(
                "%s %s to %s: no answer from Telegram (%s); not sent again, it may have arrived", job.kind, job.id, job.chat_id, exc
            )
            return "unsure", None, str(exc)
        except TelegramError as exc:
            log.error("%s %s to %s failed: %s", job.kind, job.id, job.chat_id, exc)
            return "failed", None, str(exc)

    async def _post(self, method: str, payload: dict[str, Any], mark: list[int] | None) -> Any:
        """The request itself (PTB turns errors into exceptions), the jobs ``mark`` marked
        ``sending`` as it is written; the rate limiter wraps it (slots already reserved; a 429
        is waited out and sent again — marked again)."""
        url = f"{self.bot.base_url}/{method}"
        if self.wire is None:  # the bot's transport: marked first, then the request leaves
            if mark:
                await self.store.mark_then(mark, _nothing)
            return await self.bot.request.post(url, JSONRequestData(payload))
        if not mark:
            return await self.wire.post(url, JSONRequestData(payload))
        return await self.wire.post(url, GuardedRequestData(payload, partial(self.store.mark_then, mark)))

    # -- typing --------------------------------------------------------------
    async def _typing_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.25)
            now = self.clock()
            budget = TYPING_PER_TICK  # cosmetic: never more than ~20 a second, even when overloaded
            for chat_id, since in list(self._expect.items()):
                if budget <= 0:
                    break
                if now - since < self.typing_after:
                    continue
                if now - self._typing_sent.get(chat_id, -1e9) < TYPING_EVERY:
                    continue
                self._typing_sent[chat_id] = now
                budget -= 1
                task = asyncio.create_task(self._type(chat_id))
                self._on_wire.add(task)
                task.add_done_callback(self._on_wire.discard)

    async def call(self, method: str, payload: dict[str, Any]) -> Any:
        """A request that is not a queued message (a button's toast, the typing indicator):
        through the rate limiter (for these endpoints: no slot, 429s waited out) and the queue's
        transport — no PTB objects built — or the bot's own behind a proxy. Raises PTB's errors."""
        return await self.limiter.process_request(self._post, (method, payload, None), {}, method, payload, None)

    async def _type(self, chat_id: int) -> None:
        try:
            await self.call("sendChatAction", {"chat_id": chat_id, "action": ChatAction.TYPING.value})
            self.typing += 1
        except TelegramError as exc:  # cosmetic
            log.info("typing indicator for %s failed: %s", chat_id, exc)
