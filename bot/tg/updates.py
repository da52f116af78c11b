"""Reading Telegram updates: one raw update (the Bot API's JSON, as a dict) -> one ``Work``
(what the door must do for which chat), a private chat's message -> one seam ``Inbound``.

Pure translation, no I/O: ``classify`` is synchronous so the door keeps the order of arrival.
It reads the dict straight away (no PTB objects: the intake hands the door its updates
without ``Update.de_json``) and checks the type of every field it reads; an update whose
fields have the wrong shape raises ``Unreadable`` (the intake then lets PTB try it, which
skips it as unreadable — a message without a date, entities that are not a list, a user
without ``is_bot``, a sticker missing its fields…).

Private chats are conversations; a group or channel gets ``group`` (the bot says once that it
works in private chats and leaves); the agents' and lab chats (``service_chats``) are other
features' and give None; a press under a message gets ``turn`` (or ``answer``: the toast only).
A press is carried as a ``Press``: what the door uses of the ``callback_query`` (the toast
answers its id; ``bot.tg.plan`` edits the pressed message).
"""

from __future__ import annotations

import datetime as dtm
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telegram import Chat, ChatMember, Message, MessageEntity

from bot.core.messages import Attachment, EventKind, Inbound


class Unreadable(ValueError):
    """A field the door reads is missing or has the wrong type."""


@dataclass(frozen=True)
class Press:
    """A button press (``callback_query``), as far as the door uses it."""

    id: str  # the query id (the toast answers it)
    chat_id: int  # 0: a button under an inline-mode message
    data: str | None
    first_name: str
    message_id: int | None = None  # the pressed message; None when it cannot be edited
    text: str | None = None  # the pressed message's text
    entities: tuple[Mapping[str, Any], ...] = ()  # its entities (checked), for ``text_html``
    buttons: tuple[tuple[str, str | None], ...] = ()  # its keyboard: (label, callback_data)

    @property
    def text_html(self) -> str:
        """The pressed message's text as HTML (its bold, links… kept), PTB's rendering;
        memoised (the bot's own texts come back with every press)."""
        key = tuple(tuple(sorted(e.items())) for e in self.entities)
        try:
            return _text_html(self.text or "", key)
        except TypeError:  # unhashable: an entity naming a user (an object): not memoised
            return _text_html.__wrapped__(self.text or "", key)


@functools.lru_cache(maxsize=512)
def _text_html(text: str, entities: tuple[tuple[tuple[str, Any], ...], ...]) -> str:
    ents = MessageEntity.de_list([dict(e) for e in entities], None)
    epoch = dtm.datetime.fromtimestamp(0, dtm.UTC)
    return Message(0, epoch, Chat(0, Chat.PRIVATE), text=text, entities=ents).text_html


@dataclass(frozen=True)
class Work:
    """One update, classified: what the door must do for which chat."""

    kind: str  # turn | edited | member | group | answer
    chat_id: int
    update_id: int
    inbound: Inbound | None = None
    callback: Press | None = None
    active: bool = True  # member: the bot's new standing in a private chat
    chat_type: str = Chat.PRIVATE
    received: float = 0.0  # loop time the door got it (the typing indicator counts from here)


def conversation_id(chat_id: int) -> str:
    return f"tg:{chat_id}"


# -- checked reads ----------------------------------------------------------------------------
def _obj(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Unreadable("not an object")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unreadable("not an integer")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise Unreadable("not a string")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _chat(value: Any) -> tuple[int, str]:
    chat = _obj(value)
    return _int(chat.get("id")), _str(chat.get("type"))


def _user_name(value: Any) -> str:
    """A user object's first name (every field PTB needs is checked)."""
    user = _obj(value)
    _int(user.get("id"))
    if not isinstance(user.get("is_bot"), bool):
        raise Unreadable("is_bot")
    return _str(user.get("first_name"))


def _entities(value: Any) -> tuple[Mapping[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Unreadable("entities")
    for e in value:
        ent = _obj(e)
        _str(ent.get("type"))
        _int(ent.get("offset"))
        _int(ent.get("length"))
        if ent.get("user") is not None:
            _user_name(ent["user"])
    return tuple(value)


def _message(value: Any) -> Mapping[str, Any]:
    """A message with the fields every reader needs checked: id, date, chat, sender, text."""
    msg = _obj(value)
    _int(msg.get("message_id"))
    _int(msg.get("date"))
    _chat(msg.get("chat"))
    if msg.get("from") is not None:
        _user_name(msg["from"])
    _opt_str(msg.get("text"))
    _opt_str(msg.get("caption"))
    return msg


def _sender_name(msg: Mapping[str, Any]) -> str:
    return _user_name(msg["from"]) if msg.get("from") is not None else ""


def _slice_utf16(text: str, offset: int, length: int) -> str:
    """Telegram counts entity offsets in UTF-16 code units."""
    if text.isascii():
        return text[offset : offset + length]
    try:
        return text.encode("utf-16-le")[offset * 2 : (offset + length) * 2].decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise Unreadable("entity splits a character") from exc


# -- attachments --------------------------------------------------------------------------------
# the fields a file object must have (as the Bot API defines them; PTB refuses one without)
_FILE_FIELDS: dict[str, tuple[str, ...]] = {
    "animation": ("width", "height", "duration"),
    "video": ("width", "height", "duration"),
    "video_note": ("length", "duration"),
    "voice": ("duration",),
    "audio": ("duration",),
    "sticker": ("type", "width", "height", "is_animated", "is_video"),
    "document": (),
}
_OTHER_KINDS = ("poll", "dice", "story", "game", "invoice", "paid_media", "checklist")


def _file(value: Any, needs: tuple[str, ...]) -> tuple[str, int, str]:
    obj = _obj(value)
    file_id = _str(obj.get("file_id"))
    _str(obj.get("file_unique_id"))
    if any(obj.get(k) is None for k in needs):
        raise Unreadable("file fields")
    size = obj.get("file_size")
    return file_id, (_int(size) if size is not None else 0), _opt_str(obj.get("file_name")) or ""


def attachments_of(msg: Mapping[str, Any]) -> tuple[Attachment, ...]:
    """What a non-text message carries, as the seam's Attachment records."""
    name = _opt_str(msg.get("caption")) or ""
    photo = msg.get("photo")
    if photo:
        if not isinstance(photo, list):
            raise Unreadable("photo")
        sizes = [_file(p, ("width", "height")) for p in photo]
        file_id, size, _ = sizes[-1]
        return (Attachment("photo", file_id, size, name),)
    for kind, needs in _FILE_FIELDS.items():
        if msg.get(kind) is not None:
            file_id, size, file_name = _file(msg[kind], needs)
            return (Attachment(kind, file_id, size, file_name or name),)
    if msg.get("venue") is not None or msg.get("location") is not None:
        return (Attachment("location"),)
    if msg.get("contact") is not None:
        return (Attachment("contact"),)
    for kind in _OTHER_KINDS:
        if msg.get(kind) is not None:
            return (Attachment(kind),)
    return ()


def to_inbound(msg: Mapping[str, Any], bot_username: str = "") -> Inbound | None:
    """A private-chat message (checked by ``_message``) as one Inbound; None for service
    messages (nothing to answer)."""
    cid = conversation_id(_int(_obj(msg.get("chat")).get("id")))
    name = _sender_name(msg)
    text = _opt_str(msg.get("text"))
    if text is not None:
        ents = _entities(msg.get("entities"))
        if ents and ents[0]["type"] == MessageEntity.BOT_COMMAND and ents[0]["offset"] == 0:
            command = _slice_utf16(text, 0, ents[0]["length"])
            cmd, _, addressee = command[1:].partition("@")
            if not addressee or not bot_username or addressee.lower() == bot_username.lower():
                arg = text[len(command) :].strip()
                return Inbound(cid, EventKind.COMMAND, text=cmd.lower(), arg=arg, user_name=name)
        return Inbound(cid, EventKind.TEXT, text=text, user_name=name)
    atts = attachments_of(msg)
    if atts:
        return Inbound(cid, EventKind.MEDIA, text=_opt_str(msg.get("caption")) or "", attachments=atts, user_name=name)
    return None


def _buttons(markup: Any) -> tuple[tuple[str, str | None], ...]:
    if markup is None:
        return ()
    rows = _obj(markup).get("inline_keyboard")
    if not isinstance(rows, list):
        raise Unreadable("inline_keyboard")
    out = []
    for row in rows:
        if not isinstance(row, list):
            raise Unreadable("keyboard row")
        for b in row:
            button = _obj(b)
            out.append((_str(button.get("text")), _opt_str(button.get("callback_data"))))
    return tuple(out)


def _press(cq: Mapping[str, Any]) -> tuple[Press, str | None]:
    """The press, and the type of the chat it came from (None: an inline-mode message)."""
    qid = _str(cq.get("id"))
    first_name = _user_name(cq.get("from"))
    _str(cq.get("chat_instance"))
    data = _opt_str(cq.get("data"))
    if cq.get("message") is None:
        return Press(qid, 0, data, first_name), None
    msg = _obj(cq["message"])
    chat_id, chat_type = _chat(msg.get("chat"))
    message_id = _int(msg.get("message_id"))
    if _int(msg.get("date")) == 0:  # too old to be edited (Telegram sends only its chat and id)
        return Press(qid, chat_id, data, first_name), chat_type
    _message(msg)
    text = _opt_str(msg.get("text"))
    press = Press(qid, chat_id, data, first_name, message_id, text, _entities(msg.get("entities")),
                  _buttons(msg.get("reply_markup")))
    return press, chat_type


_JOINED = (ChatMember.MEMBER, ChatMember.ADMINISTRATOR, ChatMember.OWNER, ChatMember.RESTRICTED)


def classify(
    raw: Mapping[str, Any], *, service_chats: frozenset[int], bot_username: str, now: float
) -> Work | None:
    """What the door must do for the raw update ``raw`` (None: nothing); ``Unreadable`` when
    a field it reads has the wrong shape. Synchronous: the order of arrival is kept. ``now``:
    the loop time it arrived (the typing indicator counts from it)."""
    uid = _int(raw.get("update_id"))
    if raw.get("my_chat_member") is not None:
        cmu = _obj(raw["my_chat_member"])
        chat_id, chat_type = _chat(cmu.get("chat"))
        status = _str(_obj(cmu.get("new_chat_member")).get("status"))
        if chat_type == Chat.PRIVATE:
            return Work("member", chat_id, uid, active=status not in (ChatMember.BANNED, ChatMember.LEFT))
        if chat_id in service_chats:
            return None
        if status in _JOINED:
            return Work("group", chat_id, uid, chat_type=chat_type)
        return None  # removed from a group: nothing to do
    if raw.get("callback_query") is not None:
        press, chat_type = _press(_obj(raw["callback_query"]))
        if chat_type is None:  # a button under an inline-mode message: just answer it
            return Work("answer", 0, uid, callback=press)
        if chat_type != Chat.PRIVATE:
            if press.chat_id in service_chats:
                return None
            return Work("answer", press.chat_id, uid, callback=press)
        if press.data is None:
            return Work("answer", press.chat_id, uid, callback=press)
        inbound = Inbound(conversation_id(press.chat_id), EventKind.BUTTON, payload=press.data,
                          user_name=press.first_name)
        return Work("turn", press.chat_id, uid, inbound=inbound, callback=press, received=now)
    if raw.get("edited_message") is not None:
        chat_id, chat_type = _chat(_message(raw["edited_message"]).get("chat"))
        return Work("edited", chat_id, uid) if chat_type == Chat.PRIVATE else None
    if raw.get("message") is None:
        return None  # a kind we did not ask for (allowed_updates): ignore
    msg = _message(raw["message"])
    chat_id, chat_type = _chat(msg.get("chat"))
    if chat_type != Chat.PRIVATE:
        if chat_id in service_chats:
            return None
        return Work("group", chat_id, uid, chat_type=chat_type)
    inbound = to_inbound(msg, bot_username)
    if inbound is None:
        return None
    return Work("turn", chat_id, uid, inbound=inbound, received=now)
