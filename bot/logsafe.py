"""One logging filter for every log line, whichever library wrote it.

Contract: once ``install(settings)`` ran, no line that reaches a root handler contains the bot
token, the SMTP password or the webhook secret (also URL-encoded), nor a secret a user typed
(the redaction gate, ``bot.core.redact``); and, unless ``LOG_USER_TEXT=1``, none contains what
users wrote: the values of text-like fields in the Bot API payloads that python-telegram-bot,
httpx and aiohttp print at DEBUG (``'text': '…'``, ``"caption": "…"``, names, phone numbers)
are replaced by ``…``, and aiosqlite's DEBUG lines (every SQL statement with its values) are
dropped. Tracebacks are formatted and masked the same way.

The filter sits on the root logger's handlers (a filter on the logger itself does not see
records that other loggers propagate to it) and on the root logger; ``python -m bot`` installs
it right after configuring logging. A handler added later needs ``install`` again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote

from bot.core.redact import redact

HIDDEN = "***"
USER_FIELDS = (
    "text", "caption", "first_name", "last_name", "username", "phone_number", "email", "name",
    "title", "file_name", "vcard", "question", "address", "query", "quote", "message_text",
)
_VALUE = r"""(?P<val>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
# 'text': '…' / "text": "…" (dicts, JSON) and text='…' (PTB's object reprs)
_FIELD = re.compile(
    r"""(?P<key>(?:(?P<q>['"])(?:FIELDS)(?P=q)\s*:|\b(?:FIELDS)=)\s*)""".replace("FIELDS", "|".join(USER_FIELDS))
    + _VALUE
)
_FORMATTER = logging.Formatter()
SQL_TRACES = "aiosqlite"


class SecretFilter(logging.Filter):
    """Masks secrets (and user texts) in a record's message and traceback. The only records it
    drops are SQL traces (aiosqlite at DEBUG) while user texts are not to be logged."""

    def __init__(self, secrets: Iterable[str] = (), *, user_text: bool = False) -> None:
        super().__init__()
        words: set[str] = set()
        for s in secrets:
            if s and len(s) >= 6:
                words |= {s, quote(s, safe=""), quote(s)}
                if ":" in s:  # a bot token's secret half on its own
                    words.add(s.partition(":")[2])
        self.secrets = sorted((w for w in words if len(w) >= 6), key=len, reverse=True)
        self.user_text = user_text

    def mask(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, HIDDEN)
        if not self.user_text:
            text = _FIELD.sub(lambda m: m.group("key") + m.group("val")[0] + "…" + m.group("val")[0], text)
        return redact(text)[0]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.user_text and record.levelno < logging.INFO and record.name.startswith(SQL_TRACES):
            return False
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: keep what there is
            message = str(record.msg)
        record.msg, record.args = self.mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


def install(secrets: Iterable[str] = (), *, user_text: bool = False) -> SecretFilter:
    """Put one ``SecretFilter`` on every handler of the root logger (replacing an earlier one)."""
    root = logging.getLogger()
    flt = SecretFilter(secrets, user_text=user_text)
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, SecretFilter)]:
            handler.removeFilter(old)
        handler.addFilter(flt)
    for old in [f for f in root.filters if isinstance(f, SecretFilter)]:
        root.removeFilter(old)
    root.addFilter(flt)  # records logged on the root logger itself
    return flt


def remove(flt: SecretFilter) -> None:
    root = logging.getLogger()
    for handler in root.handlers:
        handler.removeFilter(flt)
    root.removeFilter(flt)
