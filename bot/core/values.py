"""Parsing and validating what users type: sizes, emails, phone numbers, free text.

Pure functions, no I/O. Each parser returns the normalised value or None for a re-ask.
"""

from __future__ import annotations

import re
import unicodedata

MAX_TEXT = 1000

_SIZE_RE = re.compile(
    r"(?<![\w.])(\d{1,6}(?:[.,]\d{1,3})?)\s*(tb|terabytes?|gb|gigs?|gigabytes?|g|mb|megabytes?)?(?![a-z])",
    re.IGNORECASE,
)
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}$"
)


def clean_text(text: str) -> str:
    """Drop control characters (keep newlines and tabs as spaces), trim."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\n\t\r":
            out.append(" " if ch != "\n" else "\n")
        elif cat.startswith("C") and cat != "Cf":
            continue
        elif cat == "Cf" and ch not in "\u200d":  # keep ZWJ (emoji), drop bidi overrides etc.
            continue
        else:
            out.append(ch)
    return "".join(out).strip()


def parse_size_gb(text: str) -> str | None:
    """'50', '50gb', '2 TB', '1.5tb', '800 mb' -> gigabytes as a plain number string."""
    m = _SIZE_RE.search(text or "")
    if not m:
        return None
    number = float(m.group(1).replace(",", "."))
    unit = (m.group(2) or "gb").lower()
    if unit.startswith("t"):
        number *= 1000
    elif unit.startswith("m"):
        number /= 1000
    if number <= 0 or number > 100_000:
        return None
    return f"{number:.3f}".rstrip("0").rstrip(".")


def parse_email(text: str) -> str | None:
    value = (text or "").strip()
    if len(value) > 254 or any(c in value for c in "\r\n\t <>,;\"") or not _EMAIL_RE.match(value):
        return None
    return value


def parse_phone(text: str) -> str | None:
    """International format: '+' then 7-15 digits; spaces, dashes, dots, brackets allowed."""
    value = (text or "").strip()
    if value.startswith("00"):
        value = "+" + value[2:]
    if not value.startswith("+") or re.search(r"[^\d\s\-.()+]", value) or value.count("+") != 1:
        return None
    digits = re.sub(r"\D", "", value)
    if not 7 <= len(digits) <= 15 or digits.startswith("0"):
        return None
    return "+" + digits


def parse_text(text: str) -> tuple[str, bool] | None:
    """Any non-empty text, one line, at most MAX_TEXT characters. Returns (value, was_cut)."""
    value = " ".join(clean_text(text or "").split())
    if not value:
        return None
    if len(value) > MAX_TEXT:
        return value[:MAX_TEXT].rstrip() + "…", True
    return value, False
