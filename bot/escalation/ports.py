"""Ports and typed records of the escalation feature (quotes, outbox, delivery).

Outside the engine's seam: the engine only sees this package through the actions and
commands in ``bot.escalation.form``. The doors plug in here: the Telegram door provides a
``FileFetcher`` (device photos) and Telegram implementations of ``Alerter`` (agents'
chat) and ``LabNotifier`` (lab chat); the terminal provides none and the defaults log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# Telegram's Bot API lets a bot download files up to 20 MB (getFile).
TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024


class FileTooLarge(Exception):
    """A FileFetcher may raise this when a file is over the download limit."""


class FileFetcher(Protocol):
    async def fetch(self, file_id: str) -> tuple[bytes, str] | None:
        """The file's bytes and MIME type, or None when it cannot be had."""
        ...


class Alerter(Protocol):
    """Tells a person (the agents' chat) that something needs a human."""

    async def alert(self, text: str) -> None: ...


class LabNotifier(Protocol):
    """Sends the lab a short summary of a new request (LAB_CHAT_ID)."""

    async def notify(self, text: str) -> None: ...


class LoggingAlerter:
    """The default without an agents' chat: a warning in the log."""

    async def alert(self, text: str) -> None:
        log.warning("ALERT (no agents' chat configured): %s", text)


@dataclass(frozen=True)
class ChatAlerter:
    """Adapts any ``send(chat_id, text)`` coroutine (e.g. the Telegram door's) to Alerter
    and LabNotifier, so a door only has to hand over its send function and a chat id."""

    send: Callable[[int, str], Awaitable[object]]
    chat_id: int

    async def alert(self, text: str) -> None:
        await self.send(self.chat_id, text)

    async def notify(self, text: str) -> None:
        await self.send(self.chat_id, text)


# -- records -----------------------------------------------------------------------


@dataclass(frozen=True)
class QuoteFields:
    """What the user answered in the quote form (ids, not labels; labels come from content)."""

    device: str
    damage: str  # software | port | water | logic_board | reset | other
    passcode: str  # yes | no | unsure
    passcode_go_on: bool  # told that decryption without it is extremely difficult; went on
    data: tuple[str, ...]  # photos, messages, contacts, notes, documents, health, apps, other
    backup: str  # icloud | computer | none
    name: str
    email: str
    phone: str
    photos: tuple[str, ...]  # the door's file ids
    consent_at: float  # when the user agreed to be contacted and to the processing
    description: str = ""  # the user's words for "reset" and "other" (empty otherwise)


@dataclass(frozen=True)
class TranscriptLine:
    ts: float
    direction: str  # in | out | agent | note
    kind: str
    text: str  # already redacted by the engine


@dataclass(frozen=True)
class QuoteRecord:
    ref: str
    conversation_id: str
    created_at: float
    fields: QuoteFields
    transcript: tuple[TranscriptLine, ...]


@dataclass(frozen=True)
class OutboxRow:
    id: int
    ref: str
    channel: str  # email | lab_chat
    status: str  # pending | sending | delivered | failed
    attempts: int
    next_attempt_at: float
    message_id: str
    last_error: str
    error_kind: str  # server | temporary | permanent | ambiguous | ''
    accepted: str  # what the server answered when it took the message
    delivered_at: float | None
    alert_state: str  # '' | pending | sent | logged
    created_at: float
    owner: str = ""


@dataclass(frozen=True)
class PhotoPart:
    """One device photo as it goes into the e-mail."""

    position: int
    status: str  # fetched | too_big | unavailable | pending (no fetcher) | over_budget
    data: bytes = b""
    mime: str = ""


@dataclass(frozen=True)
class QuoteStatus:
    """What /status tells the user about one request."""

    ref: str
    created_at: float
    status: str  # queued | delivered | failed
    delivered_at: float | None
    alerted: bool
