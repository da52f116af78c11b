"""Durable intake: every update is stored in ``tg_inbox`` before Telegram is told it arrived,
then handed over in the order it came: to the door straight from its dict (``direct``:
``TelegramDoor.take``), or else to PTB (``Application.process_update``: the agents' handler,
then the door).

* ``Intake.accept(raw updates)`` stores a batch (one transaction, every user text redacted
  first) and queues the new ones — the redacted dict itself, not its JSON read back; a
  repeat (Telegram redelivering after a kill) is ignored. Polling confirms a batch only by
  asking for the next offset after ``accept`` returned; the webhook answers 200 only after it.
* ``Intake.run`` hands each stored update over on its own. The door takes the updates it
  owns and can read (private chats' messages and presses, groups it leaves) without PTB
  objects; the rest (the agents' and lab chats, what another handler may want, what the door
  cannot read) goes through ``Update.de_json`` + ``process_update``. One that cannot be read
  (a hostile or broken update) is logged once, by id, without its content, and marked done
  ("bad") — it never stops the others. An update no handler claims (service messages, the
  agents' chat) is marked done here; the door marks its own updates done in their turn's
  transaction.
* A press carries the pressed message: the bot's own text, the same few texts again and
  again. Its redaction is memoised (``_redact_bots_text``, bounded); a user's text never
  goes through that cache.
* ``Poller`` replaces PTB's updater loop: ``getUpdates`` with back-off (1 s × 1.5, at most
  30 s; a stop interrupts it at once). A 401 is fatal (``on_fatal``: the process exits 2);
  429 waits ``retry_after``; 409 (a webhook is set, or another poller) is logged and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from telegram import Update
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.request import BaseRequest, RequestData
from telegram.request._requestparameter import RequestParameter

from bot.core.redact import gate_text, redact_payload

from .store import TelegramStore

log = logging.getLogger(__name__)

BAD_UPDATE = (KeyError, TypeError, ValueError, AttributeError, IndexError)  # what de_json raises on junk


#: The gate on a text the bot wrote (a pressed message, its button labels): memoised.
_redact_bots_text = functools.lru_cache(maxsize=2048)(gate_text)


def redact_update(raw: dict[str, Any]) -> dict[str, Any]:
    """``redact_payload`` on a raw update; a press's message (the bot's own, repeated for every
    press under it) goes through the memoised gate."""
    cq = raw.get("callback_query")
    if not isinstance(cq, dict) or not isinstance(cq.get("message"), dict):
        return redact_payload(raw)
    query = {k: (redact_payload(v, _redact_bots_text) if k == "message" else redact_payload(v)) for k, v in cq.items()}
    return {k: (query if k == "callback_query" else redact_payload(v)) for k, v in raw.items()}


def update_id_of(raw: Any) -> int | None:
    """The update's id as an int (a numeric string is accepted), or None when it has none."""
    if not isinstance(raw, dict):
        return None
    uid = raw.get("update_id")
    if isinstance(uid, bool):
        return None
    if isinstance(uid, int):
        return uid
    if isinstance(uid, str) and uid.strip().isdigit():
        return int(uid.strip())
    return None


class Intake:
    def __init__(
        self,
        application: Any,
        store: TelegramStore,
        claimed: Callable[[int], bool],
        on_done: Callable[[int], None] | None = None,
        direct: Callable[[Any], Awaitable[bool]] | None = None,
    ) -> None:
        self.application = application
        self.store = store
        self.claimed = claimed
        self.on_done = on_done  # told about updates finished here (unclaimed, unreadable, repeats)
        self.direct = direct  # the door's own path for a raw update: True when it took it
        # stored updates: the body as stored (after a restart) or the redacted dict itself
        self._todo: asyncio.Queue[tuple[int, str | dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.skipped = 0  # unreadable updates (tests)
        self.stored = 0

    async def start(self) -> int:
        """Queue what an earlier run stored but did not finish; start handing updates over."""
        left = await self.store.new_updates()
        for item in left:
            self._todo.put_nowait(item)
        if left:
            log.info("%d update(s) stored by the last run are handled first", len(left))
        self._task = asyncio.create_task(self.run(), name="tg-intake")
        return len(left)

    async def stop(self) -> None:
        """Hand nothing more over (what is stored stays stored)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def accept(self, raws: Sequence[Any]) -> int:
        """Store a batch of raw updates; returns the highest update id seen (0 if none)."""
        rows: list[tuple[int, str]] = []
        redacted: list[dict[str, Any]] = []
        highest = 0
        for raw in raws:
            uid = update_id_of(raw)
            if uid is None:
                log.warning("an update without a usable update_id was skipped")
                self.skipped += 1
                continue
            highest = max(highest, uid)
            if isinstance(raw.get("update_id"), str):
                raw = {**raw, "update_id": uid}
            clean = redact_update(raw)  # no secret is stored
            redacted.append(clean)
            rows.append((uid, json.dumps(clean, ensure_ascii=False)))
        fresh = set(await self.store.add_updates(rows))
        self.stored += len(fresh)
        for (uid, _body), clean in zip(rows, redacted, strict=True):
            if uid in fresh:
                fresh.discard(uid)
                self._todo.put_nowait((uid, clean))
            else:
                log.info("update %s was already stored: ignored", uid)
                self._done(uid)
        return highest

    def take(self, updates: Sequence[tuple[int, str]]) -> None:
        """Queue stored updates taken over from another instance (several processes on one
        database: ``bot.tg.store_pg``), in order."""
        for item in updates:
            self._todo.put_nowait(item)

    def _done(self, uid: int) -> None:
        if self.on_done is not None:
            self.on_done(uid)

    async def run(self) -> None:
        app = self.application
        while True:
            uid, body = await self._todo.get()
            try:
                raw = json.loads(body) if isinstance(body, str) else body
                if self.direct is not None and await self.direct(raw):
                    continue  # the door took it (it marks it done in its turn)
                update = Update.de_json(raw, app.bot)
            except BAD_UPDATE as exc:  # json's errors are ValueErrors
                self.skipped += 1
                log.warning("update %s cannot be read (%s): skipped", uid, type(exc).__name__)
                await self.store.finish(uid, status="bad")
                self._done(uid)
                continue
            await app.process_update(update)
            if not self.claimed(uid):
                await self.store.finish(uid)
                self._done(uid)


class Poller:
    """Long polling that confirms an update only once it is stored."""

    def __init__(
        self,
        request: BaseRequest,
        url: str,
        intake: Intake,
        *,
        timeout: float,
        allowed_updates: Sequence[str],
        on_fatal: Callable[[BaseException], None],
        read_timeout: float = 5.0,
    ) -> None:
        self.request = request
        self.url = url
        self.intake = intake
        self.timeout = timeout
        self.allowed_updates = list(allowed_updates)
        self.on_fatal = on_fatal
        self.read_timeout = read_timeout
        self.offset = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        last = await self.intake.store.last_update_id()
        self.offset = last + 1 if last else 0
        self._task = asyncio.create_task(self.run(), name="tg-poller")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()  # a parked long poll confirms nothing new: safe to drop
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def fetch(self) -> list[Any]:
        params = {"timeout": int(self.timeout), "allowed_updates": self.allowed_updates}
        if self.offset:
            params["offset"] = self.offset
        data = RequestData([RequestParameter.from_input(k, v) for k, v in params.items()])
        result = await self.request.post(f"{self.url}/getUpdates", data, read_timeout=self.timeout + self.read_timeout)
        return result if isinstance(result, list) else []

    async def run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                raws = await self.fetch()
            except InvalidToken as exc:
                log.critical("Telegram rejected the bot token while polling (401): stopping")
                self.on_fatal(exc)
                return
            except RetryAfter as exc:
                wait = exc.retry_after
                await self._pause(wait.total_seconds() if hasattr(wait, "total_seconds") else float(wait))
                continue
            except TimedOut:
                continue
            except (Conflict, NetworkError, TelegramError) as exc:
                if isinstance(exc, Conflict):
                    log.error("polling conflict: another process polls with this token, or a webhook is set (%s)", exc)
                else:
                    log.warning("polling failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 1.5, 30.0)
                continue
            backoff = 1.0
            if not raws:
                continue
            highest = await self.intake.accept(raws)  # stored (committed) before the offset moves
            if highest >= self.offset:
                self.offset = highest + 1
            elif not highest:  # nothing with a usable id: step past it rather than loop on it
                self.offset += len(raws)
