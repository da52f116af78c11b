"""The one list of user messages the benchmarks type (``bench_telegram``, ``bench_agents``,
``kill_telegram``).

``COMPLAINTS`` opens a conversation (one per symptom the bot knows, short as people type them
on a phone); ``TYPED`` are answers typed mid-conversation instead of pressing a button;
``CHATTER`` is small talk and the request for a person. The matcher's quality is measured
elsewhere (tests/test_matcher_quality.py); these only have to exercise every flow.
"""

from __future__ import annotations

COMPLAINTS: tuple[str, ...] = (
    "my icloud storage is full",
    "backup failed",
    "the backup is stuck at 20%",
    "backup shows 0 KB",
    "last backup was weeks ago",
    "restore from icloud doesn't work",
    "wifi keeps dropping during backup",
    "apple id keeps asking for my password",
    "is icloud down?",
    "how do I check my backup",
    "how can I free up space",
    "which icloud plan should I get",
    "back up to my mac",
    "I deleted photos by accident",
    "my iphone fell in water and won't turn on",
    "forgot my passcode",
    "what does recovery cost",
)
TYPED: tuple[str, ...] = ("50 GB", "no", "yes", "it still fails", "ok", "thanks", "200gb", "I don't know")
CHATTER: tuple[str, ...] = ("thanks", "hello", "I want to talk to a person")

# what a Telegram user may send at any point: a complaint, small talk or a short answer
ANY_MESSAGE: tuple[str, ...] = (*COMPLAINTS, *CHATTER, "50 GB", "no", "yes")
