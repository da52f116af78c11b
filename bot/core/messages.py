"""The seam between the doors (terminal, Telegram, tests) and the engine.

Every door turns what it receives into one :class:`Inbound` and hands it to
``Engine.handle``; the engine answers with a tuple of :class:`Reply`. Only these
frozen dataclasses and enums cross the seam: no door-specific objects, no dicts.

Reply text is plain text with one piece of markup: ``**bold**`` (used for menu
paths and prices). A door renders it (Telegram: HTML-escape everything, then
``**x**`` -> ``<b>x</b>``; terminal: drop the asterisks).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EventKind(enum.Enum):
    """What the user did."""

    TEXT = "text"  # typed a message
    BUTTON = "button"  # pressed a button: ``payload`` is the Button.id that was shown
    COMMAND = "command"  # /name [arg]: ``text`` is the name without slash, ``arg`` the rest
    MEDIA = "media"  # sent something that is not text (photo, voice, sticker...)


@dataclass(frozen=True)
class Attachment:
    """A file the user sent (e.g. a photo of the damaged device)."""

    kind: str  # "photo", "document", "voice", "video", "sticker", "location", "contact"...
    file_id: str = ""  # the door's handle to fetch it later (Telegram file_id)
    size: int = 0  # bytes, 0 when unknown
    name: str = ""  # file name or caption


@dataclass(frozen=True)
class Inbound:
    """One normalised event for one conversation."""

    conversation_id: str  # stable per chat, prefixed by the door: "tg:123", "term:local"
    kind: EventKind
    text: str = ""
    payload: str = ""  # BUTTON: the pressed Button.id
    arg: str = ""  # COMMAND: the argument (deep-link payload for /start)
    user_name: str = ""  # display name, when the door knows it
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class Button:
    """A choice offered to the user. ``id`` is opaque to doors (<= 64 bytes)."""

    id: str
    label: str


class Hint(enum.Enum):
    """Presentation hints for a door; a door may ignore them."""

    NONE = "none"
    REPLACE_KEYBOARD = "replace_keyboard"  # the previous keyboard is spent: remove or edit it


@dataclass(frozen=True)
class Reply:
    """One message from the bot. ``key`` is the content key it came from (for tests/logs)."""

    text: str
    buttons: tuple[Button, ...] = ()
    key: str = ""
    hint: Hint = Hint.NONE
    notice: str = ""  # short text for a button-press acknowledgement (Telegram answerCallbackQuery)


@dataclass(frozen=True)
class MatchCandidate:
    intent: str
    score: float


@dataclass(frozen=True)
class MatchResult:
    """What the matcher decided for one message."""

    text: str
    decision: str  # "accept" | "suggest" | "reject"
    intent: str | None  # the accepted intent id, else None
    score: float  # 0-100, the best candidate's score
    candidates: tuple[MatchCandidate, ...] = field(default_factory=tuple)  # top 3, best first
