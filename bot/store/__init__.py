"""The store: one SQLite file (aiosqlite) for state, transcripts, quotes and the outbox."""

from .sqlite import SQLiteStore, StoreError

__all__ = ["SQLiteStore", "StoreError"]
