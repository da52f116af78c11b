"""What users do: the simulated side of a chat (messages, commands, media, edits, button
presses, blocking the bot) — each becomes an update queued for the bot (``FakeBotAPI.push``)."""

from __future__ import annotations

import re
import time
from typing import Any

from .objects import SentMessage, utf16_len

MEDIA_FIELDS = (
    "photo", "animation", "video", "video_note", "voice", "audio", "sticker", "document", "location", "contact",
)


class UserActions:
    """Mixed into ``FakeBotAPI``: builds updates from users' actions."""

    # the server's state these read and write (set in FakeBotAPI.__init__)
    updates: list[dict[str, Any]]
    messages: dict[int, dict[int, SentMessage]]
    callback_queries: dict[str, dict[str, Any]]

    # -- driving the bot: what users do ----------------------------------------------------------
    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (``update_id`` assigned unless given). Returns it."""
        if "update_id" not in update:
            update = {"update_id": self._next_update_id, **update}
        self._next_update_id = max(self._next_update_id, int(update["update_id"]) + 1)
        self.updates.append(update)
        self._updates_ready.set()
        self._changed()
        return update

    def _user_message(self, chat_id: int, user_id: int | None, first_name: str | None, **fields: Any) -> dict[str, Any]:
        uid = user_id if user_id is not None else chat_id
        message_id = self._new_message_id(chat_id)
        msg = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self.chat(chat_id),
            "from": self.user(uid, first_name),
            **fields,
        }
        text = fields.get("text") or fields.get("caption") or ""
        kind = "text" if "text" in fields else next((k for k in MEDIA_FIELDS if k in fields), "text")
        self.messages.setdefault(chat_id, {})[message_id] = SentMessage(
            chat_id, message_id, text, text, [], None, msg["date"], from_bot=False, kind=kind,
            thread_id=fields.get("message_thread_id"),
        )
        return msg

    def send_text(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        first_name: str | None = None,
        thread_id: int | None = None,
    ) -> dict[str, Any]:
        """A user types ``text`` (a leading ``/command`` gets its bot_command entity)."""
        fields: dict[str, Any] = {"text": text}
        if re.match(r"/[A-Za-z0-9_]", text):  # like Telegram: "//" or "/ x" is no command
            cmd = text.split(maxsplit=1)[0]
            fields["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(cmd)}]
        if thread_id:
            fields["message_thread_id"] = thread_id
            fields["is_topic_message"] = True
        return self.push({"message": self._user_message(chat_id, user_id, first_name, **fields)})

    def command(self, chat_id: int, name: str, arg: str = "", **kw: Any) -> dict[str, Any]:
        return self.send_text(chat_id, f"/{name} {arg}".strip(), **kw)

    def send_media(
        self,
        chat_id: int,
        kind: str,
        *,
        caption: str | None = None,
        user_id: int | None = None,
        size: int = 1234,
    ) -> dict[str, Any]:
        """A user sends a photo, voice, video, video_note, audio, animation, sticker,
        document, location or contact."""
        n = next(self._seq)
        ident = {"file_id": f"{kind}-{n}", "file_unique_id": f"uniq-{kind}-{n}"}
        body: dict[str, Any]
        if kind == "photo":
            body = {
                "photo": [
                    {
                        **ident,
                        "file_id": f"{kind}-{n}-s",
                        "width": 90,
                        "height": 90,
                        "file_size": size // 10,
                    },
                    {**ident, "width": 1280, "height": 960, "file_size": size},
                ]
            }
        elif kind == "voice":
            body = {"voice": {**ident, "duration": 3, "mime_type": "audio/ogg", "file_size": size}}
        elif kind == "audio":
            body = {"audio": {**ident, "duration": 3, "file_size": size}}
        elif kind == "video":
            body = {"video": {**ident, "width": 640, "height": 480, "duration": 3, "file_size": size}}
        elif kind == "video_note":
            body = {"video_note": {**ident, "length": 240, "duration": 3, "file_size": size}}
        elif kind == "animation":
            body = {
                "animation": {
                    **ident,
                    "width": 100,
                    "height": 100,
                    "duration": 1,
                    "file_size": size,
                }
            }
        elif kind == "sticker":
            body = {
                "sticker": {
                    **ident,
                    "type": "regular",
                    "width": 512,
                    "height": 512,
                    "is_animated": False,
                    "is_video": False,
                    "emoji": "😢",
                    "file_size": size,
                }
            }
        elif kind == "document":
            body = {
                "document": {
                    **ident,
                    "file_name": "backup-error.png",
                    "mime_type": "image/png",
                    "file_size": size,
                }
            }
        elif kind == "location":
            body = {"location": {"latitude": 52.52, "longitude": 13.405}}
        elif kind == "contact":
            body = {"contact": {"phone_number": "+15550100", "first_name": "Ann", "user_id": chat_id}}
        else:
            raise ValueError(f"unknown media kind {kind!r}")
        if caption:
            body["caption"] = caption
        return self.push({"message": self._user_message(chat_id, user_id, None, **body)})

    def edit_text(self, chat_id: int, message_id: int, text: str, *, user_id: int | None = None) -> dict[str, Any]:
        """A user edits one of their earlier messages."""
        uid = user_id if user_id is not None else chat_id
        msg = {
            "message_id": message_id,
            "date": int(time.time()) - 5,
            "edit_date": int(time.time()),
            "chat": self.chat(chat_id),
            "from": self.user(uid),
            "text": text,
        }
        return self.push({"edited_message": msg})

    def press(
        self,
        chat_id: int,
        *,
        label: str | None = None,
        data: str | None = None,
        index: int | None = None,
        message_id: int | None = None,
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """A user presses a button of ``message_id`` (default: the newest keyboard), chosen
        by ``label`` (prefix match), ``data`` or ``index`` (default: the first)."""
        msg = self.messages.get(chat_id, {}).get(message_id) if message_id is not None else self.last_keyboard(chat_id)
        if msg is None:
            raise LookupError(f"no message {message_id} in chat {chat_id}")
        buttons = msg.buttons
        if data is None:
            if label is not None:
                matching = [b for b in buttons if b["text"] == label] or [
                    b for b in buttons if b["text"].startswith(label)
                ]
                if not matching:
                    raise LookupError(f"no button {label!r} in {msg.labels}")
                data = matching[0].get("callback_data", "")
            else:
                if not buttons:
                    raise LookupError(f"message {msg.message_id} has no buttons")
                data = buttons[index or 0].get("callback_data", "")
        uid = user_id if user_id is not None else chat_id
        qid = f"cq{next(self._cq_ids)}"
        self.callback_queries[qid] = {"answered": False, "text": None, "chat_id": chat_id}
        query = {
            "id": qid,
            "from": self.user(uid),
            "chat_instance": f"ci{chat_id}",
            "data": data,
            "message": self._message_api(msg),
        }
        return self.push({"callback_query": query})

    def member_status(
        self,
        chat_id: int,
        new_status: str,
        *,
        old_status: str = "member",
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """my_chat_member: the bot's status in ``chat_id`` changed (kicked = blocked, in a
        private chat; member/administrator = added to a group; left = removed)."""

        def member(status: str) -> dict[str, Any]:
            out: dict[str, Any] = {"status": status, "user": self.bot_user}
            if status == "kicked":
                out["until_date"] = 0
            if status == "administrator":
                out.update(
                    {
                        k: True
                        for k in (
                            "can_be_edited",
                            "can_manage_chat",
                            "can_delete_messages",
                            "can_manage_video_chats",
                            "can_restrict_members",
                            "can_change_info",
                            "can_invite_users",
                            "can_post_stories",
                            "can_edit_stories",
                            "can_delete_stories",
                            "can_pin_messages",
                            "can_manage_topics",
                        )
                    },
                    is_anonymous=False,
                    can_promote_members=False,
                )
            return out

        uid = user_id if user_id is not None else (chat_id if chat_id > 0 else 999)
        upd = {
            "chat": self.chat(chat_id),
            "from": self.user(uid),
            "date": int(time.time()),
            "old_chat_member": member(old_status),
            "new_chat_member": member(new_status),
        }
        return self.push({"my_chat_member": upd})
