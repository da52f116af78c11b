"""Finds passwords and passcodes a user types, so they are never stored or logged in clear.

``redact(text)`` returns the text with the secret replaced and whether anything was found.
The guide's rule is "never share your Apple ID credentials"; the engine warns the user.
"""

from __future__ import annotations

import re

MASK = "[redacted]"

# Words that commonly follow "password is" without being a password.
_NOT_SECRET = {
    "wrong", "incorrect", "correct", "right", "not", "forgotten", "forgot", "lost", "locked",
    "required", "needed", "asked", "requested", "rejected", "invalid", "expired", "changed",
    "the", "my", "a", "an", "same", "different", "ok", "fine", "too", "also", "still",
    "disabled", "unknown", "gone", "missing", "working", "accepted", "saved", "and", "but",
    "it", "that", "this", "so", "very", "really", "just", "never", "always", "is", "was",
    "for", "in", "on", "of", "to", "with", "correctly", "set", "reset", "being", "what",
    "which", "where", "how", "asking", "keeps", "doesnt", "does", "isnt",
}

_KEYWORD = r"(?:apple\s*id\s*)?(?:pass\s*word|passwort|kennwort|passcode|pass\s*code|pwd|pw|pin|contrase[nñ]a)"
_WITH_SEP = re.compile(
    rf"(\b{_KEYWORD}\b(?:\s+(?:is|was|would\s+be|should\s+be|=|:)|\s*[:=])\s*)(\"[^\"]+\"|'[^']+'|\S+)",
    re.IGNORECASE,
)
# "passcode 482913", "pin 1234": a keyword directly followed by something with a digit
_BARE_DIGITS = re.compile(rf"(\b{_KEYWORD}\b\s+)((?=\S*\d)\S{{4,}})", re.IGNORECASE)


def _mask(m: re.Match[str]) -> str:
    value = m.group(2).strip("\"'.,!?;")
    if value.lower() in _NOT_SECRET or not value:
        return m.group(0)
    return m.group(1) + MASK


def redact(text: str) -> tuple[str, bool]:
    """Return (text with secrets masked, whether a secret was found)."""
    out = _WITH_SEP.sub(_mask, text)
    out = _BARE_DIGITS.sub(_mask, out)
    return out, out != text
