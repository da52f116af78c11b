"""Bot API objects as the fake renders and reads them: which parameters are JSON, numbers or
flags, the methods that spend the message budget, errors in Telegram's shape, HTML parsed into
text + entities (UTF-16 lengths), and the records a test reads: ``Call`` (one request the bot
made) and ``SentMessage`` (one message in a chat)."""

from __future__ import annotations

import html.parser
import logging
from dataclasses import dataclass, field
from typing import Any

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


