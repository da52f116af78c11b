"""SQL for erasing people: generic over the schema, so tables added by later features are
covered without edits here (``bot.agents.privacy`` decides what to erase and when).

* ``delete_conversation`` — every table with a ``conversation_id`` column (and
  ``conversations`` itself) loses that conversation's rows; for a Telegram conversation,
  tables keyed by ``chat_id`` / ``user_id`` lose that id's rows too. Rows that reference
  deleted rows by foreign key go first (a quote's outbox entries and photos).
* ``delete_before`` — rows older than a cutoff, in slices (the retention purge), children first.
* ``prune_words`` — a still-active conversation keeps its state, but the values that quote
  the user's own words ("first words", a pending message, form answers) go once the line
  they were typed in is gone.
* ``reclaim`` — SQLite: deleted content is zeroed (``secure_delete``, on for every
  connection), free pages go back to the file system and the WAL is truncated; PostgreSQL:
  nothing (autovacuum reuses the space; the rows are gone from every query at once).

Either engine: ``db`` is a bare aiosqlite connection (the store's, or the CLI's own) or a
``PostgresDatabase``. What differs is only how the schema is read (``sqlite_master`` and
PRAGMAs, or ``information_schema``) and the implicit row key (``rowid`` / ``ctid``); the
deleting SQL is the same. Inside ``transaction()`` every statement goes into it (on
PostgreSQL one pooled connection; what the context yields is that ``Transaction``, for other
stores' writes in the same erasure).

The caller holds the store's write lock (``Database.lock`` / ``SQLiteStore.tx_lock``) around
a ``transaction()`` and every method that writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

import aiosqlite

from .database import statements
from .sqlite import reclaim_space

log = logging.getLogger(__name__)

_MAX_DEPTH = 5  # foreign-key chains followed (quotes -> outbox is one)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    refs: tuple[tuple[str, str, str], ...]  # (parent table, my column, parent column)


def _squash(text: str) -> str:
    return re.sub(r"\W+", "", text.casefold())


_PG_COLUMNS = ("SELECT table_name, column_name FROM information_schema.columns "
               "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position")
_PG_REFS = """SELECT kcu.table_name, kcu.column_name, ccu.table_name, ccu.column_name
    FROM information_schema.table_constraints tc
    JOIN information_schema.key_column_usage kcu
      ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema
    JOIN information_schema.constraint_column_usage ccu
      ON ccu.constraint_name = tc.constraint_name AND ccu.table_schema = tc.table_schema
    WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema()"""


class Erasure:
    """Erasure over every table of one database (module docstring: which ``db``)."""

    def __init__(self, db: Any) -> None:
        self.sqlite = isinstance(db, aiosqlite.Connection)
        self.db = db
        self._x: Any = statements(db)  # where statements go now
        self.rowid = "rowid" if self.sqlite else "ctid"
        self._tables: dict[str, Table] | None = None

    async def tables(self) -> dict[str, Table]:
        """The schema as it is now (read once per instance: make one per erasure)."""
        if self._tables is not None:
            return self._tables
        out: dict[str, Table] = {}
        if self.sqlite:
            names = [r[0] for r in await self._x.fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
            for name in names:
                cols = tuple(r[1] for r in await self._x.fetchall(f'PRAGMA table_info("{name}")'))
                refs = tuple((r[2], r[3], r[4] or "rowid")
                             for r in await self._x.fetchall(f'PRAGMA foreign_key_list("{name}")'))
                out[name] = Table(name, cols, refs)
        else:
            columns: dict[str, list[str]] = {}
            for table, col in await self._x.fetchall(_PG_COLUMNS):
                columns.setdefault(str(table), []).append(str(col))
            refs_of: dict[str, list[tuple[str, str, str]]] = {}
            for table, col, parent, parent_col in await self._x.fetchall(_PG_REFS):
                refs_of.setdefault(str(table), []).append((str(parent), str(col), str(parent_col)))
            for name, cols_ in columns.items():
                out[name] = Table(name, tuple(cols_), tuple(refs_of.get(name, ())))
        self._tables = out
        return out

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """One write transaction (the caller holds the write lock); yields it (a
        ``Transaction``) for other stores' writes that belong to the same erasure."""
        if not self.sqlite:
            async with self.db.transaction() as tx:
                self._x = tx
                try:
                    yield tx
                finally:
                    self._x = self.db
            return
        await self.db.execute("PRAGMA secure_delete = ON")  # already on for the store's connections
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self._x
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        await self.db.execute("COMMIT")

    async def _delete_where(self, table: str, where: str, args: tuple[object, ...], depth: int = 0) -> int:
        """Delete rows of ``table`` matching ``where``, after the rows that reference them."""
        tables = await self.tables()
        deleted = 0
        if depth < _MAX_DEPTH:
            for child in tables.values():
                for parent, col, parent_col in child.refs:
                    if parent == table:
                        sub = f'"{col}" IN (SELECT "{parent_col}" FROM "{table}" WHERE {where})'
                        deleted += await self._delete_where(child.name, sub, args, depth + 1)
        return deleted + int(await self._x.execute(f'DELETE FROM "{table}" WHERE {where}', args))

    async def delete_conversation(
        self, conversation_id: str, user_id: int | None, *, skip: Collection[str] = ()
    ) -> int:
        """Inside ``transaction()``: every row about the conversation, except in ``skip``
        (tables erased only by their own rules, and their children). Returns rows deleted."""
        deleted = 0
        for t in (await self.tables()).values():
            if t.name in skip:
                continue
            if "conversation_id" in t.columns:
                deleted += await self._delete_where(t.name, '"conversation_id" = ?', (conversation_id,))
            if user_id is not None:
                for col in ("chat_id", "user_id"):
                    if col in t.columns:
                        deleted += await self._delete_where(t.name, f'"{col}" = ?', (user_id,))
        if "conversations" in await self.tables():
            deleted += await self._delete_where("conversations", '"id" = ?', (conversation_id,))
        return deleted

    async def delete_before(self, table: str, column: str, cutoff: float, limit: int = 500) -> int:
        """One slice (at most ``limit`` rows, children first) of ``table`` older than ``cutoff``.
        Returns the rows of ``table`` deleted; 0 if the table does not exist."""
        tables = await self.tables()
        if table not in tables or column not in tables[table].columns:
            return 0
        key = "id" if "id" in tables[table].columns else self.rowid
        where = f'{key} IN (SELECT {key} FROM "{table}" WHERE "{column}" < ? LIMIT {int(limit)})'
        for child in tables.values():
            for parent, col, parent_col in child.refs:
                if parent == table:
                    sub = f'"{col}" IN (SELECT "{parent_col}" FROM "{table}" WHERE {where})'
                    await self._delete_where(child.name, sub, (cutoff,), 1)
        return int(await self._x.execute(f'DELETE FROM "{table}" WHERE {where}', (cutoff,)))

    async def conversations_with_lines_before(self, cutoff: float) -> list[str]:
        return [r[0] for r in await self._x.fetchall(
            "SELECT DISTINCT conversation_id FROM messages WHERE ts < ?", (cutoff,))]

    async def idle_conversations(self, cutoff: float) -> list[str]:
        return [r[0] for r in await self._x.fetchall("SELECT id FROM conversations WHERE updated_at < ?", (cutoff,))]

    async def prune_words(self, conversation_id: str, keys: Collection[str]) -> list[str]:
        """Drop the state values in ``keys`` whose text no longer appears in any of the
        conversation's remaining lines from the user (their line has expired). Returns the
        keys dropped."""
        row = await self._x.fetchone("SELECT state_json FROM conversations WHERE id = ?", (conversation_id,))
        if row is None:
            return []
        try:
            state = json.loads(row[0])
        except ValueError:
            return []
        values = state.get("values") if isinstance(state, dict) else None
        if not isinstance(values, dict):
            return []
        said = _squash(" ".join(r[0] for r in await self._x.fetchall(
            "SELECT text FROM messages WHERE conversation_id = ? AND direction = 'in'", (conversation_id,))))
        gone = [k for k in keys if isinstance(values.get(k), str) and values[k] and _squash(values[k]) not in said]
        if gone:
            for k in gone:
                del values[k]
            extra = json.dumps(state, ensure_ascii=False)
            await self._x.execute("UPDATE conversations SET state_json = ? WHERE id = ?", (extra, conversation_id))
        return gone

    async def reclaim(self) -> None:
        """Free pages back to the file system, the WAL emptied (busy: the next one finishes).
        PostgreSQL: nothing (autovacuum)."""
        if not self.sqlite:
            return
        try:
            await reclaim_space(self.db)
        except sqlite3.OperationalError:
            log.info("reclaiming free pages after a deletion did not complete", exc_info=True)
