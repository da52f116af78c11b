"""Learned examples: what agents taught the matcher (table ``learned_examples``, migration 6).

Contract: :meth:`LearnedStore.add` stores (text, intent) once (the text redacted first:
a password typed in a message never becomes an example); ``intent`` is an intent id or
``"none"`` (out of scope); the caller validates the id. :meth:`LearnedStore.since` returns
rows after an id, so a running bot picks up new ones without a restart
(:class:`bot.learning.LearnedSync`). One SQL text for SQLite and PostgreSQL, through the
store's ``Database``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.core.redact import redact

if TYPE_CHECKING:
    from .pgstore import PostgresStore
    from .sqlite import SQLiteStore


@dataclass(frozen=True)
class LearnedRow:
    id: int
    text: str
    intent: str
    source: str
    created_at: float


class LearnedStore:
    def __init__(self, store: SQLiteStore | PostgresStore) -> None:
        self.store = store
        self.database = store.database

    async def add(self, text: str, intent: str, source: str = "") -> bool:
        """Store one example; False when the same text was already learned for this intent."""
        clean, _ = redact(" ".join(text.split()))
        if not clean:
            return False
        added = await self.database.execute(
            "INSERT INTO learned_examples (text, intent, source, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (text, intent) DO NOTHING",
            (clean[:1000], intent, source[:200], time.time()),
        )
        return added == 1

    async def since(self, after_id: int = 0) -> list[LearnedRow]:
        rows = await self.database.fetchall(
            "SELECT id, text, intent, source, created_at FROM learned_examples WHERE id > ? ORDER BY id",
            (after_id,),
        )
        return [LearnedRow(*r) for r in rows]
