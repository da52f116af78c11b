"""The Telegram door: stored updates in, one ``Inbound`` each; each turn's replies out as one
durable message.

A thin translator on the seam, like the terminal door. The engine owns the conversation;
the door owns what Telegram needs: the intake is stored before it is confirmed
(``bot.tg.intake``), and a turn's messages are written to the outgoing queue
(``bot.tg.store``) **in the turn's own transaction** together with "this update is done"
(through ``TURN_WRITES``: ``SQLiteStore.save_turn`` calls the door inside its transaction,
where ``SAVING_REPLIES`` holds the replies). ``bot.tg.sender`` delivers them. A kill at any
moment therefore loses no update and repeats no turn.

Handling one update (``_on_update``, called by PTB strictly one after another): classify it
synchronously (no awaits, so the order of arrival is kept), then chain a task behind the
previous task of the same chat: one chat is handled strictly in order, many chats run in
parallel (at most ``max_parallel`` at once).

What one turn sends (the budget is ~1 message/s per chat, ~30/s overall):
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
import html
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from telegram import (
    BotCommand,
    CallbackQuery,
    Chat,
    ChatMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    MessageEntity,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, ContextTypes, TypeHandler

from bot.core.content import Content
from bot.core.engine import SAVING_REPLIES, Engine
from bot.core.messages import Attachment, Button, EventKind, Inbound, Reply
from bot.store.sqlite import TURN_WRITES

from .store import ANSWER, HOUSEKEEPING, Job, JobSpec, SQLiteTelegramStore, TelegramStore
from .sender import Sender

from .render import (
    MAX_CALLBACK_ANSWER,
    MAX_MESSAGE,
    clip,
    compose,
    fits_callback_data,
    keyboard_rows,
    tg_len,
    visible,
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
STALE_KEY = "engine.stale_button"
DB_AWAY_KEY = "telegram.database_away"
# a store error in a turn (a lost database connection, a fail-over): nothing of the turn was
# saved, so it is run again after these pauses; then the user is told to try again
STORE_RETRIES = (0.5, 1.0, 2.0, 4.0)
MISSED_KEY = "telegram.missed_answer"
AGAIN_COMMAND = "again"  # the current step shown again (after an answer that never arrived)
# Only for the error path, when content lacks ERROR_KEY (the error must still be answered).
FALLBACK_ERROR = "Sorry, something went wrong on my side. Please try again, or send /restart to start over."
CHOICE_MARK = "» "
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
DOOR_GROUP = 0  # PTB handler group; other features can register earlier groups


class _StalePress(Exception):
    """Raised inside the turn's transaction: a stale press or a double tap changes nothing."""

    def __init__(self, notice: str) -> None:
        super().__init__(notice)
        self.notice = notice


@dataclass(frozen=True)
class Work:
    """One update, classified: what the door must do for which chat."""

    kind: str  # turn | edited | member | group | answer
    chat_id: int
    update_id: int
    inbound: Inbound | None = None
    callback: CallbackQuery | None = None
    active: bool = True  # member: the bot's new standing in a private chat
    chat_type: str = Chat.PRIVATE
    received: float = 0.0  # loop time the door got it (the typing indicator counts from here)


def conversation_id(chat_id: int) -> str:
    return f"tg:{chat_id}"


def attachments_of(msg: Message) -> tuple[Attachment, ...]:
    """What a non-text message carries, as the seam's Attachment records."""
    name = msg.caption or ""
    if msg.photo:
        big = msg.photo[-1]
        return (Attachment("photo", big.file_id, big.file_size or 0, name),)
    for kind in ("animation", "video", "video_note", "voice", "audio", "sticker", "document"):
        obj = getattr(msg, kind)
        if obj is not None:
            file_name = getattr(obj, "file_name", None) or name
            return (Attachment(kind, obj.file_id, obj.file_size or 0, file_name),)
    if msg.venue is not None or msg.location is not None:
        return (Attachment("location"),)
    if msg.contact is not None:
        return (Attachment("contact"),)
    for kind in ("poll", "dice", "story", "game", "invoice", "paid_media", "checklist"):
        if getattr(msg, kind, None) is not None:
            return (Attachment(kind),)
    return ()


def to_inbound(msg: Message, bot_username: str = "") -> Inbound | None:
    """A private-chat message as one Inbound; None for service messages (nothing to answer)."""
    cid = conversation_id(msg.chat_id)
    user = msg.from_user
    name = user.first_name if user else ""
    if msg.text is not None:
        ents = msg.entities
        if ents and ents[0].type == MessageEntity.BOT_COMMAND and ents[0].offset == 0:
            command = msg.parse_entity(ents[0])
            cmd, _, addressee = command[1:].partition("@")
            if not addressee or not bot_username or addressee.lower() == bot_username.lower():
                arg = msg.text[len(command) :].strip()
                return Inbound(cid, EventKind.COMMAND, text=cmd.lower(), arg=arg, user_name=name)
        return Inbound(cid, EventKind.TEXT, text=msg.text, user_name=name)
    atts = attachments_of(msg)
    if atts:
        return Inbound(cid, EventKind.MEDIA, text=msg.caption or "", attachments=atts, user_name=name)
    return None


def build_keyboard(buttons: Sequence[Button]) -> InlineKeyboardMarkup | None:
    usable = []
    for b in buttons:
        if fits_callback_data(b.id):
            usable.append(b)
        else:  # Telegram would refuse the whole message; `python -m bot check` should catch it
            log.error("button id %r is over 64 bytes; left out", b.id)
    if not usable:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.id) for b in row] for row in keyboard_rows(usable)]
    )


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
    def classify(self, update: Update) -> Work | None:
        uid = update.update_id
        now = asyncio.get_running_loop().time()
        if update.my_chat_member is not None:
            cmu = update.my_chat_member
            chat = cmu.chat
            status = cmu.new_chat_member.status
            if chat.type == Chat.PRIVATE:
                return Work(
                    "member",
                    chat.id,
                    uid,
                    active=status not in (ChatMember.BANNED, ChatMember.LEFT),
                )
            if chat.id in self.service_chats:
                return None
            if status in (
                ChatMember.MEMBER,
                ChatMember.ADMINISTRATOR,
                ChatMember.OWNER,
                ChatMember.RESTRICTED,
            ):
                return Work("group", chat.id, uid, chat_type=chat.type)
            return None  # removed from a group: nothing to do
        if update.callback_query is not None:
            cq = update.callback_query
            msg = cq.message
            if msg is None:  # a button under an inline-mode message: just answer it
                return Work("answer", 0, uid, callback=cq)
            chat = msg.chat
            if chat.type != Chat.PRIVATE:
                if chat.id in self.service_chats:
                    return None
                return Work("answer", chat.id, uid, callback=cq)
            if cq.data is None:
                return Work("answer", chat.id, uid, callback=cq)
            inbound = Inbound(
                conversation_id(chat.id),
                EventKind.BUTTON,
                payload=cq.data,
                user_name=cq.from_user.first_name if cq.from_user else "",
            )
            return Work("turn", chat.id, uid, inbound=inbound, callback=cq, received=now)
        if update.edited_message is not None:
            chat = update.edited_message.chat
            return Work("edited", chat.id, uid) if chat.type == Chat.PRIVATE else None
        msg = update.message
        if msg is None:
            return None  # a kind we did not ask for (allowed_updates): ignore
        chat = msg.chat
        if chat.type != Chat.PRIVATE:
            if chat.id in self.service_chats:
                return None
            return Work("group", chat.id, uid, chat_type=chat.type)
        inbound = to_inbound(msg, self.bot_username)
        if inbound is None:
            return None
        return Work("turn", chat.id, uid, inbound=inbound, received=now)

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        work = self.classify(update)
        if work is None:
            log.debug("update %s: nothing to do", update.update_id)
            return  # the intake marks it done
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
            specs = self._messages(work.chat_id, (Reply(text=self.error_text(), key=ERROR_KEY),))
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
    def _messages(
        self, chat_id: int, replies: Sequence[Reply], *, thread_id: int | None = None, priority: int | None = None
    ) -> list[JobSpec]:
        prio = priority if priority is not None else (ANSWER if chat_id > 0 else HOUSEKEEPING)
        specs = []
        for html_text, keyboard in compose(replies):
            body: dict[str, Any] = {"html": html_text}
            if keyboard:
                body["keyboard"] = keyboard
            if thread_id is not None:
                body["thread_id"] = thread_id
            specs.append(JobSpec(chat_id, "send", prio, body))
        return specs

    def _plan(self, work: Work, replies: Sequence[Reply]) -> tuple[list[JobSpec], tuple[int, int] | None]:
        """The jobs of one turn, and the (chat, message) whose keyboard it used up."""
        cq = work.callback
        if cq is None:
            return self._messages(work.chat_id, replies), None
        if replies and replies[0].key == STALE_KEY:
            raise _StalePress(replies[0].notice or visible(replies[0].text))
        msg = cq.message if isinstance(cq.message, Message) else None
        composed = compose(replies)
        if msg is None:
            return self._messages(work.chat_id, replies), None
        if len(composed) == 1 and composed[0][1] and msg.text and _same_text(replies, msg.text):
            # the same step again with new buttons (a multi-select tap): edit it in place
            html_text, keyboard = composed[0]
            edit = {"message_id": msg.message_id, "html": html_text, "keyboard": keyboard}
            return [JobSpec(work.chat_id, "edit", ANSWER, edit)], None
        specs = self._messages(work.chat_id, replies)
        specs.append(JobSpec(work.chat_id, "edit", HOUSEKEEPING, _choice_edit(msg, cq.data or "")))
        return specs, (work.chat_id, msg.message_id)

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
        written: list[Job] = []

        async def writes(db: Any, state: Any) -> None:
            specs, spent = self._plan(work, SAVING_REPLIES.get())
            written.extend(await self.tg_store.write_turn(db, work.update_id, specs, spent=spent))

        log.debug("update %s: %s for %s", work.update_id, work.inbound.kind.value, work.inbound.conversation_id)
        hook = TURN_WRITES.set(writes)
        try:
            replies = await self.engine.handle(work.inbound)
        except _StalePress as stale:
            jobs = await self.tg_store.finish(work.update_id, status="stale")
            if cq is not None:
                await self._answer(cq, stale.notice)
            if sender is not None:
                sender.answered(work.chat_id)
            return jobs
        finally:
            TURN_WRITES.reset(hook)
        jobs = written
        if not jobs and await self.tg_store.update_status(work.update_id) == "new":  # the engine saved nothing
            specs, spent = self._plan(work, replies)
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
            specs = self._messages(work.chat_id, (Reply(text=self.content.text(EDITED_KEY), key=EDITED_KEY),))
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
            specs = self._messages(work.chat_id, (Reply(text=text),), priority=ANSWER)
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

    async def _answer(self, cq: CallbackQuery, text: str) -> None:
        self._answered[cq.id] = None
        while len(self._answered) > 10_000:
            self._answered.popitem(last=False)
        try:
            await cq.answer(text=clip(text, MAX_CALLBACK_ANSWER) if text else None)
        except TelegramError as exc:  # too old, already answered: the user sees nothing anyway
            log.info("answering button press %s failed: %s", cq.id, exc)

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
        jobs = await self.tg_store.finish(None, self._messages(chat_id, replies, thread_id=thread_id))
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


def _same_text(replies: Sequence[Reply], shown: str) -> bool:
    joined = "\n\n".join(r.text.strip("\n") for r in replies if r.text.strip())
    return visible(joined).strip() == shown.strip()


def _choice_edit(msg: Message, data: str) -> dict[str, Any]:
    """The pressed message with the choice under it and no keyboard (one editMessageText), or
    just without the keyboard when the label is unknown or the text would get too long."""
    label = ""
    for row in msg.reply_markup.inline_keyboard if msg.reply_markup else ():
        for b in row:
            if b.callback_data == data:
                label = b.text
    if msg.text and label and tg_len(msg.text) + tg_len(CHOICE_MARK + label) + 2 <= MAX_MESSAGE:
        shown = f"{msg.text_html}\n\n{html.escape(CHOICE_MARK + label, quote=False)}"
        return {"message_id": msg.message_id, "html": shown, "keyboard": None}
    return {"message_id": msg.message_id, "html": None, "keyboard": None}
