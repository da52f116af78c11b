"""The Telegram door: stored updates in, one ``Inbound`` each; each turn's replies out as one
durable message.

A thin translator on the seam, like the terminal door. The engine owns the conversation;
the door owns what Telegram needs: the intake is stored before it is confirmed
(``bot.tg.intake``), and a turn's messages are written to the outgoing queue
(``bot.tg.store``) **in the turn's own transaction** together with "this update is done"
(through ``TURN_WRITES``: the conversation store's ``save_turn`` calls the door's hook, which
plans the messages from ``SAVING_REPLIES`` on the event loop and hands their SQL to the turn's
transaction — on SQLite the same single hand-over to the database thread as the turn's own
writes). ``bot.tg.sender`` delivers them. A kill at any moment therefore loses no update and
repeats no turn.

Handling one update — ``take(raw)``, called by the intake strictly one after another with the
raw dict (the door's own updates need no PTB objects), or ``_on_update`` when it came through
PTB (another handler may have wanted it): classify it synchronously (no awaits, so the order
of arrival is kept), then chain a task behind the previous task of the same chat: one chat is
handled strictly in order, many chats run in parallel (at most ``max_parallel`` at once).

What one turn sends (the budget is ~1 message/s per chat, ~30/s overall) is planned in
``bot.tg.plan``; reading an update into ``Work`` is ``bot.tg.updates``:
* typed text: one message — the replies joined, the keyboard on it; an older keyboard is
  retired later, as housekeeping, when the budget has room;
* a press: the toast (``answerCallbackQuery``, not a message), the answer as one message,
  and one edit of the pressed message showing the choice without the keyboard
  (housekeeping). When the answer is the pressed message again with new buttons (a
  multi-select step), that message is edited in place instead — one call;
* a stale press or a double tap: the toast only; the turn is discarded (nothing changes).

Errors: an engine failure is logged with the update id and answered with the polite error
text (the update is done: it is not retried forever). 403 marks the conversation inactive.
"""


from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from telegram import BotCommand, Chat, LinkPreviewOptions, Update
from telegram.error import TelegramError
from telegram.ext import Application, ContextTypes, TypeHandler

from bot.core.content import Content
from bot.core.engine import SAVING_REPLIES, Engine
from bot.core.messages import EventKind, Inbound, Reply
from bot.store.sqlite import TURN_WRITES

from .plan import StalePress, messages, plan
from .render import MAX_CALLBACK_ANSWER, clip
from .sender import Sender
from .store import ANSWER, Job, SQLiteTelegramStore, TelegramStore
from .updates import (  # noqa: F401 (to_inbound: re-exported)
    Press,
    Unreadable,
    Work,
    classify,
    conversation_id,
    to_inbound,
)

log = logging.getLogger(__name__)

ALLOWED_UPDATES: tuple[str, ...] = ("message", "edited_message", "callback_query", "my_chat_member")
MENU_COMMANDS: tuple[str, ...] = (
    "start",
    "help",
    "restart",
    "back",
    "cancel",
    "quote",
    "status",
    "privacy",
    "forget",
)
ERROR_KEY = "engine.internal_error"
EDITED_KEY = "telegram.edited_message"
PRIVATE_ONLY_KEY = "telegram.private_only"
DB_AWAY_KEY = "telegram.database_away"
# a store error in a turn (a lost database connection, a fail-over): nothing of the turn was
# saved, so it is run again after these pauses; then the user is told to try again
STORE_RETRIES = (0.5, 1.0, 2.0, 4.0)
MISSED_KEY = "telegram.missed_answer"
AGAIN_COMMAND = "again"  # the current step shown again (after an answer that never arrived)
# Only for the error path, when content lacks ERROR_KEY (the error must still be answered).
FALLBACK_ERROR = "Sorry, something went wrong on my side. Please try again, or send /restart to start over."
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
DOOR_GROUP = 0  # PTB handler group; other features can register earlier groups


class TelegramDoor:
    """Translates between PTB and the engine. ``install(application)`` wires it in."""

    def __init__(
        self,
        engine: Engine,
        store: Any,
        content: Content,
        *,
        service_chats: Sequence[int] = (),
        max_parallel: int = 8,
        max_pending: int = 2000,
        send_retry_delay: float = 0.5,
        typing_after: float = 1.0,
        tg_store: TelegramStore | None = None,
    ) -> None:
        self.engine = engine
        self.store = store  # the conversation store: set_flags
        # the door's inbox, reply queue and keyboards; by default on the conversation store's
        # SQLite connection (another database passes its own ``TelegramStore``)
        self.tg_store: TelegramStore = tg_store if tg_store is not None else SQLiteTelegramStore(store.database)
        self.content = content
        self.service_chats = frozenset(service_chats)  # agents'/lab chats: other features own them
        self.send_retry_delay = send_retry_delay
        self.typing_after = typing_after
        # (update_id, chat_id) once the door is done with an update (its messages delivered)
        self.listeners: list[Callable[[int, int], None]] = []
        self.application: Application | None = None
        self.sender: Sender | None = None
        self._active = asyncio.Semaphore(max_parallel)
        self._pending = asyncio.Semaphore(max_pending)
        self._tails: dict[int, asyncio.Task[None]] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._claimed: set[int] = set()
        self._blocked: set[int] = set()
        self._told_groups: set[int] = set()
        self._missed: set[int] = set()  # chats whose last answer was given up: re-show the step
        engine.commands.setdefault(AGAIN_COMMAND, self._cmd_again)
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._stopping = False
        self.bot_username = ""

    # -- wiring --------------------------------------------------------------
    def install(self, application: Application) -> None:
        self.application = application
        application.add_handler(TypeHandler(Update, self._on_update), group=DOOR_GROUP)
        application.add_error_handler(self.on_error)
        self.sender = Sender(
            application.bot,
            self.tg_store,
            application.bot.rate_limiter,
            on_blocked=self.mark_blocked,
            on_answer=self._answer_outcome,
            retry_delay=self.send_retry_delay,
            typing_after=self.typing_after,
        )

    @property
    def bot(self) -> Any:
        assert self.application is not None, "install() first"
        return self.application.bot

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def claimed(self, update_id: int) -> bool:
        """True while the door handles ``update_id`` (it marks the update done itself)."""
        return update_id in self._claimed

    async def set_commands(self) -> list[str]:
        """The command menu from content (``commands.<name>``); returns the names set."""
        self.bot_username = self.bot.username or ""
        commands = []
        for name in MENU_COMMANDS:
            key = f"commands.{name}"
            if not self.content.has(key):
                log.info("content has no %s: /%s left out of the command menu", key, name)
                continue
            if name not in self.engine.commands:
                log.info("the engine has no /%s command: left out of the menu", name)
                continue
            commands.append(BotCommand(name, clip(self.content.text(key), 256)))
        if commands:
            await self.bot.set_my_commands(commands)
        else:
            log.warning("no commands.* texts in content: the command menu was not set")
        return [c.command for c in commands]

    async def start_sending(self) -> int:
        assert self.sender is not None, "install() first"
        self._missed.update(await self.tg_store.missed_answers())
        return await self.sender.start()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every turn handed to the door has finished (True), or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._inflight:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait(set(self._inflight), timeout=remaining)
        return True

    def stop_taking(self) -> None:
        """Turns not yet started stay in the inbox for the next start."""
        self._stopping = True

    async def stop_sending(self, deadline: float) -> None:
        if self.sender is not None:
            await self.sender.stop(deadline)

    # -- intake --------------------------------------------------------------
    def classify(self, raw: Any) -> Work | None:
        """``bot.tg.updates.classify`` with the door's chats and name; raises ``Unreadable``."""
        return classify(raw, service_chats=self.service_chats, bot_username=self.bot_username,
                        now=asyncio.get_running_loop().time())

    async def take(self, raw: Any) -> bool:
        """The intake's direct path: an update the door owns, read from its raw dict (no PTB
        objects). False when it must go through PTB instead (``process_update``): another
        handler may want it (``wants(raw)``, e.g. the agents' chat, an agent's command), the
        door cannot read it (PTB then skips it as unreadable), or the door has nothing to do."""
        if not isinstance(raw, dict) or self._others_want(raw):
            return False
        try:
            work = self.classify(raw)
        except Unreadable:
            return False
        if work is None:
            return False
        await self._schedule(work)
        return True

    def _others_want(self, raw: dict[str, Any]) -> bool:
        """True when a PTB handler of another feature may act on ``raw``: one that cannot say
        (no ``wants``) is assumed to want everything."""
        assert self.application is not None, "install() first"
        for group, handlers in self.application.handlers.items():
            if group == DOOR_GROUP:
                continue
            for handler in handlers:
                wants = getattr(handler.callback, "wants", None)
                if wants is None or wants(raw):
                    return True
        return False

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """PTB's path (updates another handler saw first, or the door could not read directly)."""
        try:
            work = self.classify(update.to_dict())
        except Unreadable as exc:
            log.warning("update %s cannot be read (%s): skipped", update.update_id, exc)
            return  # the intake marks it done
        if work is None:
            log.debug("update %s: nothing to do", update.update_id)
            return  # the intake marks it done
        await self._schedule(work)

    async def _schedule(self, work: Work) -> None:
        """Chain the work behind the same chat's previous update (one chat strictly in order)."""
        self._claimed.add(work.update_id)
        await self._pending.acquire()
        prev = self._tails.get(work.chat_id)
        task = asyncio.create_task(self._run(work, prev), name=f"tg-update-{work.update_id}")
        self._tails[work.chat_id] = task
        self._inflight.add(task)
        task.add_done_callback(lambda t, chat_id=work.chat_id: self._done(t, chat_id))

    def _done(self, task: asyncio.Task[None], chat_id: int) -> None:
        self._inflight.discard(task)
        self._pending.release()
        if self._tails.get(chat_id) is task:
            del self._tails[chat_id]

    async def _run(self, work: Work, prev: asyncio.Task[None] | None) -> None:
        jobs: list[Job] = []
        try:
            if prev is not None and not prev.done():
                await asyncio.wait({prev})  # the same chat's earlier update first (its errors are its own)
            if self._stopping:
                return  # not started: it stays in the inbox for the next start
            async with self._active:
                if self._stopping:
                    return
                try:
                    jobs = await self._process_retrying(work)
                except Exception as exc:  # the one broad catch: logged, the user gets the apology
                    jobs = await self._failed(work, exc)
        finally:
            self._claimed.discard(work.update_id)
            self._notify_when_sent(work, jobs)

    def _notify_when_sent(self, work: Work, jobs: Sequence[Job]) -> None:
        """Listeners hear of an update once its answer is out (housekeeping may follow)."""
        answers = [j for j in jobs if j.priority == ANSWER]
        fut = self.sender.done_future(answers) if self.sender is not None and answers else None
        if fut is None:
            self._notify(work.update_id, work.chat_id)
        else:
            fut.add_done_callback(lambda _f: self._notify(work.update_id, work.chat_id))

    def notify(self, update_id: int, chat_id: int) -> None:
        """Tell the listeners an update is finished (the intake finishes those the door skips)."""
        self._notify(update_id, chat_id)

    def _notify(self, update_id: int, chat_id: int) -> None:
        for listener in self.listeners:
            try:
                listener(update_id, chat_id)
            except Exception:  # an observer must never break the door
                log.exception("door listener failed")

    def _queue(self, jobs: Sequence[Job]) -> None:
        if self.sender is not None and jobs:
            self.sender.add(jobs)

    async def _process(self, work: Work) -> list[Job]:
        if work.kind == "turn":
            return await self._turn(work)
        if work.kind == "member":
            return await self._member(work)
        if work.kind == "edited":
            return await self._edited(work)
        if work.kind == "group":
            return await self._group(work)
        jobs = await self.tg_store.finish(work.update_id)
        if work.kind == "answer" and work.callback is not None:
            await self._answer(work.callback, "")
        return jobs

    async def _process_retrying(self, work: Work) -> list[Job]:
        """``_process``, run again while the database fails (the turn was rolled back)."""
        for pause in STORE_RETRIES:
            try:
                return await self._process(work)
            except self.tg_store.errors as exc:
                if self._stopping:
                    raise
                log.warning("update %s: the database failed (%s); the turn runs again in %.1f s",
                            work.update_id, exc, pause)
                await asyncio.sleep(pause)
        return await self._process(work)

    async def _failed(self, work: Work, exc: Exception) -> list[Job]:
        log.error("update %s failed: %s: %s", work.update_id, type(exc).__name__, exc, exc_info=exc)
        if work.callback is not None and not self.was_answered(work.callback.id):
            await self._answer(work.callback, "")
        specs = []
        if work.kind == "turn" and work.chat_id not in self._blocked:
            specs = messages(work.chat_id, (Reply(text=self.error_text(), key=ERROR_KEY),))
        try:
            jobs = await self.tg_store.finish(work.update_id, specs, status="failed")
        except Exception as exc2:  # the database itself is failing: the update stays new
            log.error("update %s: could not record the failure: %s", work.update_id, exc2)
            await self._tell_database_away(work)
            return []
        self._queue(jobs)
        if self.sender is not None:
            self.sender.answered(work.chat_id)
        return jobs

    # -- what a turn sends --------------------------------------------------------------
    async def _turn(self, work: Work) -> list[Job]:
        assert work.inbound is not None
        if work.chat_id in self._missed and work.inbound.kind is not EventKind.COMMAND:
            return await self._reshow(work)
        self._missed.discard(work.chat_id)  # a command shows where the user is anyway
        cq = work.callback
        sender = self.sender
        self._blocked.discard(work.chat_id)  # they wrote to us: not (or no longer) blocked
        if sender is not None:
            sender.expect(work.chat_id, work.received or None)
        written: list[list[Job]] = []  # the hook's jobs, once it ran (the turn was saved)

        async def writes(db: Any, state: Any) -> None:
            # planned here, on the event loop; the store runs only the SQL in the turn's transaction
            specs, spent = plan(work, SAVING_REPLIES.get())
            written.append(await self.tg_store.write_turn(db, work.update_id, specs, spent=spent))

        log.debug("update %s: %s for %s", work.update_id, work.inbound.kind.value, work.inbound.conversation_id)
        hook = TURN_WRITES.set(writes)
        try:
            replies = await self.engine.handle(work.inbound)
        except StalePress as stale:
            jobs = await self.tg_store.finish(work.update_id, status="stale")
            if cq is not None:
                await self._answer(cq, stale.notice)
            if sender is not None:
                sender.answered(work.chat_id)
            return jobs
        finally:
            TURN_WRITES.reset(hook)
        if written:
            jobs = [job for batch in written for job in batch]
        else:  # the engine saved nothing: the update is finished on its own
            specs, spent = plan(work, replies)
            jobs = await self.tg_store.finish(work.update_id, specs, spent=spent)
        self._queue(jobs)
        if sender is not None and not any(j.priority == ANSWER for j in jobs):
            sender.answered(work.chat_id)
        if cq is not None:
            await self._answer(cq, next((r.notice for r in replies if r.notice), ""))
        return jobs

    def _answer_outcome(self, chat_id: int, delivered: bool) -> None:
        if delivered:
            self._missed.discard(chat_id)
        else:
            self._missed.add(chat_id)

    async def _reshow(self, work: Work) -> list[Job]:
        """The chat's last answer never reached it (given up after its retries): whatever the
        user sends next — most likely "hello??" or an answer to the step before — is not read
        against a step they never saw. They get the current step again instead."""
        assert work.inbound is not None
        log.info("chat %s missed its last answer: the current step is shown again", work.chat_id)
        self._missed.discard(work.chat_id)
        again = Inbound(work.inbound.conversation_id, EventKind.COMMAND, text=AGAIN_COMMAND, user_name=work.inbound.user_name)
        jobs = await self._turn(replace(work, inbound=again, callback=None))
        if work.callback is not None:
            await self._answer(work.callback, "")
        return jobs

    async def _cmd_again(self, turn: Any, _arg: str) -> None:
        """``/again`` (a door command): say so, then the current step with its buttons."""
        if self.content.has(MISSED_KEY):
            turn.say(MISSED_KEY)
        await turn.engine.reprompt(turn)

    async def _member(self, work: Work) -> list[Job]:
        cid = conversation_id(work.chat_id)
        if work.active:
            self._blocked.discard(work.chat_id)
            log.info("%s unblocked the bot", cid)
        else:
            self._blocked.add(work.chat_id)
            log.info("%s blocked the bot: conversation inactive", cid)
        await self.store.set_flags(cid, active=work.active)
        return await self.tg_store.finish(work.update_id)

    async def _edited(self, work: Work) -> list[Job]:
        # Choice (docs/telegram.md): an edit is not re-read — answering it as a new message
        # could feed a stale value into a step that already moved on. A short reason instead.
        specs = []
        if self.content.has(EDITED_KEY):
            specs = messages(work.chat_id, (Reply(text=self.content.text(EDITED_KEY), key=EDITED_KEY),))
        else:
            log.info("edited message in %s ignored (content has no %s)", work.chat_id, EDITED_KEY)
        jobs = await self.tg_store.finish(work.update_id, specs)
        self._queue(jobs)
        return jobs

    async def _group(self, work: Work) -> list[Job]:
        """The bot works in private chats only: say so once, then leave the group/channel."""
        if work.chat_id in self._told_groups:
            return await self.tg_store.finish(work.update_id)
        self._told_groups.add(work.chat_id)
        specs = []
        if work.chat_type != Chat.CHANNEL and self.content.has(PRIVATE_ONLY_KEY):
            text = self.content.text(PRIVATE_ONLY_KEY, {"bot": f"@{self.bot_username}"})
            specs = messages(work.chat_id, (Reply(text=text),), priority=ANSWER)
        jobs = await self.tg_store.finish(work.update_id, specs)
        self._queue(jobs)
        fut = self.sender.done_future(jobs) if self.sender is not None and jobs else None
        if fut is not None:
            await fut  # the notice first, then leave
        try:
            await self.bot.leave_chat(work.chat_id)
            log.info("left %s %s (the bot answers in private chats only)", work.chat_type, work.chat_id)
        except TelegramError as exc:
            log.warning("could not leave %s: %s", work.chat_id, exc)
        return []

    # -- button presses --------------------------------------------------------------
    def was_answered(self, query_id: str) -> bool:
        return query_id in self._answered

    async def _answer(self, press: Press, text: str) -> None:
        """The toast under a press (``answerCallbackQuery`` with the query's id)."""
        self._answered[press.id] = None
        while len(self._answered) > 10_000:
            self._answered.popitem(last=False)
        await self.answer_query(press.id, text)

    async def answer_query(self, query_id: str, text: str) -> None:
        """The toast for a button press (``text`` may be empty: it only stops the spinner), sent
        the sender's lean way (``Sender.call``); a failure is logged, never raised."""
        assert self.sender is not None, "install() first"
        payload = {"callback_query_id": query_id, "text": clip(text, MAX_CALLBACK_ANSWER) if text else None}
        try:
            await self.sender.call("answerCallbackQuery", payload)
        except TelegramError as exc:  # too old, already answered: the user sees nothing anyway
            log.info("answering button press %s failed: %s", query_id, exc)

    # -- sending for other features --------------------------------------------------------------
    async def deliver(
        self,
        chat_id: int,
        replies: Sequence[Reply],
        *,
        pressed: int | None = None,
        thread_id: int | None = None,
    ) -> int:
        """Queue replies for ``chat_id`` as one message (durably); returns how many messages
        were queued. For other features (the agents' hand-back, the lab chat)."""
        if chat_id in self._blocked:
            log.info("chat %s blocked the bot: %d repl(ies) not sent", chat_id, len(replies))
            return 0
        jobs = await self.tg_store.finish(None, messages(chat_id, replies, thread_id=thread_id))
        self._queue(jobs)
        return len(jobs)

    async def send_text(self, chat_id: int, text: str) -> int:
        """Send one plain text (``**bold**`` allowed) the door's way: for other features'
        notices (the lab chat, alerts). Returns how many messages were queued."""
        return await self.deliver(chat_id, (Reply(text=text),))

    async def mark_blocked(self, chat_id: int, exc: Exception | None = None) -> None:
        """403: the user blocked the bot (or it was removed): inactive, nothing more is sent."""
        if chat_id not in self._blocked:
            log.info("chat %s refuses messages (%s): conversation marked inactive", chat_id, exc)
        self._blocked.add(chat_id)
        try:
            await self.store.set_flags(conversation_id(chat_id), active=False)
        except Exception:
            log.exception("could not mark %s inactive", chat_id)

    def is_blocked(self, chat_id: int) -> bool:
        return chat_id in self._blocked

    # -- the one error handler --------------------------------------------------------------
    async def _tell_database_away(self, work: Work) -> None:
        """The database is away (nothing can be queued): the user is told to try again in a
        moment, straight through the Bot API."""
        if work.kind != "turn" or work.chat_id in self._blocked or not self.content.has(DB_AWAY_KEY):
            return
        assert self.application is not None
        try:
            await self.application.bot.send_message(work.chat_id, self.content.text(DB_AWAY_KEY))
        except TelegramError as exc:
            log.warning("update %s: could not tell the user to try again: %s", work.update_id, exc)

    def error_text(self) -> str:
        try:
            return self.content.text(ERROR_KEY)
        except Exception:  # a missing key must not stop the apology
            return FALLBACK_ERROR

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """PTB's error handler (errors outside the door's turns, e.g. other features'
        handlers): logged with the update id; never raises."""
        err = context.error
        uid = update.update_id if isinstance(update, Update) else None
        log.error("update %s failed: %s: %s", uid, type(err).__name__, err, exc_info=err)
