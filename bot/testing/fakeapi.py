"""A fake Telegram Bot API server on 127.0.0.1 — the test double the door talks HTTP to.

Tests and the benchmark point the real python-telegram-bot ``Application`` at it with
``base_url``; nothing needs the internet or a real token. It lives in the bot's test kit
(``bot/testing``, never imported by the running bot) because ``python -m bot bench
--telegram`` runs outside the test suite; ``tests/support/fake_botapi.py`` re-exports it.

What it does (see ``FakeBotAPI``):

* serves the Bot API the way Telegram does: POST ``/bot<token>/<method>`` with a
  form-encoded or multipart body; ``{"ok": true, "result": ...}`` or
  ``{"ok": false, "error_code": N, "description": ..., "parameters": ...}`` with the same
  HTTP status; 401 for a wrong token; 400 (not 404) for an unknown method;
* keeps the chats' messages (HTML parsed into text + entities, limits checked: 4096
  characters, 64-byte callback data, 200-character callback answers), so edits of a
  missing message or with unchanged content answer 400 like Telegram;
* long-polls ``getUpdates`` (offset confirms, ``allowed_updates`` is sticky, parked polls
  are released at shutdown) or, once ``setWebhook`` was called, POSTs each update to the
  webhook with the secret header and retries on non-2xx, holding the queue like Telegram;
* records every call in arrival order (``calls``) with the order answers were given;
* faults on demand: ``fail(method, status=429|403|400|502, times=N, retry_after=...)``,
  ``stall(method, seconds=... | until released)``, ``block(chat_id)`` (403 from then on);
* extension hooks for other features: ``policies`` (called before every method; return an
  ``ApiError`` to refuse — ``limit_groups(per_minute=20)`` is one), ``handlers`` (replace or
  add a method), forum topics (``make_forum``; create/edit/close/reopen/delete; sending
  into a deleted topic answers 400 "message thread not found"), ``on_call`` / ``on_served``
  listeners, and ``wait_for(predicate)`` to wait on conditions instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import html.parser
import itertools
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

log = logging.getLogger(__name__)

JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "allowed_updates",
        "commands",
        "entities",
        "caption_entities",
        "link_preview_options",
        "reply_parameters",
        "scope",
        "media",
        "icon_custom_emoji_id_list",
    }
)
INT_FIELDS = frozenset(
    {
        "chat_id",
        "message_id",
        "message_thread_id",
        "offset",
        "limit",
        "timeout",
        "user_id",
        "from_chat_id",
        "max_connections",
        "cache_time",
        "icon_color",
        "until_date",
    }
)
BOOL_FIELDS = frozenset(
    {
        "drop_pending_updates",
        "show_alert",
        "disable_notification",
        "protect_content",
        "is_personal",
        "disable_web_page_preview",
    }
)
SEND_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendVideo",
        "sendAudio",
        "sendVoice",
        "sendAnimation",
        "sendSticker",
        "sendLocation",
        "sendContact",
        "sendMediaGroup",
        "copyMessage",
        "forwardMessage",
        "editMessageText",
        "editMessageReplyMarkup",
        "editMessageCaption",
    }
)
_ALLOWED_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "code": "code",
    "pre": "pre",
    "a": "text_link",
    "tg-spoiler": "spoiler",
    "blockquote": "blockquote",
}


def _known_methods() -> frozenset[str]:
    """Every Bot API method name PTB knows (camelCase aliases on ``telegram.Bot``)."""
    try:
        from telegram import Bot
    except ImportError:  # pragma: no cover - PTB is a dependency
        return frozenset()
    return frozenset(
        n for n in dir(Bot) if n[:1].islower() and n != n.lower() and "_" not in n and callable(getattr(Bot, n, None))
    )


KNOWN_METHODS = _known_methods()


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class ApiError(Exception):
    """Raise from a handler or return from a policy: becomes an error answer."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            out["parameters"] = {"retry_after": self.retry_after}
        return out


def bad_request(what: str) -> ApiError:
    return ApiError(400, f"Bad Request: {what}")


class _HTMLToEntities(html.parser.HTMLParser):
    """Telegram-style HTML parsing: text plus entities with UTF-16 offsets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text = ""
        self.entities: list[dict[str, Any]] = []
        self.stack: list[tuple[str, int, dict[str, Any]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _ALLOWED_TAGS and not (tag == "span" and ("class", "tg-spoiler") in attrs):
            raise ValueError(f'can\'t parse entities: unsupported start tag "{tag}"')
        extra: dict[str, Any] = {}
        if tag == "a":
            href = dict(attrs).get("href")
            if not href:
                raise ValueError("can't parse entities: link without href")
            extra["url"] = href
        self.stack.append((tag, utf16_len(self.text), extra))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1][0] != tag:
            raise ValueError(f'can\'t parse entities: unmatched end tag "{tag}"')
        name, start, extra = self.stack.pop()
        length = utf16_len(self.text) - start
        if length:
            kind = "spoiler" if name == "span" else _ALLOWED_TAGS[name]
            self.entities.append({"type": kind, "offset": start, "length": length, **extra})

    def handle_data(self, data: str) -> None:
        self.text += data


def parse_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram HTML; raise ValueError with Telegram's wording on bad markup."""
    if "<" not in source and "&" not in source:
        return source, []
    parser = _HTMLToEntities()
    parser.feed(source)
    parser.close()
    if parser.stack:
        raise ValueError(f'can\'t parse entities: unclosed start tag "{parser.stack[-1][0]}"')
    return parser.text, sorted(parser.entities, key=lambda e: (e["offset"], -e["length"]))


@dataclass
class Call:
    """One request the bot made."""

    seq: int  # arrival order
    method: str
    params: dict[str, Any]
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # field -> (filename, size)
    received_at: float = 0.0
    status: int = 0  # HTTP status answered; 0 while pending
    done_seq: int = 0  # order in which answers were given
    answered_at: float = 0.0
    result: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")


@dataclass
class SentMessage:
    """A message in a chat, as the fake server keeps it (sent by the bot or by a user)."""

    chat_id: int
    message_id: int
    text: str  # after entity parsing
    source: str  # as sent (HTML when parse_mode is HTML)
    entities: list[dict[str, Any]]
    keyboard: list[list[dict[str, Any]]] | None
    date: int
    from_bot: bool = True
    thread_id: int | None = None
    kind: str = "text"  # text | photo | document | ...
    edits: int = 0
    deleted: bool = False

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [b for row in self.keyboard or () for b in row]

    @property
    def labels(self) -> list[str]:
        return [b["text"] for b in self.buttons]


@dataclass
class Fault:
    status: int
    description: str
    retry_after: int | None
    times: int
    when: Callable[[dict[str, Any]], bool] | None = None


class Stall:
    """Holds matching calls until ``seconds`` pass, ``release()`` is called, or shutdown."""

    def __init__(self, seconds: float | None, times: int, when: Callable[[dict[str, Any]], bool] | None):
        self.seconds = seconds
        self.times = times
        self.when = when
        self.released = asyncio.Event()
        self.hit = asyncio.Event()  # set once a call is being held
        self.held = 0

    def release(self) -> None:
        self.released.set()

    async def hold(self) -> None:
        self.held += 1
        self.hit.set()
        if self.seconds is None:
            await self.released.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), self.seconds)


class RateLimitPolicy:
    """Refuse with 429 when more than ``limit`` matching calls hit one chat in ``period`` s.

    ``fake.limit_groups(per_minute=20)`` installs the group limit; the agents feature can
    build others (e.g. ``RateLimitPolicy(30, 1.0, chats=lambda c: True)`` for the overall cap).
    """

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        chats: Callable[[Any], bool],
        methods: Iterable[str] = SEND_METHODS,
    ) -> None:
        self.limit = limit
        self.period = period
        self.chats = chats
        self.methods = frozenset(methods)
        self.hits: dict[Any, deque[float]] = {}
        self.refused = 0

    def __call__(self, fake: FakeBotAPI, call: Call) -> ApiError | None:
        if call.method not in self.methods or not self.chats(call.chat_id):
            return None
        now = fake.clock()
        q = self.hits.setdefault(call.chat_id, deque())
        while q and q[0] <= now - self.period:
            q.popleft()
        if len(q) >= self.limit:
            self.refused += 1
            wait = max(1, math.ceil(q[0] + self.period - now))
            return ApiError(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
        q.append(now)
        return None


class TotalRateLimit:
    """Refuse with 429 when more than ``limit`` sends (any chat) arrive in ``period`` s — the
    bot-wide quota (``fake.policies.append(TotalRateLimit(30, 1.0))``)."""

    def __init__(self, limit: int, period: float, methods: Iterable[str] = SEND_METHODS) -> None:
        self.limit = limit
        self.period = period
        self.methods = frozenset(methods)
        self.hits: deque[float] = deque()
        self.refused = 0

    def __call__(self, fake: FakeBotAPI, call: Call) -> ApiError | None:
        if call.method not in self.methods:
            return None
        now = fake.clock()
        while self.hits and self.hits[0] <= now - self.period:
            self.hits.popleft()
        if len(self.hits) >= self.limit:
            self.refused += 1
            return ApiError(429, "Too Many Requests: retry after 1", retry_after=1)
        self.hits.append(now)
        return None


def is_group_chat(chat_id: Any) -> bool:
    return not (isinstance(chat_id, int) and chat_id > 0)


Policy = Callable[["FakeBotAPI", Call], "ApiError | None"]
Handler = Callable[[Call], Awaitable[Any]]


class FakeBotAPI:
    """The fake server. ``async with FakeBotAPI() as fake:`` starts it on a random port."""

    def __init__(
        self,
        token: str = "123456:TEST-token_for-the-fake",
        *,
        bot_id: int = 123456,
        username: str = "backup_rescue_test_bot",
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.monotonic,
        webhook_retry_delay: float = 0.05,
    ) -> None:
        self.token = token
        self.bot_id = bot_id
        self.username = username
        self.host = host
        self.port = 0
        self.clock = clock
        self.webhook_retry_delay = webhook_retry_delay
        # recording
        self.calls: list[Call] = []
        self._seq = itertools.count(1)
        self._done_seq = itertools.count(1)
        # updates
        self.updates: list[dict[str, Any]] = []  # not yet confirmed (polling) / delivered (webhook)
        self._next_update_id = 1
        self.allowed_updates: list[str] | None = None
        self.served_at: dict[int, float] = {}
        self._polls: dict[int, web.Request] = {}  # getUpdates requests being answered now
        self.polls_at_once = 0  # the most from connected clients at one moment (Telegram: 409)
        self.webhook_url = ""
        self.webhook_secret = ""
        self.webhook_deliveries: list[tuple[int, int]] = []  # (update_id, HTTP status)
        # chats
        self.chats: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[int, SentMessage]] = {}
        self._message_ids: dict[int, itertools.count[int]] = {}
        self.topics: dict[int, dict[int, dict[str, Any]]] = {}
        self.blocked: set[int] = set()
        self.left_chats: set[int] = set()
        self.callback_queries: dict[str, dict[str, Any]] = {}  # id -> {"answered": bool, ...}
        self._cq_ids = itertools.count(1)
        self.commands: dict[str, list[dict[str, str]]] = {}
        self.files: dict[str, bytes] = {}
        # faults and hooks
        self.faults: dict[str, deque[Fault]] = {}
        self.stalls: dict[str, deque[Stall]] = {}
        self.policies: list[Policy] = []
        self.handlers: dict[str, Handler] = {}
        self.on_call: list[Callable[[Call], None]] = []  # at arrival, before answering
        self.on_served: list[Callable[[list[int], float], None]] = []  # update ids handed out
        # machinery
        self._tick = asyncio.Event()
        self._updates_ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._pump: asyncio.Task[None] | None = None
        self._session: ClientSession | None = None
        self._install_default_handlers()

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> FakeBotAPI:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_post("/{prefix}/{method}", self._serve)
        app.router.add_get("/{prefix}/{method}", self._serve)
        app.router.add_get("/file/{prefix}/{path:.+}", self._serve_file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = ClientSession(timeout=ClientTimeout(total=10))
        self._pump = asyncio.create_task(self._webhook_pump(), name="fake-botapi-webhook")
        return self

    async def stop(self) -> None:
        self._closing.set()
        self._updates_ready.set()
        for stalls in self.stalls.values():
            for s in stalls:
                s.release()
        self._changed()
        if self._pump:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeBotAPI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://{self.host}:{self.port}/file/bot"

    @property
    def bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Backup Rescue",
            "username": self.username,
        }

    # -- waiting on conditions --------------------------------------------------------------
    def _changed(self) -> None:
        old, self._tick = self._tick, asyncio.Event()
        old.set()

    def notify(self) -> None:
        """Wake ``wait_for`` waiters: call it when state outside the fake changed."""
        self._changed()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
        """Wait until ``predicate()`` is truthy (re-checked after every call); return its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                recent = ", ".join(f"{c.method}:{c.status}" for c in self.calls[-12:])
                raise TimeoutError(f"fake Bot API: timed out waiting for {what or predicate!r}; last calls: {recent}")
            tick = self._tick
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), min(remaining, 0.5))

    async def wait_calls(
        self,
        method: str,
        count: int = 1,
        *,
        chat_id: Any = None,
        answered: bool = True,
        timeout: float = 5.0,
    ) -> list[Call]:
        """Wait for ``count`` calls of ``method`` (to ``chat_id``); return them."""

        def found() -> list[Call] | None:
            got = [c for c in self.calls_of(method, chat_id=chat_id) if c.status or not answered]
            return got if len(got) >= count else None

        return await self.wait_for(found, timeout, f"{count}x {method} chat={chat_id}")

    # -- reading what the bot did --------------------------------------------------------------
    def calls_of(self, method: str, *, chat_id: Any = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (chat_id is None or c.params.get("chat_id") == chat_id)]

    def methods(self, *, chat_id: Any = None) -> list[str]:
        return [c.method for c in self.calls if chat_id is None or c.params.get("chat_id") == chat_id]

    def sent(self, chat_id: int) -> list[SentMessage]:
        """Messages the bot sent to ``chat_id`` in the order Telegram accepted them."""
        return [m for m in self.messages.get(chat_id, {}).values() if m.from_bot]

    def texts(self, chat_id: int) -> list[str]:
        return [m.text for m in self.sent(chat_id)]

    def last(self, chat_id: int) -> SentMessage:
        sent = self.sent(chat_id)
        if not sent:
            raise LookupError(f"the bot sent nothing to chat {chat_id}")
        return sent[-1]

    def last_keyboard(self, chat_id: int) -> SentMessage:
        for m in reversed(self.sent(chat_id)):
            if m.keyboard and not m.deleted:
                return m
        raise LookupError(f"no message with a keyboard in chat {chat_id}")

    # -- faults --------------------------------------------------------------
    def fail(
        self,
        method: str,
        *,
        status: int = 429,
        times: int = 1,
        description: str | None = None,
        retry_after: int | None = None,
        when: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Fault:
        """Answer the next ``times`` matching calls of ``method`` with an error."""
        if description is None:
            description = {
                429: f"Too Many Requests: retry after {retry_after or 1}",
                403: "Forbidden: bot was blocked by the user",
                400: "Bad Request: message to edit not found",
                401: "Unauthorized",
                409: "Conflict: terminated by other getUpdates request",
            }.get(status, "Bad Gateway" if status >= 500 else "Error")
        if status == 429 and retry_after is None:
            retry_after = 1
        fault = Fault(status, description, retry_after, times, when)
        self.faults.setdefault(method, deque()).append(fault)
        return fault

    def stall(
        self,
        method: str,
        *,
        seconds: float | None = None,
        times: int = 1,
        when: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Stall:
        """Hold the next ``times`` matching calls (``seconds``, or until ``release()``)."""
        s = Stall(seconds, times, when)
        self.stalls.setdefault(method, deque()).append(s)
        return s

    def block(self, chat_id: int, *, notify: bool = False) -> None:
        """The user blocks the bot: sends answer 403; ``notify`` also queues my_chat_member."""
        self.blocked.add(chat_id)
        if notify:
            self.member_status(chat_id, "kicked", old_status="member")

    def unblock(self, chat_id: int, *, notify: bool = False) -> None:
        self.blocked.discard(chat_id)
        if notify:
            self.member_status(chat_id, "member", old_status="kicked")

    def limit_groups(self, per_minute: int = 20) -> RateLimitPolicy:
        """Enforce Telegram's 20 messages/minute per group (429 with retry_after beyond)."""
        policy = RateLimitPolicy(per_minute, 60.0, chats=is_group_chat)
        self.policies.append(policy)
        return policy

    def make_forum(self, chat_id: int, title: str = "Support agents") -> None:
        self.chats[chat_id] = {
            "id": chat_id,
            "type": "supergroup",
            "title": title,
            "is_forum": True,
        }
        self.topics.setdefault(chat_id, {})

    def _take(self, table: dict[str, deque[Any]], method: str, params: dict[str, Any]) -> Any:
        queue = table.get(method)
        if not queue:
            return None
        for item in list(queue):
            if item.when is None or item.when(params):
                item.times -= 1
                if item.times <= 0:
                    queue.remove(item)
                return item
        return None

    # -- chats --------------------------------------------------------------
    def chat(self, chat_id: int) -> dict[str, Any]:
        got = self.chats.get(chat_id)
        if got is None:
            if chat_id > 0:
                got = {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}
            else:
                got = {"id": chat_id, "type": "supergroup", "title": f"Group {chat_id}"}
            self.chats[chat_id] = got
        return got

    def add_chat(self, chat_id: int, chat_type: str, title: str = "") -> dict[str, Any]:
        info: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            info["first_name"] = title or f"User{chat_id}"
        else:
            info["title"] = title or f"{chat_type} {chat_id}"
        self.chats[chat_id] = info
        return info

    def user(self, user_id: int, first_name: str | None = None) -> dict[str, Any]:
        return {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name or f"User{user_id}",
            "language_code": "en",
        }

    def _new_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def _message_api(self, m: SentMessage) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": m.message_id,
            "date": m.date,
            "chat": self.chat(m.chat_id),
        }
        if m.from_bot:
            out["from"] = self.bot_user
        if m.kind == "text":
            out["text"] = m.text
            if m.entities:
                out["entities"] = m.entities
        else:
            out[m.kind] = (
                [
                    {
                        "file_id": f"f-{m.message_id}",
                        "file_unique_id": f"u-{m.message_id}",
                        "width": 1,
                        "height": 1,
                    }
                ]
                if m.kind == "photo"
                else {"file_id": f"f-{m.message_id}", "file_unique_id": f"u-{m.message_id}"}
            )
            if m.text:
                out["caption"] = m.text
        if m.keyboard:
            out["reply_markup"] = {"inline_keyboard": m.keyboard}
        if m.thread_id:
            out["message_thread_id"] = m.thread_id
            out["is_topic_message"] = True
        return out

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
        self.messages.setdefault(chat_id, {})[message_id] = SentMessage(
            chat_id, message_id, text, text, [], None, msg["date"], from_bot=False
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
        if text.startswith("/") and len(text) > 1:
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

    # -- the HTTP side --------------------------------------------------------------
    async def _read_params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, tuple[str, int]]]:
        params: dict[str, Any] = {}
        files: dict[str, tuple[str, int]] = {}
        ctype = request.content_type
        if ctype == "application/json":
            raw: dict[str, Any] = await request.json() if request.can_read_body else {}
            for k, v in raw.items():
                params[k] = v
            return params, files
        form = await request.post()
        for k, v in form.items():
            if isinstance(v, web.FileField):
                data = v.file.read()
                files[k] = (v.filename, len(data))
                params[k] = f"<file {v.filename}>"
                continue
            value: Any = v
            if k in JSON_FIELDS:
                with contextlib.suppress(ValueError):
                    value = json.loads(v)
            elif k in INT_FIELDS:
                with contextlib.suppress(ValueError):
                    value = int(v)
            elif k in BOOL_FIELDS:
                value = v in ("true", "True", "1")
            params[k] = value
        return params, files

    async def _serve(self, request: web.Request) -> web.Response:
        prefix = request.match_info["prefix"]
        method = request.match_info["method"]
        if not prefix.startswith("bot"):
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        params, files = await self._read_params(request)
        call = Call(next(self._seq), method, params, files, received_at=self.clock())
        self.calls.append(call)
        if method == "getUpdates":  # a poll whose client went away (a stopped poller) is not counted
            self._polls = {k: r for k, r in self._polls.items() if r.transport and not r.transport.is_closing()}
            self._polls[id(request)] = request
            self.polls_at_once = max(self.polls_at_once, len(self._polls))
        for listener in self.on_call:
            listener(call)
        self._changed()
        try:
            if prefix[3:] != self.token:
                raise ApiError(401, "Unauthorized")
            for policy in self.policies:
                refusal = policy(self, call)
                if refusal is not None:
                    raise refusal
            stall = self._take(self.stalls, method, params)
            if stall is not None:
                await stall.hold()
            fault = self._take(self.faults, method, params)
            if fault is not None:
                raise ApiError(fault.status, fault.description, fault.retry_after)
            handler = self.handlers.get(method)
            if handler is None:
                if method not in KNOWN_METHODS:
                    raise bad_request(f"method {method!r} not found")
                handler = self._generic
            result = await handler(call)
            status, body = 200, {"ok": True, "result": result}
            call.result = result
        except ApiError as exc:
            status, body = exc.status, exc.body()
            call.error = exc.description
        self._polls.pop(id(request), None)
        call.status = status
        call.done_seq = next(self._done_seq)
        call.answered_at = self.clock()
        self._changed()
        return web.json_response(body, status=status)

    async def _serve_file(self, request: web.Request) -> web.Response:
        if request.match_info["prefix"][3:] != self.token:
            return web.Response(status=401)
        data = self.files.get(request.match_info["path"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data)

    # -- methods --------------------------------------------------------------
    def _install_default_handlers(self) -> None:
        h = self.handlers
        h["getMe"] = self._get_me
        h["getUpdates"] = self._get_updates
        h["setWebhook"] = self._set_webhook
        h["deleteWebhook"] = self._delete_webhook
        h["getWebhookInfo"] = self._get_webhook_info
        h["sendMessage"] = self._send_message
        h["sendPhoto"] = self._send_file("photo")
        h["sendDocument"] = self._send_file("document")
        h["editMessageText"] = self._edit_message_text
        h["editMessageReplyMarkup"] = self._edit_reply_markup
        h["deleteMessage"] = self._delete_message
        h["answerCallbackQuery"] = self._answer_callback_query
        h["setMyCommands"] = self._set_my_commands
        h["getMyCommands"] = self._get_my_commands
        h["deleteMyCommands"] = self._delete_my_commands
        h["getFile"] = self._get_file
        h["leaveChat"] = self._leave_chat
        h["getChat"] = self._get_chat
        h["createForumTopic"] = self._create_forum_topic
        h["editForumTopic"] = self._edit_forum_topic
        h["closeForumTopic"] = self._topic_flag("closed", True)
        h["reopenForumTopic"] = self._topic_flag("closed", False)
        h["deleteForumTopic"] = self._delete_forum_topic
        h["pinChatMessage"] = self._pin_chat_message

    async def _generic(self, call: Call) -> Any:
        return True

    async def _get_me(self, call: Call) -> dict[str, Any]:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _pending(self, offset: int | None) -> list[dict[str, Any]]:
        if offset:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        if self.allowed_updates:
            keep = [u for u in self.updates if any(k in u for k in self.allowed_updates)]
            if len(keep) != len(self.updates):
                self.updates = keep
        return self.updates

    async def _get_updates(self, call: Call) -> list[dict[str, Any]]:
        if self.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        p = call.params
        if "allowed_updates" in p and p["allowed_updates"] is not None:
            self.allowed_updates = list(p["allowed_updates"]) or None
        return await self._poll(p)

    async def _poll(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        offset = p.get("offset")
        limit = int(p.get("limit") or 100)
        timeout = float(p.get("timeout") or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pending = self._pending(offset)
            if pending or self._closing.is_set():
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._updates_ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._updates_ready.wait(), remaining)
        batch = list(self._pending(offset)[:limit]) if not self._closing.is_set() else []
        if batch:
            now = self.clock()
            ids = [u["update_id"] for u in batch]
            for uid in ids:
                self.served_at.setdefault(uid, now)
            for listener in self.on_served:
                listener(ids, now)
        return batch

    async def _set_webhook(self, call: Call) -> bool:
        p = call.params
        url = p.get("url", "")
        secret = p.get("secret_token", "")
        if secret and (len(secret) > 256 or not all(c.isalnum() or c in "_-" for c in secret)):
            raise bad_request("secret token contains unallowed characters")
        if p.get("allowed_updates") is not None:
            self.allowed_updates = list(p["allowed_updates"]) or None
        if p.get("drop_pending_updates"):
            self.updates.clear()
        self.webhook_url = url
        self.webhook_secret = secret
        self._updates_ready.set()
        return True

    async def _delete_webhook(self, call: Call) -> bool:
        self.webhook_url = ""
        self.webhook_secret = ""
        if call.params.get("drop_pending_updates"):
            self.updates.clear()
        return True

    async def _get_webhook_info(self, call: Call) -> dict[str, Any]:
        return {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates),
            "allowed_updates": self.allowed_updates or [],
        }

    async def _webhook_pump(self) -> None:
        """Deliver queued updates to the webhook in order, like Telegram: one at a time,
        retrying a non-2xx answer (which holds the queue behind it)."""
        while not self._closing.is_set():
            if not self.webhook_url or not self._pending(None):
                self._updates_ready.clear()
                await self._updates_ready.wait()
                continue
            update = self.updates[0]
            headers = {"Content-Type": "application/json"}
            if self.webhook_secret:
                headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook_secret
            uid = update["update_id"]
            self.served_at.setdefault(uid, self.clock())
            for listener in self.on_served:
                listener([uid], self.clock())
            status = 0
            try:
                assert self._session is not None
                async with self._session.post(self.webhook_url, data=json.dumps(update), headers=headers) as resp:
                    status = resp.status
                    await resp.read()
            except Exception as exc:  # connection refused, timeout: retry like Telegram
                log.debug("fake webhook delivery of %s failed: %s", uid, exc)
            self.webhook_deliveries.append((uid, status))
            self._changed()
            if 200 <= status < 300:
                if self.updates and self.updates[0] is update:
                    self.updates.pop(0)
            else:
                await asyncio.sleep(self.webhook_retry_delay)

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


__all__ = [
    "FakeBotAPI",
    "ApiError",
    "Call",
    "SentMessage",
    "Stall",
    "Fault",
    "RateLimitPolicy",
    "is_group_chat",
    "parse_html",
    "utf16_len",
    "bad_request",
    "SEND_METHODS",
    "KNOWN_METHODS",
]
