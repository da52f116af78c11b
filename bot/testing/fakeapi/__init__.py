"""A fake Telegram Bot API server on 127.0.0.1 — the test double the door talks HTTP to.

The package: ``server`` (``FakeBotAPI``: state, HTTP, long polling, webhook, queries, the
fault API), ``users`` (what simulated users do), ``methods`` (the Bot API methods on chats and
messages), ``objects`` (rendering: Bot API objects, HTML entities, ``Call``, ``SentMessage``),
``faults`` (``Fault``, ``Stall``, rate-limit policies).

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

from .faults import Fault, Handler, Policy, RateLimitPolicy, Stall, TotalRateLimit, is_group_chat
from .objects import (
    BOOL_FIELDS,
    INT_FIELDS,
    JSON_FIELDS,
    KNOWN_METHODS,
    SEND_METHODS,
    ApiError,
    Call,
    SentMessage,
    bad_request,
    parse_html,
    utf16_len,
)
from .server import FakeBotAPI

__all__ = [
    "BOOL_FIELDS", "INT_FIELDS", "JSON_FIELDS", "KNOWN_METHODS", "SEND_METHODS", "ApiError", "Call", "Fault",
    "FakeBotAPI", "Handler", "Policy", "RateLimitPolicy", "SentMessage", "Stall", "TotalRateLimit",
    "bad_request", "is_group_chat", "parse_html", "utf16_len",
]
