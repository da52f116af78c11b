"""The store: the bot's state, transcripts, quotes and outbox — one SQLite file (aiosqlite)
by default, or PostgreSQL (asyncpg) when ``DATABASE_URL`` is set.

``database`` is the seam every store class is built on (``Database``: connection, write lock,
transactions, per-owner migrations), ``SQLiteDatabase`` there and ``PostgresDatabase`` in
``postgres``; the conversation store (the engine's ``ConversationStore`` port) is
``SQLiteStore`` (``sqlite``) or ``PostgresStore`` (``pgstore``), one SQL text for both
(``conversations``), its migrations in ``schema`` — the features' tables are their own
(bot/escalation/schema.py, bot/agents/schema.py). ``open_store`` picks the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import Settings

from .database import Database, SQLiteDatabase, StoreError
from .sqlite import SQLiteStore

if TYPE_CHECKING:  # types only: asyncpg is imported when PostgreSQL is used
    from .pgstore import PostgresStore


def is_postgres(target: str | Path) -> bool:
    """True when ``target`` is a PostgreSQL URL rather than a SQLite path."""
    return isinstance(target, str) and target.split("://", 1)[0].lower() in ("postgresql", "postgres") \
        and "://" in target


async def open_store(target: str | Path, settings: Settings | None = None) -> SQLiteStore | PostgresStore:
    """The conversation store at ``target``: a ``postgresql://`` URL (pool size and timeouts
    from ``settings``) or a SQLite path. Raises ``StoreError`` naming what is wrong."""
    if is_postgres(target):
        # imported here: asyncpg is loaded only by a bot that uses PostgreSQL (start-up cost)
        from .pgstore import PostgresStore

        s = settings or Settings()
        return await PostgresStore.open(str(target), pool_size=s.db_pool_size,
                                        connect_timeout=s.db_connect_timeout,
                                        command_timeout=s.db_command_timeout)
    return await SQLiteStore.open(target)


__all__ = ["Database", "SQLiteDatabase", "SQLiteStore", "StoreError", "is_postgres", "open_store"]
