"""Erasing a user's data (/forget) and the retention purge, on the store's connection.

Deletion is generic over the schema so features added later are covered without edits
here: every table with a ``conversation_id`` column (plus ``conversations`` itself) loses
that conversation's rows, and rows in tables that reference them by foreign key go first
(e.g. a quote's outbox entries and photos). For a Telegram conversation (``tg:<id>``),
tables keyed by ``chat_id`` / ``user_id`` lose that id's rows too. Deleted content is zeroed
(``secure_delete``), free pages go back to the file system and the WAL is truncated
(``bot.store.sqlite.reclaim_space``), so the text is not left in the file either.

Forum topics on Telegram are not deleted here: their thread ids go to ``agent_trash`` and
the desk deletes them (it owns the group's rate limit). Who must be told around a deletion
(the desk) is told by the caller (``feature.Agents.forgetting`` / ``forgotten``).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bot.store.sqlite import reclaim_space

log = logging.getLogger(__name__)

_OWN = ("agent_trash", "agent_meta", "sqlite_sequence")


@dataclass(frozen=True)
class _Table:
    name: str
    columns: tuple[str, ...]
    refs: tuple[tuple[str, str, str], ...]  # (parent table, my column, parent column)


async def _tables(db: aiosqlite.Connection) -> dict[str, _Table]:
    async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'") as cur:
        names = [r[0] for r in await cur.fetchall()]
    out: dict[str, _Table] = {}
    for name in names:
        async with db.execute(f'PRAGMA table_info("{name}")') as cur:
            cols = tuple(r[1] for r in await cur.fetchall())
        async with db.execute(f'PRAGMA foreign_key_list("{name}")') as cur:
            refs = tuple((r[2], r[3], r[4] or "rowid") for r in await cur.fetchall())
        out[name] = _Table(name, cols, refs)
    return out


async def _delete_where(
    db: aiosqlite.Connection,
    tables: dict[str, _Table],
    table: str,
    where: str,
    args: tuple[object, ...],
    depth: int = 0,
) -> int:
    """Delete rows of ``table`` matching ``where``, after the rows that reference them."""
    deleted = 0
    if depth < 5:
        for child in tables.values():
            for parent, col, parent_col in child.refs:
                if parent == table:
                    sub = f'"{col}" IN (SELECT "{parent_col}" FROM "{table}" WHERE {where})'
                    deleted += await _delete_where(db, tables, child.name, sub, args, depth + 1)
    cur = await db.execute(f'DELETE FROM "{table}" WHERE {where}', args)
    return deleted + max(0, cur.rowcount)


async def _reclaim(db: aiosqlite.Connection) -> None:
    try:
        await reclaim_space(db)
    except sqlite3.OperationalError:  # busy: the next purge or checkpoint finishes it
        log.info("reclaiming free pages after a deletion did not complete", exc_info=True)


def telegram_user_id(conversation_id: str) -> int | None:
    prefix, _, rest = conversation_id.partition(":")
    if prefix == "tg" and rest.lstrip("-").isdigit():
        return int(rest)
    return None


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def forget_conversation(
    db: aiosqlite.Connection, conversation_id: str, *, scrub: bool = True, lock: Any = None
) -> int:
    """Delete everything stored about one conversation, in one transaction. Returns the number
    of rows deleted. ``lock``: the store's ``tx_lock`` when ``db`` is the bot's shared
    connection. Forum topic thread ids of the conversation are queued in ``agent_trash``."""
    async with lock if lock is not None else _NoLock():
        tables = await _tables(db)
        uid = telegram_user_id(conversation_id)
        await db.execute("PRAGMA secure_delete = ON")  # already on for the store's connections
        deleted = 0
        await db.execute("BEGIN IMMEDIATE")
        try:
            if "agent_topics" in tables and "agent_trash" in tables:
                await db.execute(
                    "INSERT OR IGNORE INTO agent_trash (thread_id, ts) SELECT thread_id, ? FROM agent_topics "
                    "WHERE conversation_id = ? AND thread_id IS NOT NULL",
                    (time.time(), conversation_id),
                )
            for t in tables.values():
                if t.name in _OWN:
                    continue
                if "conversation_id" in t.columns:
                    deleted += await _delete_where(db, tables, t.name, '"conversation_id" = ?', (conversation_id,))
                if uid is not None:
                    for col in ("chat_id", "user_id"):
                        if col in t.columns:
                            deleted += await _delete_where(db, tables, t.name, f'"{col}" = ?', (uid,))
            if "conversations" in tables:
                deleted += await _delete_where(db, tables, "conversations", '"id" = ?', (conversation_id,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        if scrub:  # the deleted text must not linger in free pages or the write-ahead log
            await _reclaim(db)
    log.info("forgot conversation %s (%d rows)", conversation_id, deleted)
    return deleted


async def purge_expired(
    db: aiosqlite.Connection, retention_days: int, now: float | None = None, lock: Any = None
) -> int:
    """Delete transcript lines older than the retention period, and conversations idle that long
    (with everything that belongs to them). Returns the number of conversations removed."""
    cutoff = (now if now is not None else time.time()) - retention_days * 86400.0
    tables = await _tables(db)
    async with db.execute("SELECT id FROM conversations WHERE updated_at < ?", (cutoff,)) as cur:
        stale = [r[0] for r in await cur.fetchall()]
    await db.execute("PRAGMA secure_delete = ON")  # already on for the store's connections
    for table in ("messages", "unmatched"):
        if table not in tables:
            continue
        while True:  # in slices, the lock released in between: users' turns go first
            async with lock if lock is not None else _NoLock():
                cur = await db.execute(
                    f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE ts < ? LIMIT 500)", (cutoff,)
                )
            if cur.rowcount < 500:
                break
    for cid in stale:
        await forget_conversation(db, cid, scrub=False, lock=lock)
    async with lock if lock is not None else _NoLock():
        await _reclaim(db)
    if stale:
        log.info("retention: purged %d conversation(s) idle for more than %d days", len(stale), retention_days)
    return len(stale)


@dataclass(frozen=True)
class StoredSummary:
    messages: int
    first_ts: float | None
    has_quote: bool


async def stored_summary(db: aiosqlite.Connection, conversation_id: str) -> StoredSummary:
    async with db.execute(
        "SELECT COUNT(*), MIN(ts) FROM messages WHERE conversation_id = ?", (conversation_id,)
    ) as cur:
        row = await cur.fetchone()
    count, first = (int(row[0]), row[1]) if row else (0, None)
    has_quote = False
    try:
        async with db.execute("SELECT 1 FROM quotes WHERE conversation_id = ? LIMIT 1", (conversation_id,)) as cur:
            has_quote = await cur.fetchone() is not None
    except sqlite3.OperationalError:  # no quotes table in this database (no quote feature)
        has_quote = False
    return StoredSummary(count, first, has_quote)
