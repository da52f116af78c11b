"""Turns the engine's channel-neutral replies into Telegram message parts (pure functions).

Reply text is plain text with ``**bold**`` as the only markup. For Telegram it becomes HTML:
everything is escaped first (user text echoed back can never inject markup), then
``**x**`` becomes ``<b>x</b>``. Texts longer than Telegram's 4096-character limit are
split at paragraph boundaries (then lines, then words); buttons go on the last part.
``compose`` renders one turn's replies as one message (the texts joined, the keyboard on it).
Nothing here imports ``telegram``: the door builds the PTB objects from these plain parts.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from bot.core.messages import Button, Reply

MAX_MESSAGE = 4096  # characters after entity parsing (counted in UTF-16 code units here)
MAX_CALLBACK_DATA = 64  # bytes
MAX_CALLBACK_ANSWER = 200  # characters of answerCallbackQuery text

_BOLD_RE = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")


def tg_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def visible(text: str) -> str:
    """The text as the user will see it: bold markers that will render are dropped."""
    return _BOLD_RE.sub(r"\1", text)


def to_html(text: str) -> str:
    """Escape everything, then turn ``**x**`` (within one line) into ``<b>x</b>``."""
    return _BOLD_RE.sub(r"<b>\1</b>", html.escape(text, quote=False))


def _hard_split(text: str, limit: int) -> list[str]:
    """Split one over-long paragraph/line at spaces, or anywhere as a last resort."""
    out: list[str] = []
    rest = text
    while tg_len(visible(rest)) > limit:
        # the longest prefix (in code points) that fits, then back off to a space
        lo, hi = 1, len(rest)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if tg_len(visible(rest[:mid])) <= limit:
                lo = mid
            else:
                hi = mid - 1
        cut = rest.rfind(" ", 0, lo + 1)
        if cut <= lo // 2:
            cut = lo
        out.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        out.append(rest)
    return out


def split_text(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Split ``text`` (source form, with ``**`` markers) into parts that each fit ``limit``.

    Paragraphs (blank-line separated) are kept whole when possible and packed greedily;
    an over-long paragraph is split at line breaks, an over-long line at spaces.
    """
    text = text.strip("\n")
    if tg_len(visible(text)) <= limit:
        return [text] if text else []
    pieces: list[tuple[str, str]] = []  # (separator before it, piece)
    for para in re.split(r"\n\s*\n", text):
        if tg_len(visible(para)) <= limit:
            pieces.append(("\n\n", para))
            continue
        first = True
        for line in para.split("\n"):
            sep = "\n\n" if first else "\n"
            first = False
            if tg_len(visible(line)) <= limit:
                pieces.append((sep, line))
            else:
                for j, chunk in enumerate(_hard_split(line, limit)):
                    pieces.append((sep if j == 0 else " ", chunk))
    parts: list[str] = []
    current = ""
    for sep, piece in pieces:
        candidate = f"{current}{sep}{piece}" if current else piece
        if tg_len(visible(candidate)) <= limit:
            current = candidate
        else:
            if current:
                parts.append(current)
            current = piece
    if current:
        parts.append(current)
    return [p for p in (p.strip("\n") for p in parts) if p]


def keyboard_rows(buttons: Sequence[Button]) -> list[list[Button]]:
    """One button per row, unless every label is short (then two or three a row)."""
    if not buttons:
        return []
    longest = max(len(b.label) for b in buttons)
    per_row = 3 if longest <= 8 else 2 if longest <= 16 else 1
    return [list(buttons[i : i + per_row]) for i in range(0, len(buttons), per_row)]


def fits_callback_data(data: str) -> bool:
    return 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA


def clip(text: str, limit: int) -> str:
    """Shorten plain text to ``limit`` characters with an ellipsis."""
    text = visible(text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def keyboard_data(buttons: Sequence[Button]) -> list[list[list[str]]] | None:
    """Buttons as JSON-able rows of ``[label, callback data]`` (those over 64 bytes left out:
    Telegram would refuse the whole message; ``python -m bot check`` should catch them)."""
    usable = [b for b in buttons if fits_callback_data(b.id)]
    if not usable:
        return None
    return [[[b.label, b.id] for b in row] for row in keyboard_rows(usable)]


def compose(replies: Sequence[Reply]) -> list[tuple[str, list[list[list[str]]] | None]]:
    """One turn's replies as Telegram messages: the texts joined into one message (split only
    past 4096 characters), the keyboard of the last reply that has one on the last part.
    Returns ``(html, keyboard rows)`` pairs; empty when there is nothing to say."""
    texts = [r.text.strip("\n") for r in replies if r.text.strip()]
    buttons: Sequence[Button] = ()
    for r in replies:
        if r.buttons:
            buttons = r.buttons
    keyboard = keyboard_data(buttons) if buttons else None
    parts = split_text("\n\n".join(texts))
    if not parts:
        if keyboard is None:
            return []
        last_key = next((r.key for r in reversed(replies) if r.buttons), "")
        parts = [visible(last_key) or "…"]
    out: list[tuple[str, list[list[list[str]]] | None]] = [(to_html(p), None) for p in parts]
    out[-1] = (out[-1][0], keyboard)
    return out
