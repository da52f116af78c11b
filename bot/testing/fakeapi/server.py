"""The fake server itself: its state, lifecycle, the HTTP side (``/bot<token>/<method>``,
files, long polling, the webhook pump), the queries tests make, and the fault API
(``fail``, ``stall``, ``block``, ``limit_groups``). Users' actions are in ``users``, the
message methods in ``methods``, the objects in ``objects``, fault types in ``faults``.

Longer than the tree's ~500-line guide on purpose: what is left here is one object's state
(updates, offsets, recorded calls, faults) and the handlers that read and change it together;
the parts that stand alone already live in the sibling modules."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from .faults import Fault, Handler, Policy, RateLimitPolicy, Stall, is_group_chat
from .methods import BotMethods
from .objects import BOOL_FIELDS, INT_FIELDS, JSON_FIELDS, KNOWN_METHODS, ApiError, Call, SentMessage, bad_request
from .users import UserActions

log = logging.getLogger(__name__)


class FakeBotAPI(UserActions, BotMethods):
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
        h["copyMessage"] = self._copy_message
        h["editMessageText"] = self._edit_message_text
        h["editMessageReplyMarkup"] = self._edit_reply_markup
        h["deleteMessage"] = self._delete_message
        h["deleteMessages"] = self._delete_messages
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

