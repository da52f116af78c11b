"""Quote references a user can read out on the phone: ``Q-`` + 5 characters.

The alphabet leaves out the characters people confuse when reading or hearing them
(0/O, 1/I/L). 31^5 = 28.6 million references; the store re-draws on a collision.
"""

from __future__ import annotations

import re
import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LENGTH = 5
PREFIX = "Q-"
_REF_RE = re.compile(rf"^{PREFIX}[{ALPHABET}]{{{LENGTH}}}$")


def new_reference() -> str:
    return PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def normalize_reference(text: str) -> str | None:
    """'q 7k3m9', 'Q-7K3M9', 'q7k3m9' -> 'Q-7K3M9'; None when it cannot be one."""
    raw = re.sub(r"[\s\-_]", "", (text or "").upper())
    if raw.startswith("Q"):
        raw = raw[1:]
    ref = PREFIX + raw
    return ref if _REF_RE.match(ref) else None


def message_id(ref: str, created_at: float, mail_from: str) -> str:
    """A stable Message-ID for a request: derived from the reference, never random."""
    domain = mail_from.rpartition("@")[2].strip() or "localhost"
    domain = re.sub(r"[^A-Za-z0-9.-]", "", domain) or "localhost"
    return f"<{ref}.{int(created_at)}.quote@{domain}>"
