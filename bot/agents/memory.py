"""An in-memory ``GroupGateway``: a forum group and users' chats as plain Python data.

For unit tests and quick experiments. It behaves like Telegram where the desk cares:
deleted topics answer ThreadNotFound, blocked users UserBlocked, editing with the same
text NotModified, and (optionally) more than ``limit`` group calls in ``window`` seconds
RetryLater. Every call is recorded with its time.
"""

from __future__ import annotations

import html as _html
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.core.messages import Reply

from .ports import Clock, MessageGone, NotModified, RetryLater, Sent, SystemClock, ThreadNotFound, UserBlocked

_TAG = re.compile(r"<[^>]+>")


def plain(html: str) -> str:
    return _html.unescape(_TAG.sub("", html))


@dataclass
class Msg:
    message_id: int
    thread_id: int | None
    html: str
    buttons: tuple[tuple[str, str], ...] = ()
    kind: str = "text"
    edits: int = 0
    data: str = ""  # a document's content

    @property
    def text(self) -> str:
        return plain(self.html)


@dataclass
class MemoryGateway:
    clock: Clock = field(default_factory=SystemClock)
    limit: int | None = None  # group calls allowed per window (None: no limit)
    window: float = 60.0
    topics: dict[int, str] = field(default_factory=dict)  # thread id -> name (live topics)
    deleted_topics: set[int] = field(default_factory=set)
    group: dict[int, Msg] = field(default_factory=dict)
    pinned: list[int] = field(default_factory=list)
    users: dict[int, list[Msg]] = field(default_factory=dict)
    replies: dict[int, list[Reply]] = field(default_factory=dict)
    private: dict[int, list[str]] = field(default_factory=dict)
    blocked: set[int] = field(default_factory=set)
    members: set[int] = field(default_factory=set)
    admins: set[int] = field(default_factory=set)
    private_msgs: dict[int, dict[int, Msg]] = field(default_factory=dict)  # chat -> id -> message
    undeletable: set[int] = field(default_factory=set)  # message ids Telegram refuses to delete (too old)
    callbacks: list[tuple[str, str]] = field(default_factory=list)
    calls: list[tuple[float, str]] = field(default_factory=list)  # group calls (time, method)
    refused: int = 0
    fail_next: list[Exception] = field(default_factory=list)
    gone: set[tuple[int, int]] = field(default_factory=set)  # users' messages deleted (chat, message)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- helpers for tests -------------------------------------------------------------------
    def in_topic(self, thread_id: int | None) -> list[Msg]:
        return [m for m in self.group.values() if m.thread_id == thread_id]

    def topic_text(self, thread_id: int | None) -> str:
        return "\n".join(m.text for m in self.in_topic(thread_id))

    def visible(self) -> list[str]:
        """The text of every message still readable anywhere: the group (topics not deleted)
        and the agents' private chats — what a privacy scan searches."""
        group = [f"{m.text} {m.data}" for m in self.group.values() if m.thread_id not in self.deleted_topics]
        private = [f"{m.text} {m.data}" for box in self.private_msgs.values() for m in box.values()]
        return group + private

    def delete_topic_now(self, thread_id: int) -> None:
        """An agent deletes a topic in the Telegram app."""
        self.topics.pop(thread_id, None)
        self.deleted_topics.add(thread_id)

    def max_in_window(self) -> int:
        times = [t for t, _ in self.calls]
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - self.window:
                j += 1
            best = max(best, i - j + 1)
        return best

    def _group_call(self, method: str) -> None:
        now = self.clock.now()
        if self.fail_next:
            raise self.fail_next.pop(0)
        if self.limit is not None:
            recent = [t for t, _ in self.calls if t > now - self.window]
            if len(recent) >= self.limit:
                self.refused += 1
                raise RetryLater(max(0.01, recent[0] + self.window - now))
        self.calls.append((now, method))

    def _thread(self, thread_id: int | None) -> None:
        if thread_id is not None and thread_id not in self.topics:
            raise ThreadNotFound("Bad Request: message thread not found")

    # -- the group ------------------------------------------------------------------------------
    async def create_topic(self, name: str) -> int:
        self._group_call("createForumTopic")
        thread = next(self._ids)
        self.topics[thread] = name
        return thread

    async def rename_topic(self, thread_id: int, name: str) -> None:
        self._group_call("editForumTopic")
        self._thread(thread_id)
        if self.topics[thread_id] == name:
            raise NotModified("TOPIC_NOT_MODIFIED")
        self.topics[thread_id] = name

    async def delete_topic(self, thread_id: int) -> None:
        self._group_call("deleteForumTopic")
        self._thread(thread_id)
        self.delete_topic_now(thread_id)

    async def send(self, thread_id: int | None, html: str, buttons: Sequence[tuple[str, str]] = ()) -> Sent:
        self._group_call("sendMessage")
        self._thread(thread_id)
        mid = next(self._ids)
        self.group[mid] = Msg(mid, thread_id, html, tuple(buttons))
        return Sent(mid, thread_id)

    async def edit(self, message_id: int, html: str, buttons: Sequence[tuple[str, str]] = ()) -> None:
        self._group_call("editMessageText")
        m = self.group.get(message_id)
        if m is None or (m.thread_id is not None and m.thread_id in self.deleted_topics):
            raise MessageGone("Bad Request: message to edit not found")
        if m.html == html and m.buttons == tuple(buttons):
            raise NotModified("Bad Request: message is not modified")
        m.html, m.buttons = html, tuple(buttons)
        m.edits += 1

    async def pin(self, message_id: int) -> None:
        self._group_call("pinChatMessage")
        m = self.group.get(message_id)
        if m is None or (m.thread_id is not None and m.thread_id in self.deleted_topics):
            raise MessageGone("Bad Request: message to pin not found")
        self.pinned.append(message_id)

    async def send_document(self, thread_id: int | None, filename: str, data: bytes, caption_html: str = "") -> Sent:
        self._group_call("sendDocument")
        self._thread(thread_id)
        mid = next(self._ids)
        self.group[mid] = Msg(mid, thread_id, caption_html, kind=f"document:{filename}:{len(data)}",
                              data=data.decode("utf-8", "replace"))
        return Sent(mid, thread_id)

    async def copy_to_topic(
        self, thread_id: int | None, from_chat_id: int, message_id: int, caption_html: str | None
    ) -> Sent:
        self._group_call("copyMessage")
        self._thread(thread_id)
        if (from_chat_id, message_id) in self.gone:
            raise MessageGone("Bad Request: message to copy not found")
        mid = next(self._ids)
        self.group[mid] = Msg(mid, thread_id, caption_html or "", kind=f"copy:{from_chat_id}:{message_id}")
        return Sent(mid, thread_id)

    async def answer_callback(self, callback_id: str, text: str = "") -> None:
        self.callbacks.append((callback_id, text))

    async def is_member(self, user_id: int) -> bool:
        return user_id in self.members or user_id in self.admins

    async def is_admin(self, user_id: int) -> bool:
        return user_id in self.admins

    async def delete_messages(self, message_ids: Sequence[int], chat_id: int | None = None) -> None:
        if chat_id is None:
            self._group_call("deleteMessages")
            box = self.group
        else:
            box = self.private_msgs.get(chat_id, {})
        gone = [i for i in message_ids if i in box and i not in self.undeletable]
        if not gone:
            raise MessageGone("Bad Request: message to delete not found")
        for i in gone:
            del box[i]

    # -- users -------------------------------------------------------------------------------------
    def _user(self, chat_id: int) -> list[Msg]:
        if chat_id in self.blocked:
            raise UserBlocked("Forbidden: bot was blocked by the user")
        return self.users.setdefault(chat_id, [])

    async def send_to_user(self, chat_id: int, html: str) -> int:
        box = self._user(chat_id)
        mid = next(self._ids)
        box.append(Msg(mid, None, html))
        return mid

    async def copy_to_user(self, chat_id: int, from_message_id: int, caption_html: str | None) -> int:
        box = self._user(chat_id)
        mid = next(self._ids)
        box.append(Msg(mid, None, caption_html or "", kind="copy"))
        return mid

    async def edit_user_message(self, chat_id: int, message_id: int, html: str, caption: bool) -> None:
        box = self._user(chat_id)
        for m in box:
            if m.message_id == message_id:
                if m.html == html:
                    raise NotModified("Bad Request: message is not modified")
                m.html = html
                m.edits += 1
                return
        raise MessageGone("Bad Request: message to edit not found")

    async def send_replies(self, chat_id: int, replies: Sequence[Reply]) -> None:
        box = self._user(chat_id)
        self.replies.setdefault(chat_id, []).extend(replies)
        for r in replies:
            box.append(Msg(next(self._ids), None, _html.escape(r.text), kind="reply"))

    async def send_private(self, chat_id: int, html: str, buttons: Sequence[tuple[str, str]] = ()) -> int:
        self.private.setdefault(chat_id, []).append(html)
        mid = next(self._ids)
        self.private_msgs.setdefault(chat_id, {})[mid] = Msg(mid, None, html, tuple(buttons))
        return mid

    async def send_private_document(self, chat_id: int, filename: str, data: bytes, caption_html: str = "") -> int:
        self.private.setdefault(chat_id, []).append(f"[document {filename}] {caption_html}")
        mid = next(self._ids)
        doc = Msg(mid, None, caption_html, kind=f"document:{filename}",
                  data=data.decode("utf-8", "replace"))
        self.private_msgs.setdefault(chat_id, {})[mid] = doc
        return mid

    async def edit_private(self, chat_id: int, message_id: int, html: str) -> None:
        m = self.private_msgs.get(chat_id, {}).get(message_id)
        if m is None:
            raise MessageGone("Bad Request: message to edit not found")
        if m.html == html:
            raise NotModified("Bad Request: message is not modified")
        m.html, m.buttons = html, ()
        m.edits += 1

    def user_texts(self, chat_id: int) -> list[str]:
        return [m.text for m in self.users.get(chat_id, [])]
