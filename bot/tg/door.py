"""The Telegram door: PTB updates in, one ``Inbound`` each; the engine's replies out as messages.

A thin translator on the seam, like the terminal door. It holds no conversation state: the
engine owns the conversation (and detects stale button presses itself). What it keeps in
memory is presentation only and safe to lose on restart: which message last carried a
keyboard (to retire it when a new one is shown), which chats blocked the bot (to stop
sending), which groups it already told it only works in private chats.

Handling one update (``_on_update``, called by PTB strictly one after another):
  classify it synchronously (no awaits, so the order of arrival is kept), then chain a task
  behind the previous task of the same chat: one chat is handled strictly in order, many
  chats run in parallel (at most ``max_parallel`` at once; at most ``max_pending`` queued,
  which pushes back on PTB's update fetcher). Each task: ``store.mark_update`` (a duplicate
  update is ignored) -> ``engine.handle`` -> answer the button press -> retire the pressed
  keyboard -> send the replies. An exception goes to PTB's one error handler (``on_error``):
  logged with the update id, the user gets a polite text; the engine saved nothing for the
  failed turn, other chats never notice.

Sending: HTML, everything escaped, ``**x**`` bold; long texts split at paragraphs, buttons on
the last part. 429s are waited out by the rate limiter (``ratelimit``); 403 marks the
conversation inactive and stops sending to it (no retries); 400 on edits is logged and
ignored; 5xx and timeouts are retried twice with a short backoff.
"""

from __future__ import annotations

import asyncio
import html
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from bot.core.engine import Engine
from bot.core.messages import Attachment, Button, EventKind, Hint, Inbound, Reply

from .render import (
    MAX_CALLBACK_ANSWER,
    MAX_MESSAGE,
    clip,
    fits_callback_data,
    keyboard_rows,
    split_text,
    tg_len,
    to_html,
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
# Only for the error path, when content lacks ERROR_KEY (the error must still be answered).
FALLBACK_ERROR = "Sorry, something went wrong on my side. Please try again, or send /restart to start over."
CHOICE_MARK = "» "
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
SEND_RETRIES = 2  # extra attempts after a 5xx / timeout / connection error
DOOR_GROUP = 0  # PTB handler group; other features can register earlier groups


class _Blocked(Exception):
    """The chat refused our message (403): stop this turn's remaining sends."""


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
    ) -> None:
        self.engine = engine
        self.store = store  # SQLiteStore: mark_update, set_flags
        self.content = content
        self.service_chats = frozenset(service_chats)  # agents'/lab chats: other features own them
        self.send_retry_delay = send_retry_delay
        # (update_id, chat_id) once the door is done with an update, ignored ones included
        self.listeners: list[Callable[[int, int], None]] = []
        self.application: Application | None = None
        self._active = asyncio.Semaphore(max_parallel)
        self._pending = asyncio.Semaphore(max_pending)
        self._tails: dict[int, asyncio.Task[None]] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._blocked: set[int] = set()
        self._told_groups: set[int] = set()
        self._last_keyboard: OrderedDict[int, int] = OrderedDict()
        self._answered: OrderedDict[str, None] = OrderedDict()
        self.bot_username = ""

    # -- wiring --------------------------------------------------------------
    def install(self, application: Application) -> None:
        self.application = application
        application.add_handler(TypeHandler(Update, self._on_update), group=DOOR_GROUP)
        application.add_error_handler(self.on_error)

    @property
    def bot(self) -> Any:
        assert self.application is not None, "install() first"
        return self.application.bot

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

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

    async def drain(self) -> None:
        """Wait until every update handed to the door has been handled."""
        while self._inflight:
            await asyncio.wait(set(self._inflight))

    # -- intake --------------------------------------------------------------
    def classify(self, update: Update) -> Work | None:
        uid = update.update_id
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
            return Work("turn", chat.id, uid, inbound=inbound, callback=cq)
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
        return Work("turn", chat.id, uid, inbound=inbound)

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        work = self.classify(update)
        if work is None:
            log.debug("update %s: nothing to do", update.update_id)
            chat = update.effective_chat
            self._notify(update.update_id, chat.id if chat else 0)
            return
        await self._pending.acquire()
        prev = self._tails.get(work.chat_id)
        task = asyncio.create_task(self._run(work, update, prev), name=f"tg-update-{work.update_id}")
        self._tails[work.chat_id] = task
        self._inflight.add(task)
        task.add_done_callback(lambda t, chat_id=work.chat_id: self._done(t, chat_id))

    def _done(self, task: asyncio.Task[None], chat_id: int) -> None:
        self._inflight.discard(task)
        self._pending.release()
        if self._tails.get(chat_id) is task:
            del self._tails[chat_id]

    async def _run(self, work: Work, update: Update, prev: asyncio.Task[None] | None) -> None:
        if prev is not None and not prev.done():
            await asyncio.wait({prev})  # the same chat's earlier update first (its errors are its own)
        try:
            async with self._active:
                try:
                    await self._process(work)
                except Exception as exc:  # the one broad catch: PTB's error handler reports it
                    assert self.application is not None
                    await self.application.process_error(update, exc)
        finally:
            self._notify(work.update_id, work.chat_id)

    def _notify(self, update_id: int, chat_id: int) -> None:
        for listener in self.listeners:
            try:
                listener(update_id, chat_id)
            except Exception:  # an observer must never break the door
                log.exception("door listener failed")

    async def _process(self, work: Work) -> None:
        if not await self._mark_update(work.update_id):
            log.info("update %s was already handled: ignored", work.update_id)
            return
        if work.kind == "turn":
            await self._turn(work)
        elif work.kind == "member":
            await self._member(work)
        elif work.kind == "edited":
            await self._edited(work)
        elif work.kind == "group":
            await self._group(work)
        elif work.kind == "answer" and work.callback is not None:
            await self._answer(work.callback, "")

    async def _mark_update(self, update_id: int) -> bool:
        """``store.mark_update``, retried when SQLite answers "database is locked" at once.

        That happens when another coroutine's read statement is still open on the shared
        connection while a second connection (the quote outbox) holds the write lock:
        SQLite then skips the busy timeout. Marking is idempotent, so a retry is safe.
        """
        for attempt in range(4):
            try:
                return bool(await self.store.mark_update(update_id))
            except sqlite3.OperationalError as exc:
                if attempt == 3 or "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                log.info("marking update %s: %s; retrying", update_id, exc)
                await asyncio.sleep(0.05 * (attempt + 1))
        return False  # pragma: no cover - the loop returns or raises

    # -- the kinds of work --------------------------------------------------------------
    async def _turn(self, work: Work) -> None:
        assert work.inbound is not None
        cq = work.callback
        try:
            self._blocked.discard(work.chat_id)  # they wrote to us: not (or no longer) blocked
            log.debug(
                "update %s: %s for %s",
                work.update_id,
                work.inbound.kind.value,
                work.inbound.conversation_id,
            )
            replies = await self.engine.handle(work.inbound)
            if cq is None:
                await self.deliver(work.chat_id, replies)
                return
            notice = next((r.notice for r in replies if r.notice), "")
            await self._answer(cq, notice)  # first: the button stops spinning
            pressed = cq.message.message_id if isinstance(cq.message, Message) else None
            # the pressed keyboard is edited while the replies go out (cosmetic, not in
            # the way of the answer); both are done before the next update of this chat
            await asyncio.gather(
                self._spend_keyboard(work.chat_id, cq), self.deliver(work.chat_id, replies, pressed=pressed)
            )
        finally:
            if cq is not None and not self.was_answered(cq.id):
                await self._answer(cq, "")  # never leave a button spinning, even on errors

    async def _member(self, work: Work) -> None:
        cid = conversation_id(work.chat_id)
        if work.active:
            self._blocked.discard(work.chat_id)
            log.info("%s unblocked the bot", cid)
        else:
            self._blocked.add(work.chat_id)
            log.info("%s blocked the bot: conversation inactive", cid)
        await self.store.set_flags(cid, active=work.active)

    async def _edited(self, work: Work) -> None:
        # Choice (docs/telegram.md): an edit is not re-read — answering it as a new message
        # could feed a stale value into a step that already moved on. A short reason instead.
        if not self.content.has(EDITED_KEY):
            log.info("edited message in %s ignored (content has no %s)", work.chat_id, EDITED_KEY)
            return
        await self.deliver(work.chat_id, (Reply(text=self.content.text(EDITED_KEY), key=EDITED_KEY),))

    async def _group(self, work: Work) -> None:
        """The bot works in private chats only: say so once, then leave the group/channel."""
        if work.chat_id in self._told_groups:
            return
        self._told_groups.add(work.chat_id)
        if work.chat_type != Chat.CHANNEL and self.content.has(PRIVATE_ONLY_KEY):
            text = self.content.text(PRIVATE_ONLY_KEY, {"bot": f"@{self.bot_username}"})
            try:
                await self._send(work.chat_id, to_html(text), None)
            except (_Blocked, TelegramError) as exc:
                log.info("could not tell group %s that it's private-only: %s", work.chat_id, exc)
        try:
            await self.bot.leave_chat(work.chat_id)
            log.info("left %s %s (the bot answers in private chats only)", work.chat_type, work.chat_id)
        except TelegramError as exc:
            log.warning("could not leave %s: %s", work.chat_id, exc)

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

    async def _spend_keyboard(self, chat_id: int, cq: CallbackQuery) -> int | None:
        """Edit the pressed message: keyboard gone, the choice shown. Returns its id."""
        msg = cq.message
        if not isinstance(msg, Message):
            return None
        if self._last_keyboard.get(chat_id) == msg.message_id:
            del self._last_keyboard[chat_id]
        label = ""
        for row in msg.reply_markup.inline_keyboard if msg.reply_markup else ():
            for b in row:
                if b.callback_data == cq.data:
                    label = b.text
        try:
            if msg.text and label:
                shown = f"{msg.text_html}\n\n{html.escape(CHOICE_MARK + label, quote=False)}"
                if tg_len(msg.text) + tg_len(CHOICE_MARK + label) + 2 <= MAX_MESSAGE:
                    await self.bot.edit_message_text(
                        shown,
                        chat_id=chat_id,
                        message_id=msg.message_id,
                        parse_mode=ParseMode.HTML,
                        reply_markup=None,
                        link_preview_options=NO_PREVIEW,
                    )
                    return msg.message_id
            await self.bot.edit_message_reply_markup(chat_id=chat_id, message_id=msg.message_id, reply_markup=None)
        except Forbidden:
            self._blocked.add(chat_id)
        except BadRequest as exc:  # not modified, not found, too old to edit: cosmetic only
            log.info("editing pressed message %s in %s: %s", msg.message_id, chat_id, exc.message)
        except TelegramError as exc:
            log.warning("editing pressed message %s in %s failed: %s", msg.message_id, chat_id, exc)
        return msg.message_id

    async def _retire_keyboard(self, chat_id: int, old: int) -> None:
        """A new keyboard replaces the last one: take the old one away."""
        try:
            await self.bot.edit_message_reply_markup(chat_id=chat_id, message_id=old, reply_markup=None)
        except Forbidden:
            self._blocked.add(chat_id)
        except BadRequest as exc:
            log.info("removing old keyboard %s in %s: %s", old, chat_id, exc.message)
        except TelegramError as exc:
            log.warning("removing old keyboard %s in %s failed: %s", old, chat_id, exc)

    # -- sending --------------------------------------------------------------
    async def deliver(
        self,
        chat_id: int,
        replies: Sequence[Reply],
        *,
        pressed: int | None = None,
        thread_id: int | None = None,
    ) -> int:
        """Send replies in order; returns how many messages went out. Stops at a 403."""
        sent = 0
        retiring: list[asyncio.Task[None]] = []
        try:
            for reply in replies:
                if chat_id in self._blocked:
                    log.info(
                        "chat %s blocked the bot: %d repl(ies) not sent",
                        chat_id,
                        len(replies) - sent,
                    )
                    break
                if reply.buttons and reply.hint is Hint.REPLACE_KEYBOARD:
                    old = self._last_keyboard.pop(chat_id, None)  # now, before a new one
                    if old is not None and old != pressed:  # edited while we send
                        retiring.append(asyncio.create_task(self._retire_keyboard(chat_id, old)))
                parts = split_text(reply.text)
                if not parts:
                    if not reply.buttons:
                        continue
                    parts = [visible(reply.key) or "…"]
                markup = build_keyboard(reply.buttons)
                for i, part in enumerate(parts):
                    last = i == len(parts) - 1
                    msg = await self._send(chat_id, to_html(part), markup if last else None, thread_id)
                    if msg is not None:
                        sent += 1
                        if last and markup is not None:
                            self._remember_keyboard(chat_id, msg.message_id)
        except _Blocked:
            pass
        finally:
            if retiring:
                await asyncio.gather(*retiring, return_exceptions=True)
        return sent

    async def send_text(self, chat_id: int, text: str) -> int:
        """Send one plain text (``**bold**`` allowed) the door's way: for other features'
        notices (the lab chat, alerts). Returns how many messages went out."""
        return await self.deliver(chat_id, (Reply(text=text),))

    def _remember_keyboard(self, chat_id: int, message_id: int) -> None:
        self._last_keyboard[chat_id] = message_id
        self._last_keyboard.move_to_end(chat_id)
        while len(self._last_keyboard) > 50_000:
            self._last_keyboard.popitem(last=False)

    async def _send(
        self,
        chat_id: int,
        text_html: str,
        markup: InlineKeyboardMarkup | None,
        thread_id: int | None = None,
    ) -> Message | None:
        """One sendMessage. 429 is waited out below us (rate limiter); 403 raises _Blocked after
        marking the conversation inactive; 400 is logged (None); 5xx/timeouts are retried."""
        for attempt in range(SEND_RETRIES + 1):
            try:
                return await self.bot.send_message(
                    chat_id,
                    text_html,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                    link_preview_options=NO_PREVIEW,
                    message_thread_id=thread_id,
                )
            except Forbidden as exc:
                await self.mark_blocked(chat_id, exc)
                raise _Blocked from exc
            except BadRequest as exc:
                log.error("Telegram refused a message to %s: %s", chat_id, exc.message)
                return None
            except RetryAfter:
                log.error("message to %s dropped: still rate limited after retries", chat_id)
                return None
            except NetworkError as exc:  # 5xx, timeouts, connection errors
                if attempt == SEND_RETRIES:
                    log.error("message to %s not sent after %d attempts: %s", chat_id, attempt + 1, exc)
                    raise
                log.warning("sending to %s failed (%s); retrying", chat_id, exc)
                await asyncio.sleep(self.send_retry_delay * (2**attempt))
        return None  # pragma: no cover - the loop always returns or raises

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
    def error_text(self) -> str:
        try:
            return self.content.text(ERROR_KEY)
        except Exception:  # a missing key must not stop the apology
            return FALLBACK_ERROR

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """PTB's error handler: log with the update id; tell the user politely; never raise."""
        err = context.error
        uid = update.update_id if isinstance(update, Update) else None
        log.error("update %s failed: %s: %s", uid, type(err).__name__, err, exc_info=err)
        if not isinstance(update, Update):
            return
        chat = update.effective_chat
        if chat is None or chat.type != Chat.PRIVATE or chat.id in self._blocked:
            return
        try:
            cq = update.callback_query
            if cq is not None and not self.was_answered(cq.id):
                await self._answer(cq, "")
            await self._send(chat.id, to_html(self.error_text()), None)
        except Exception as exc:  # the apology failed too: logged, nothing else to do
            log.warning("could not tell %s about the error: %s", chat.id, exc)
