"""The conversation store on PostgreSQL: the same methods as ``SQLiteStore`` (the engine's
``ConversationStore`` port, and what tools and doors read), the same SQL
(bot/store/conversations.py) on a ``PostgresDatabase``.

What differs is what several processes on one database need:

* ``turn(conversation_id)`` (the core's ``TurnScope`` port): an engine turn's load and save
  run in ONE transaction that first takes ``pg_advisory_xact_lock`` on the conversation, so
  another instance's turn of the same conversation waits until this one has committed and
  then reads what it wrote; the lock ends with the transaction (a crashed instance's
  connection closes, and with it the lock). Inside it, ``save_turn`` writes into that
  transaction; the turn commits when the engine leaves ``turn``.
* no write lock: ``tx_lock`` is the database's unused lock, for the protocol's sake.
* ``reclaim`` does nothing: PostgreSQL's autovacuum reuses the space of deleted rows (the
  erased text is gone from every query at once; its bytes go with the next vacuum).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from bot.core.ports import Entry, State

from . import conversations as sql
from .conversations import ConversationRow, MessageRow
from .postgres import PostgresDatabase
from .schema import BY_DIALECT, OWNER
from .sqlite import TURN_WRITES


class PostgresStore:
    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        self.path = database.path  # the URL without its password: what messages name
        self.tx_lock = database.lock

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10, connect_timeout: float = 5.0,
                   command_timeout: float = 30.0) -> PostgresStore:
        database = await PostgresDatabase.open(url, pool_size=pool_size, connect_timeout=connect_timeout,
                                               command_timeout=command_timeout)
        try:
            await database.migrate(OWNER, BY_DIALECT)
        except BaseException:
            await database.close()
            raise
        return cls(database)

    async def close(self) -> None:
        await self.database.close()

    @property
    def db(self) -> PostgresDatabase:
        """What features' SQL runs on (``SQLiteStore.db`` is its aiosqlite connection): the
        database itself — the agents' stores take either."""
        return self.database

    async def fetchone(self, query: str, args: Sequence[Any] = ()) -> Any:
        return await self.database.fetchone(query, args)

    async def reclaim(self) -> None:
        """Nothing to do by hand: autovacuum reuses deleted rows' space."""

    # -- the engine's port -----------------------------------------------------------
    @asynccontextmanager
    async def turn(self, conversation_id: str) -> AsyncIterator[None]:
        async with self.database.turn(conversation_id):
            yield

    async def load_state(self, conversation_id: str) -> State | None:
        return sql.state_from_row(conversation_id, await self.database.fetchone(sql.LOAD_STATE, (conversation_id,)))

    async def save_turn(self, state: State, entries: Sequence[Entry], events: Sequence[str] = ()) -> None:
        now = time.time()
        tx = self.database.current_turn()
        if tx is not None:  # the engine's turn: commits when the turn ends
            await self._write(tx, state, entries, events, now)
            return
        async with self.database.transaction() as own:
            await self._write(own, state, entries, events, now)

    @staticmethod
    async def _write(tx: Any, state: State, entries: Sequence[Entry], events: Sequence[str], now: float) -> None:
        await sql.write_turn(tx, state, entries, events, now)
        extra = TURN_WRITES.get()
        if extra is not None:
            await extra(tx, state)

    # -- queries for tools and doors ------------------------------------------------
    async def set_flags(self, conversation_id: str, *, active: bool | None = None,
                        paused: bool | None = None) -> None:
        update = sql.flags_update(active, paused)
        if update is not None:
            await self.database.execute(update[0], (*update[1], conversation_id))

    async def add_entries(self, conversation_id: str, entries: Sequence[Entry]) -> None:
        now = time.time()
        async with self.database.transaction() as tx:
            await sql.write_notes(tx, conversation_id, entries, now)

    async def conversations(self, limit: int = 50) -> list[ConversationRow]:
        return sql.conversation_rows(await self.database.fetchall(sql.CONVERSATIONS, (limit,)))

    async def messages(self, conversation_id: str | None = None, after_id: int = 0,
                       limit: int = 10_000) -> list[MessageRow]:
        query, args = sql.messages_query(conversation_id, after_id, limit)
        return [MessageRow(*r) for r in await self.database.fetchall(query, args)]

    async def paused_conversations(self) -> list[str]:
        return [str(r[0]) for r in await self.database.fetchall(sql.PAUSED)]

    async def message_summary(self, conversation_id: str) -> tuple[int, float | None]:
        """(lines stored, time of the first) for one conversation (what /privacy counts)."""
        row = await self.database.fetchone(
            "SELECT COUNT(*), MIN(ts) FROM messages WHERE conversation_id = ?", (conversation_id,)
        )
        return (int(row[0]), row[1]) if row else (0, None)

    async def last_message_id(self) -> int:
        row = await self.database.fetchone(sql.LAST_MESSAGE)
        return int(row[0]) if row else 0

    async def unmatched(self, limit: int = 50) -> list[tuple[float, str, str, str, list[Any]]]:
        return sql.unmatched_rows(await self.database.fetchall(sql.UNMATCHED, (limit,)))
