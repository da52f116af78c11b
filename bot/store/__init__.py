"""The store: one SQLite file (aiosqlite) for state, transcripts, quotes and the outbox.

``database`` is the seam every store class is built on (``Database``: connection, write lock,
transactions, per-owner migrations); ``sqlite`` the conversation store (the engine's
``ConversationStore`` port) with its migrations in ``schema`` — the features' tables are
their own (bot/escalation/schema.py, bot/agents/schema.py)."""

from .database import Database, SQLiteDatabase, StoreError
from .sqlite import SQLiteStore

__all__ = ["Database", "SQLiteDatabase", "SQLiteStore", "StoreError"]
