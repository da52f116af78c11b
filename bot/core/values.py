"""Parsing and validating what users type: sizes, emails, phone numbers, free text.

Pure functions, no I/O (e-mail and phone numbers through the ``email-validator`` and
``phonenumbers`` libraries, never a DNS look-up). Each parser returns the normalised value
or None for a re-ask.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email

MAX_TEXT = 1000

# A size as people type it: "50", "50gb", "1,000 GB", "1 000 GB", "1,5 TB", "0.5tb", "800 mb".
# A group separator (comma, space, apostrophe) must be followed by exactly three digits, and
# the number may not be glued to more digits, a sign or letters ("-5 GB", "50e3 GB", "v2").
_SIZE_RE = re.compile(
    r"(?<![\w.,\-\u2212])"
    r"(?P<num>[1-9]\d{0,2}(?P<sep>[,'\u00a0\u202f ])\d{3}(?:(?P=sep)\d{3})*(?:\.\d+)?"
    r"|\d+(?:[.,]\d+)?)"
    r"(?![.,]?\d)"
    r"\s*(?P<unit>tb|terabytes?|gb|gigs?|gigabytes?|g|mb|megabytes?)?(?![a-z])",
    re.IGNORECASE,
)
# "1.000 GB" is 1 GB in English and 1 000 GB in German: asked again rather than guessed
_AMBIGUOUS_RE = re.compile(r"^[1-9]\d{0,2}\.\d{3}$")
MAX_SIZE_GB = 100_000
MIN_PHONE_DIGITS = 6  # national significant number: fewer cannot be called from abroad
_PHONE_CHARS_RE = re.compile(r"^[\d\s+\-.()/]+$")


_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Drop control characters (keep newlines and tabs as spaces), trim."""
    if text.isascii() and not _ASCII_CONTROL.search(text):  # most messages: nothing to drop
        return text.strip()
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
    """'50', '50gb', '2 TB', '1.5tb', '1,000 GB', '800 mb' -> gigabytes as a plain number string.

    None (ask again) for no number, a negative or glued one ("-5 GB", "50e3 GB"), an
    ambiguous one ("1.000 GB") and zero or more than 100 000 GB.
    """
    m = _SIZE_RE.search(text or "")
    if not m:
        return None
    raw = m.group("num")
    if m.group("sep"):
        number = float(raw.replace(m.group("sep"), ""))
    elif _AMBIGUOUS_RE.match(raw):
        return None
    else:
        number = float(raw.replace(",", "."))
    unit = (m.group("unit") or "gb").lower()
    if unit.startswith("t"):
        number *= 1000
    elif unit.startswith("m"):
        number /= 1000
    if number <= 0 or number > MAX_SIZE_GB:
        return None
    return f"{number:.3f}".rstrip("0").rstrip(".")


def parse_email(text: str) -> str | None:
    """An e-mail address as the user should see it (internationalised domains kept:
    "anna@bücher.de"), checked by ``email-validator`` without any network look-up.
    None for anything else: no dot in the domain, a trailing dot, spaces, a display name."""
    value = (text or "").strip()
    if not value or len(value) > 254 or any(c in value for c in "\r\n\t <>,;\""):
        return None
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def email_ascii(address: str) -> str | None:
    """The address for a mail header (the domain in IDNA form: "anna@xn--bcher-kva.de"), or
    None when it cannot be written in ASCII (a non-ASCII name before the @)."""
    try:
        return validate_email(address or "", check_deliverability=False).ascii_email
    except EmailNotValidError:
        return None


def parse_phone(text: str, region: str = "") -> str | None:
    """A phone number in E.164 ("+491512345678"), read by ``phonenumbers``.

    International numbers ("+49 (0)151 2345678", "0049 151 2345678") always; national ones
    ("0151 2345678") only with ``region`` (DEFAULT_REGION, e.g. "DE"). Only digits, spaces
    and + - . ( ) / are allowed; the number must be a possible one for its country.
    """
    value = (text or "").strip()
    if not value or len(value) > 40 or not _PHONE_CHARS_RE.match(value):
        return None
    if value.startswith("00"):
        value = "+" + value[2:]
    if not value.startswith("+") and not region:
        return None
    try:
        number = phonenumbers.parse(value, region.upper() or None)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    if len(str(number.national_number)) < MIN_PHONE_DIGITS:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_candidate(text: str) -> str | None:
    """What the engine's ``phone`` ask accepts: an international number as E.164, or a
    national one ("0151 2345678") kept as typed for the feature that knows the region to
    complete (``parse_phone(value, region)``). None: not a phone number (the matcher reads it)."""
    international = parse_phone(text)
    if international:
        return international
    value = " ".join((text or "").split())
    if value.startswith("+") or not _PHONE_CHARS_RE.match(value or "x"):
        return None
    digits = sum(ch.isdigit() for ch in value)
    return value if MIN_PHONE_DIGITS <= digits <= 15 else None


def parse_text(text: str) -> tuple[str, bool] | None:
    """Any non-empty text, one line, at most MAX_TEXT characters. Returns (value, was_cut)."""
    value = " ".join(clean_text(text or "").split())
    if not value:
        return None
    if len(value) > MAX_TEXT:
        return value[:MAX_TEXT].rstrip() + "…", True
    return value, False
