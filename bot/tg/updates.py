"""Reading Telegram updates: one PTB ``Update`` -> one ``Work`` (what the door must do for
which chat), a private chat's message -> one seam ``Inbound``.

Pure translation, no I/O: ``classify`` is synchronous so the door keeps the order of arrival.
Private chats are conversations; a group or channel gets ``group`` (the bot says once that it
works in private chats and leaves); the agents' and lab chats (``service_chats``) are other
features' and give None; a press under a message gets ``turn`` (or ``answer``: the toast only).
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import CallbackQuery, Chat, ChatMember, Message, MessageEntity, Update

from bot.core.messages import Attachment, EventKind, Inbound


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


def classify(update: Update, *, service_chats: frozenset[int], bot_username: str, now: float) -> Work | None:
    """What the door must do for ``update`` (None: nothing). Synchronous: the order of
    arrival is kept. ``now``: the loop time it arrived (the typing indicator counts from it)."""
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
        if chat.id in service_chats:
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
            if chat.id in service_chats:
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
        if chat.id in service_chats:
            return None
        return Work("group", chat.id, uid, chat_type=chat.type)
    inbound = to_inbound(msg, bot_username)
    if inbound is None:
        return None
    return Work("turn", chat.id, uid, inbound=inbound, received=now)
