"""The agents feature on python-telegram-bot: the ``GroupGateway`` implementation, the update
handler for the agents' group (``install``; ``bot.tg.features`` wires both into ``run``).

It lives in the Telegram door (the only package that imports ``telegram``); the desk in
bot/agents sees it only as a ``GroupGateway``. ``install`` adds one handler in its
own PTB group (``AGENTS_GROUP``, before the door's): updates from the agents' chat, and agent
commands sent to the bot privately, are queued for the desk and stop there
(``ApplicationHandlerStop``); everything else goes on to the door untouched. A non-agent
sending an agent command privately gets no answer at all (the desk checks membership).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from telegram import (
    Bot,
    Chat,
    ChatMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    LinkPreviewOptions,
    Message,
    MessageEntity,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.ext import Application, ApplicationHandlerStop, ContextTypes, TypeHandler

from bot.agents.desk import (
    AGENT_ONLY_COMMANDS,
    AgentCallback,
    AgentCommand,
    AgentDesk,
    AgentMessage,
    UserMedia,
)
from bot.agents.desk.records import CALLBACK_PREFIX, FORGET_CHOICES
from bot.agents.ports import (
    GatewayError,
    MessageGone,
    NotModified,
    RetryLater,
    Sent,
    ThreadNotFound,
    UserBlocked,
)
from bot.core.messages import Reply
from bot.tg.door import conversation_id
from bot.tg.render import keyboard_rows, split_text, to_html

log = logging.getLogger(__name__)

AGENTS_GROUP = -10  # PTB handler group: before the door (group 0)
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
MEDIA_KINDS = (
    "photo",
    "video",
    "animation",
    "document",
    "audio",
    "voice",
    "video_note",
    "sticker",
    "location",
    "venue",
    "contact",
    "poll",
    "dice",
)


def _translate(exc: TelegramError) -> GatewayError:
    if isinstance(exc, RetryAfter):
        wait = exc.retry_after
        seconds = wait.total_seconds() if hasattr(wait, "total_seconds") else float(wait)
        return RetryLater(seconds, str(exc))
    if isinstance(exc, Forbidden):
        return UserBlocked(exc.message)
    if isinstance(exc, BadRequest):
        msg = exc.message.lower()
        if "thread not found" in msg or "topic_deleted" in msg or "topic_id_invalid" in msg:
            return ThreadNotFound(exc.message)
        if "not modified" in msg:
            return NotModified(exc.message)
        if (
            "message to edit not found" in msg
            or "message can't be edited" in msg
            or "message to pin not found" in msg
            or "message to copy not found" in msg
            or "message to delete not found" in msg
            or "message can't be deleted" in msg
            or "message_id_invalid" in msg
        ):
            return MessageGone(exc.message)
        return GatewayError(exc.message)
    return GatewayError(f"{type(exc).__name__}: {exc}")


def _markup(buttons: Sequence[tuple[str, str]]) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data)] for label, data in buttons])


class PTBGateway:
    """``GroupGateway`` on a PTB ``Bot`` (the Application's, so the door's rate limiter applies).

    ``deliver`` sends engine replies to a user the way the door does (keyboards, splitting):
    pass the door's ``TelegramDoor.deliver``; without it a minimal rendering is used.
    """

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        deliver: Callable[[int, Sequence[Reply]], Awaitable[Any]] | None = None,
    ) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.deliver = deliver

    async def _do(self, coro: Awaitable[Any]) -> Any:
        try:
            return await coro
        except TelegramError as exc:
            raise _translate(exc) from exc

    # the agents' group
    async def create_topic(self, name: str) -> int:
        topic = await self._do(self.bot.create_forum_topic(self.chat_id, name))
        return int(topic.message_thread_id)

    async def rename_topic(self, thread_id: int, name: str) -> None:
        await self._do(self.bot.edit_forum_topic(self.chat_id, thread_id, name=name))

    async def delete_topic(self, thread_id: int) -> None:
        await self._do(self.bot.delete_forum_topic(self.chat_id, thread_id))

    async def send(self, thread_id: int | None, html: str, buttons: Sequence[tuple[str, str]] = ()) -> Sent:
        msg = await self._do(
            self.bot.send_message(
                self.chat_id,
                html,
                parse_mode=ParseMode.HTML,
                message_thread_id=thread_id,
                reply_markup=_markup(buttons),
                link_preview_options=NO_PREVIEW,
                disable_notification=True,
            )
        )
        return Sent(msg.message_id, thread_id)

    async def edit(self, message_id: int, html: str, buttons: Sequence[tuple[str, str]] = ()) -> None:
        await self._do(
            self.bot.edit_message_text(
                html,
                chat_id=self.chat_id,
                message_id=message_id,
                parse_mode=ParseMode.HTML,
                reply_markup=_markup(buttons),
                link_preview_options=NO_PREVIEW,
            )
        )

    async def pin(self, message_id: int) -> None:
        await self._do(self.bot.pin_chat_message(self.chat_id, message_id, disable_notification=True))

    async def send_document(self, thread_id: int | None, filename: str, data: bytes, caption_html: str = "") -> Sent:
        msg = await self._do(
            self.bot.send_document(
                self.chat_id,
                InputFile(data, filename=filename),
                caption=caption_html or None,
                parse_mode=ParseMode.HTML,
                message_thread_id=thread_id,
                disable_notification=True,
            )
        )
        return Sent(msg.message_id, thread_id)

    async def answer_callback(self, callback_id: str, text: str = "") -> None:
        await self._do(self.bot.answer_callback_query(callback_id, text=text[:200] or None))

    async def is_member(self, user_id: int) -> bool:
        member = await self._do(self.bot.get_chat_member(self.chat_id, user_id))
        return member.status in (
            ChatMember.OWNER,
            ChatMember.ADMINISTRATOR,
            ChatMember.MEMBER,
            ChatMember.RESTRICTED,
        )

    async def is_admin(self, user_id: int) -> bool:
        member = await self._do(self.bot.get_chat_member(self.chat_id, user_id))
        return member.status in (ChatMember.OWNER, ChatMember.ADMINISTRATOR)

    async def delete_messages(self, message_ids: Sequence[int], chat_id: int | None = None) -> None:
        ok = await self._do(self.bot.delete_messages(chat_id if chat_id is not None else self.chat_id, message_ids))
        if not ok:
            raise MessageGone("messages to delete not found")

    # users
    async def send_to_user(self, chat_id: int, html: str) -> int:
        msg = await self._do(
            self.bot.send_message(chat_id, html, parse_mode=ParseMode.HTML, link_preview_options=NO_PREVIEW)
        )
        return int(msg.message_id)

    async def copy_to_user(self, chat_id: int, from_message_id: int, caption_html: str | None) -> int:
        mid = await self._do(
            self.bot.copy_message(
                chat_id,
                self.chat_id,
                from_message_id,
                caption=caption_html,
                parse_mode=ParseMode.HTML,
            )
        )
        return int(mid.message_id)

    async def copy_to_topic(
        self, thread_id: int | None, from_chat_id: int, message_id: int, caption_html: str | None
    ) -> Sent:
        mid = await self._do(
            self.bot.copy_message(
                self.chat_id,
                from_chat_id,
                message_id,
                message_thread_id=thread_id,
                caption=caption_html,
                parse_mode=ParseMode.HTML if caption_html is not None else None,
                disable_notification=True,
            )
        )
        return Sent(int(mid.message_id), thread_id)

    async def edit_user_message(self, chat_id: int, message_id: int, html: str, caption: bool) -> None:
        if caption:
            await self._do(
                self.bot.edit_message_caption(
                    chat_id=chat_id, message_id=message_id, caption=html, parse_mode=ParseMode.HTML
                )
            )
        else:
            await self._do(
                self.bot.edit_message_text(
                    html,
                    chat_id=chat_id,
                    message_id=message_id,
                    parse_mode=ParseMode.HTML,
                    link_preview_options=NO_PREVIEW,
                )
            )

    async def send_replies(self, chat_id: int, replies: Sequence[Reply]) -> None:
        if self.deliver is not None:
            await self.deliver(chat_id, replies)
            return
        for reply in replies:
            parts = split_text(reply.text) or ["…"]
            markup = None
            if reply.buttons:
                markup = InlineKeyboardMarkup(
                    [
                        [InlineKeyboardButton(b.label, callback_data=b.id) for b in row]
                        for row in keyboard_rows(reply.buttons)
                    ]
                )
            for i, part in enumerate(parts):
                await self._do(
                    self.bot.send_message(
                        chat_id,
                        to_html(part),
                        parse_mode=ParseMode.HTML,
                        reply_markup=markup if i == len(parts) - 1 else None,
                        link_preview_options=NO_PREVIEW,
                    )
                )

    async def send_private(self, chat_id: int, html: str, buttons: Sequence[tuple[str, str]] = ()) -> int:
        msg = await self._do(
            self.bot.send_message(
                chat_id, html, parse_mode=ParseMode.HTML, link_preview_options=NO_PREVIEW, reply_markup=_markup(buttons)
            )
        )
        return int(msg.message_id)

    async def send_private_document(self, chat_id: int, filename: str, data: bytes, caption_html: str = "") -> int:
        msg = await self._do(
            self.bot.send_document(
                chat_id,
                InputFile(data, filename=filename),
                caption=caption_html or None,
                parse_mode=ParseMode.HTML,
            )
        )
        return int(msg.message_id)

    async def edit_private(self, chat_id: int, message_id: int, html: str) -> None:
        await self._do(
            self.bot.edit_message_text(
                html, chat_id=chat_id, message_id=message_id, parse_mode=ParseMode.HTML, link_preview_options=NO_PREVIEW
            )
        )


# -- updates from Telegram -> the desk ---------------------------------------------------------------------


def _command(msg: Message, bot_username: str) -> tuple[str, str] | None:
    ents = msg.entities
    text = msg.text or ""
    if not text.startswith("/"):
        return None
    if ents and not (ents[0].type == MessageEntity.BOT_COMMAND and ents[0].offset == 0):
        return None
    head = text.split(maxsplit=1)[0]
    name, _, addressee = head[1:].partition("@")
    if addressee and bot_username and addressee.lower() != bot_username.lower():
        return None
    if not name or not all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in name):
        return None  # "//": a note, not a command
    return name.lower(), text[len(head) :].strip()


def _forget_press(data: str) -> bool:
    return data.startswith(CALLBACK_PREFIX) and data[len(CALLBACK_PREFIX) :].partition(":")[0] in FORGET_CHOICES


def _media_kind(msg: Message) -> str:
    for kind in MEDIA_KINDS:
        if getattr(msg, kind, None):
            return kind
    return ""


class AgentUpdates:
    """The PTB handler: classify synchronously (order kept), queue for the desk, stop."""

    def __init__(self, desk: AgentDesk, chat_id: int) -> None:
        self.desk = desk
        self.chat_id = chat_id
        self._seen: OrderedDict[int, None] = OrderedDict()

    def _dup(self, update_id: int) -> bool:
        if update_id in self._seen:
            return True
        self._seen[update_id] = None
        while len(self._seen) > 5000:
            self._seen.popitem(last=False)
        return False

    def wants(self, raw: Mapping[str, Any]) -> bool:
        """Whether this handler may act on a raw update (if not, the door takes it without PTB):
        anything from the agents' chat, a private /forget confirmation press, a private media
        message (the desk keeps a note of it), a private command only agents use or /forget.
        An update it cannot read is wanted (PTB's path decides)."""
        try:
            cq = raw.get("callback_query")
            if cq is not None:
                msg = cq.get("message")
                if msg is None:
                    return False  # no chat: the handler does nothing
                chat = msg["chat"]
                if chat["id"] == self.chat_id:
                    return True
                return chat["type"] == Chat.PRIVATE and _forget_press(cq.get("data") or "")
            for key in ("message", "edited_message", "my_chat_member"):
                body = raw.get(key)
                if body is None:
                    continue
                chat = body["chat"]
                if chat["id"] == self.chat_id:
                    return True
                if key != "message" or chat["type"] != Chat.PRIVATE:
                    return False
                text = body.get("text")
                if not text:
                    return any(body.get(kind) for kind in MEDIA_KINDS)
                if not text.startswith("/"):
                    return False
                name = text[1:].split(maxsplit=1)[0].partition("@")[0].lower()
                return name in AGENT_ONLY_COMMANDS or name == "forget"
            return False
        except (KeyError, TypeError, AttributeError, IndexError):
            return True

    async def __call__(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        if chat is None:
            return
        username = context.bot.username if context and context.bot else ""
        if chat.id == self.chat_id:
            if not self._dup(update.update_id):
                self._agent_chat(update, username or "")
            raise ApplicationHandlerStop
        cq = update.callback_query
        if chat.type == Chat.PRIVATE and cq is not None and _forget_press(cq.data or ""):
            if not self._dup(update.update_id):  # an administrator confirms /forget #N privately
                msg_id = cq.message.message_id if cq.message else 0
                user = cq.from_user
                name = user.first_name or ""
                self.desk.submit(AgentCallback(cq.id, chat.id, msg_id, None, user.id, name, cq.data or ""))
            raise ApplicationHandlerStop
        if chat.type == Chat.PRIVATE and update.message is not None and not update.message.text:
            kind = _media_kind(update.message)
            if kind and not self._dup(update.update_id):  # the door answers it; the desk copies it
                self.desk.submit(
                    UserMedia(conversation_id(chat.id), chat.id, update.message.message_id, kind, time.time())
                )
            return
        if chat.type == Chat.PRIVATE and update.message is not None and update.message.text:
            cmd = _command(update.message, username or "")
            sender = update.message.from_user
            # "/forget #3" from an agent names a case: the desk's (roles, confirmation), never the
            # agent's own chat. Anyone else's goes on to the engine, which refuses an argument.
            names_case = (
                cmd is not None and cmd[0] == "forget" and bool(cmd[1])
                and sender is not None and await self.desk.is_agent(sender.id)
            )
            if cmd is not None and (cmd[0] in AGENT_ONLY_COMMANDS or names_case):
                if not self._dup(update.update_id):
                    user = update.message.from_user
                    self.desk.submit(
                        AgentCommand(
                            chat.id,
                            None,
                            update.message.message_id,
                            user.id if user else 0,
                            user.first_name if user else "",
                            cmd[0],
                            cmd[1],
                            private=True,
                            username=(user.username or "") if user else "",
                        )
                    )
                raise ApplicationHandlerStop  # never reaches the engine, whoever sent it

    def _agent_chat(self, update: Update, username: str) -> None:
        cq = update.callback_query
        if cq is not None:
            msg = cq.message
            self.desk.submit(
                AgentCallback(
                    cq.id,
                    self.chat_id,
                    msg.message_id if msg else 0,
                    getattr(msg, "message_thread_id", None) if msg else None,
                    cq.from_user.id,
                    cq.from_user.first_name or "",
                    cq.data or "",
                )
            )
            return
        edited = update.edited_message is not None
        msg = update.edited_message or update.message
        if msg is None:
            if update.my_chat_member is not None:
                log.info("agents' group: the bot is now %s", update.my_chat_member.new_chat_member.status)
            return
        user = msg.from_user
        if user is None:
            return
        if user.is_bot:
            if msg.sender_chat is None or msg.sender_chat.id != self.chat_id:
                return  # other bots
            name = msg.author_signature or msg.sender_chat.title or "Support"  # an anonymous admin
        else:
            name = user.first_name or user.username or str(user.id)
        thread = msg.message_thread_id if msg.is_topic_message else None
        cmd = _command(msg, username) if msg.text else None
        if cmd is not None:
            if not edited:
                self.desk.submit(
                    AgentCommand(
                        self.chat_id,
                        thread,
                        msg.message_id,
                        user.id,
                        name,
                        cmd[0],
                        cmd[1],
                        username=user.username or "",
                    )
                )
            return
        media = _media_kind(msg)
        text = msg.text or msg.caption or ""
        if msg.text is not None:
            html = msg.text_html
        elif msg.caption is not None:
            html = msg.caption_html
        else:
            html = ""
        if not text and not media:
            return  # service messages (topic created, pinned, member joined...)
        self.desk.submit(
            AgentMessage(
                self.chat_id,
                thread,
                msg.message_id,
                user.id,
                name,
                text,
                html,
                media=media,
                edited=edited,
                username=user.username or "",
            )
        )


def install(application: Application, desk: AgentDesk) -> AgentUpdates | None:
    """Route the agents' group (and agent commands in private chats) to the desk."""
    if desk.chat_id is None:
        return None
    handler = AgentUpdates(desk, desk.chat_id)
    application.add_handler(TypeHandler(Update, handler), group=AGENTS_GROUP)
    return handler
