"""The Bot API methods the fake implements over its chats: sending (text and files), edits,
deleting, button answers, commands, files, leaving, chats and forum topics — each checks its
parameters the way Telegram does and answers 400 where Telegram would."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .objects import ApiError, Call, SentMessage, bad_request, parse_html, utf16_len

Handler = Callable[[Call], Awaitable[Any]]


class BotMethods:
    """Mixed into ``FakeBotAPI``: the handlers of the methods about chats and messages."""

    # messages
    def _check_chat(self, chat_id: Any, thread_id: Any = None) -> int:
        if not isinstance(chat_id, int):
            raise bad_request("chat not found")
        if chat_id in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if chat_id in self.left_chats:
            raise ApiError(403, "Forbidden: bot is not a member of the supergroup chat")
        if thread_id:
            topic = self.topics.get(chat_id, {}).get(int(thread_id))
            if topic is None or topic.get("deleted"):
                raise bad_request("message thread not found")
            if topic.get("closed"):
                raise bad_request("TOPIC_CLOSED")
        return chat_id

    def _parse_text(
        self, params: dict[str, Any], key: str = "text", limit: int = 4096
    ) -> tuple[str, list[dict[str, Any]], str]:
        source = params.get(key)
        if not isinstance(source, str):
            raise bad_request("message text is empty")
        mode = str(params.get("parse_mode") or "").lower()
        if mode == "html":
            try:
                text, entities = parse_html(source)
            except ValueError as exc:
                raise bad_request(str(exc)) from None
        elif mode:
            text, entities = source, []  # Markdown isn't parsed by the fake
        else:
            text, entities = source, list(params.get("entities") or [])
        if not text.strip():
            raise bad_request("message text is empty")
        if utf16_len(text) > limit:
            raise bad_request("message is too long" if key == "text" else "message caption is too long")
        return text, entities, source

    @staticmethod
    def _parse_keyboard(params: dict[str, Any]) -> list[list[dict[str, Any]]] | None:
        markup = params.get("reply_markup")
        if markup is None or markup == "":
            return None
        if isinstance(markup, str):
            raise bad_request("can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return None  # reply keyboards / remove keyboard: not kept
        for row in rows:
            for b in row:
                if not b.get("text"):
                    raise bad_request("text buttons are unallowed in the inline keyboard")
                data = b.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode("utf-8")) <= 64:
                    raise bad_request("BUTTON_DATA_INVALID")
        return rows or None

    async def _send_message(self, call: Call) -> dict[str, Any]:
        p = call.params
        chat_id = self._check_chat(p.get("chat_id"), p.get("message_thread_id"))
        text, entities, source = self._parse_text(p)
        keyboard = self._parse_keyboard(p)
        m = SentMessage(
            chat_id,
            self._new_message_id(chat_id),
            text,
            source,
            entities,
            keyboard,
            int(time.time()),
            thread_id=p.get("message_thread_id"),
        )
        self.messages.setdefault(chat_id, {})[m.message_id] = m
        return self._message_api(m)

    def _send_file(self, kind: str) -> Handler:
        async def send(call: Call) -> dict[str, Any]:
            p = call.params
            chat_id = self._check_chat(p.get("chat_id"), p.get("message_thread_id"))
            if kind not in p:
                raise bad_request(f"there is no {kind} in the request")
            caption = ""
            if p.get("caption"):
                caption, _, _ = self._parse_text(p, "caption", 1024)
            m = SentMessage(
                chat_id,
                self._new_message_id(chat_id),
                caption,
                p.get("caption", ""),
                [],
                self._parse_keyboard(p),
                int(time.time()),
                thread_id=p.get("message_thread_id"),
                kind=kind,
            )
            self.messages.setdefault(chat_id, {})[m.message_id] = m
            return self._message_api(m)

        return send

    async def _copy_message(self, call: Call) -> dict[str, Any]:
        """A copy of any message the fake knows (a user's or the bot's), like Telegram: the
        source must exist; ``caption`` replaces a media message's caption (media only)."""
        p = call.params
        chat_id = self._check_chat(p.get("chat_id"), p.get("message_thread_id"))
        source = self.messages.get(p.get("from_chat_id"), {}).get(p.get("message_id"))  # type: ignore[arg-type]
        if source is None or source.deleted:
            raise bad_request("message to copy not found")
        text, source_html, entities = source.text, source.source, source.entities
        if p.get("caption") is not None and source.kind != "text":
            text, entities, source_html = self._parse_text(p, "caption", 1024)
        m = SentMessage(
            chat_id,
            self._new_message_id(chat_id),
            text,
            source_html,
            entities,
            self._parse_keyboard(p),
            int(time.time()),
            thread_id=p.get("message_thread_id"),
            kind=source.kind,
        )
        self.messages.setdefault(chat_id, {})[m.message_id] = m
        return {"message_id": m.message_id}

    def _find_message(self, p: dict[str, Any]) -> SentMessage:
        chat_id = p.get("chat_id")
        if chat_id in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        m = self.messages.get(chat_id, {}).get(p.get("message_id"))  # type: ignore[arg-type]
        if m is None or m.deleted:
            raise bad_request("message to edit not found")
        if not m.from_bot:
            raise bad_request("message can't be edited")
        return m

    async def _edit_message_text(self, call: Call) -> dict[str, Any]:
        p = call.params
        m = self._find_message(p)
        text, entities, source = self._parse_text(p)
        keyboard = self._parse_keyboard(p)
        if text == m.text and entities == m.entities and keyboard == m.keyboard:
            raise bad_request(
                "message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup "
                "of the message"
            )
        m.text, m.entities, m.source, m.keyboard = text, entities, source, keyboard
        m.edits += 1
        return self._message_api(m)

    async def _edit_reply_markup(self, call: Call) -> dict[str, Any]:
        m = self._find_message(call.params)
        keyboard = self._parse_keyboard(call.params)
        if keyboard == m.keyboard:
            raise bad_request(
                "message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup "
                "of the message"
            )
        m.keyboard = keyboard
        m.edits += 1
        return self._message_api(m)

    async def _delete_message(self, call: Call) -> bool:
        p = call.params
        m = self.messages.get(p.get("chat_id"), {}).get(p.get("message_id"))  # type: ignore[arg-type]
        if m is None or m.deleted:
            raise bad_request("message to delete not found")
        m.deleted = True
        return True

    async def _delete_messages(self, call: Call) -> bool:
        p = call.params
        ids = p.get("message_ids") or []
        if isinstance(ids, str):
            ids = json.loads(ids)
        box = self.messages.get(p.get("chat_id"), {})  # type: ignore[arg-type]
        found = [box[i] for i in ids if i in box and not box[i].deleted]
        if not found:
            raise bad_request("message to delete not found")
        for m in found:
            m.deleted = True
        return True

    async def _answer_callback_query(self, call: Call) -> bool:
        p = call.params
        q = self.callback_queries.get(str(p.get("callback_query_id")))
        if q is None or q["answered"]:
            raise bad_request("query is too old and response timeout expired or query ID is invalid")
        text = p.get("text")
        if text is not None and len(str(text)) > 200:
            raise bad_request("MESSAGE_TOO_LONG")
        q["answered"] = True
        q["text"] = text
        return True

    async def _set_my_commands(self, call: Call) -> bool:
        commands = call.params.get("commands") or []
        if len(commands) > 100:
            raise bad_request("too many commands")
        for c in commands:
            name = c.get("command", "")
            if not (1 <= len(name) <= 32 and all(ch.islower() or ch.isdigit() or ch == "_" for ch in name)):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(c.get("description", "")) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        scope = json.dumps(call.params.get("scope") or {"type": "default"}, sort_keys=True)
        self.commands[f"{scope}|{call.params.get('language_code', '')}"] = list(commands)
        return True

    async def _get_my_commands(self, call: Call) -> list[dict[str, str]]:
        scope = json.dumps(call.params.get("scope") or {"type": "default"}, sort_keys=True)
        return self.commands.get(f"{scope}|{call.params.get('language_code', '')}", [])

    async def _delete_my_commands(self, call: Call) -> bool:
        scope = json.dumps(call.params.get("scope") or {"type": "default"}, sort_keys=True)
        self.commands.pop(f"{scope}|{call.params.get('language_code', '')}", None)
        return True

    async def _get_file(self, call: Call) -> dict[str, Any]:
        file_id = str(call.params.get("file_id", ""))
        if not file_id:
            raise bad_request("invalid file_id")
        path = f"files/{file_id}"
        self.files.setdefault(path, b"fake file " + file_id.encode())
        return {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "file_size": len(self.files[path]),
            "file_path": path,
        }

    async def _leave_chat(self, call: Call) -> bool:
        chat_id = call.params.get("chat_id")
        if not isinstance(chat_id, int) or chat_id > 0:
            raise bad_request("chat member status can't be changed in private chats")
        self.left_chats.add(chat_id)
        return True

    async def _get_chat(self, call: Call) -> dict[str, Any]:
        chat_id = call.params.get("chat_id")
        if not isinstance(chat_id, int):
            raise bad_request("chat not found")
        return {
            **self.chat(chat_id),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
            },
        }

    def _forum(self, chat_id: Any) -> dict[int, dict[str, Any]]:
        chat = self.chats.get(chat_id) if isinstance(chat_id, int) else None
        if not chat or not chat.get("is_forum"):
            raise bad_request("the chat is not a forum")
        if chat_id in self.left_chats:
            raise ApiError(403, "Forbidden: bot is not a member of the supergroup chat")
        return self.topics.setdefault(chat_id, {})

    async def _create_forum_topic(self, call: Call) -> dict[str, Any]:
        p = call.params
        topics = self._forum(p.get("chat_id"))
        name = str(p.get("name") or "")
        if not 1 <= len(name) <= 128:
            raise bad_request("TOPIC_NAME_INVALID" if name else "topic name is empty")
        thread_id = self._new_message_id(p["chat_id"])  # topics share the message id sequence
        topics[thread_id] = {
            "name": name,
            "closed": False,
            "deleted": False,
            "icon_color": p.get("icon_color", 7322096),
        }
        return {
            "message_thread_id": thread_id,
            "name": name,
            "icon_color": topics[thread_id]["icon_color"],
        }

    def _topic(self, p: dict[str, Any]) -> dict[str, Any]:
        topics = self._forum(p.get("chat_id"))
        topic = topics.get(p.get("message_thread_id"))  # type: ignore[arg-type]
        if topic is None or topic["deleted"]:
            raise bad_request("message thread not found")
        return topic

    async def _edit_forum_topic(self, call: Call) -> bool:
        topic = self._topic(call.params)
        name = call.params.get("name")
        if name is not None:
            if not 1 <= len(str(name)) <= 128:
                raise bad_request("TOPIC_NAME_INVALID")
            if name == topic["name"]:
                raise bad_request("TOPIC_NOT_MODIFIED")
            topic["name"] = name
        return True

    def _topic_flag(self, key: str, value: bool) -> Handler:
        async def handler(call: Call) -> bool:
            topic = self._topic(call.params)
            if topic[key] == value:
                raise bad_request("TOPIC_NOT_MODIFIED")
            topic[key] = value
            return True

        return handler

    async def _delete_forum_topic(self, call: Call) -> bool:
        self._topic(call.params)["deleted"] = True
        return True

    async def _pin_chat_message(self, call: Call) -> bool:
        p = call.params
        chat_id = self._check_chat(p.get("chat_id"))
        if p.get("message_id") not in self.messages.get(chat_id, {}):
            raise bad_request("message to pin not found")
        return True

