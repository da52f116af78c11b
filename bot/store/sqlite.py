"""SQLite implementation of the store port (aiosqlite, WAL, versioned migrations).

One connection per process; aiosqlite serialises calls on its own thread. Each engine
turn is one transaction (state + transcript lines + unmatched rows). Errors opening the
file surface as StoreError naming the path, never as a traceback to a user.

Deleted text does not stay readable in the file: every connection runs with
``secure_delete`` (deleted content is overwritten with zeros), the file uses incremental
auto-vacuum (an older file is converted once, with a VACUUM, when it is opened), and
``reclaim()`` — called after erasures and purges — hands free pages back to the file system
and truncates the write-ahead log, whose old frames still hold the text.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from bot.core.ports import Direction, Entry, State

from .counters import day_of, note_counts, turn_counts
from .database import SQLiteDatabase, StoreError
from .schema import MIGRATIONS

log = logging.getLogger(__name__)



TurnWrites = Callable[[aiosqlite.Connection, State], Awaitable[None]]
#: Extra writes of the turn being saved, set by a door around ``Engine.handle`` (the Telegram
#: door: its outgoing messages, the update marked done). ``save_turn`` awaits it inside its
#: transaction just before COMMIT; if it raises, the whole turn is rolled back.
TURN_WRITES: contextvars.ContextVar[TurnWrites | None] = contextvars.ContextVar("turn_writes", default=None)


@dataclass(frozen=True)
class ConversationRow:
    id: str
    flow: str
    step: str
    active: bool
    paused: bool
    user_name: str
    created_at: float
    updated_at: float
    messages: int


@dataclass(frozen=True)
class MessageRow:
    id: int
    conversation_id: str
    ts: float
    direction: str
    kind: str
    text: str
    intent: str | None
    score: float | None
    decision: str | None


def _create_private(path: str) -> None:
    """Create the database's folder and an empty file readable by the owner only, whatever
    the umask (SQLite gives the -wal and -shm files the database file's permissions)."""
    target = Path(path).expanduser()
    try:
        target.resolve().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder for the database {path}: {exc.strerror}") from exc
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the database {path}: {exc.strerror}") from exc
    os.chmod(target, 0o600)  # the umask may have removed bits only; make it exactly owner-only


class SQLiteStore:
    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self.db = db
        self.path = path
        # one connection: a write must never land inside another coroutine's transaction,
        # so every write method (and any transaction of other modules on self.db) takes this
        self.tx_lock = asyncio.Lock()
        # the same connection and lock as a ``Database`` (bot/store/database.py): what the
        # features' stores are built on (``.db`` / ``.tx_lock`` are the same two things)
        self.database = SQLiteDatabase(db, path, self.tx_lock)


    # -- lifecycle -----------------------------------------------------------------
    @classmethod
    async def open(cls, path: str | Path, timeout: float = 5.0) -> SQLiteStore:
        p = str(path)
        if p != ":memory:":
            _create_private(p)
        try:
            db = await aiosqlite.connect(p, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {p}: {exc}") from exc
        store = cls(db, p)
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            await db.execute("PRAGMA secure_delete = ON")
            if p != ":memory:":
                await db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # a new file: before any table
                await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            if p != ":memory:":
                await store._check_intact()
            await store._migrate()
            await store._check_writable()
            if p != ":memory:":
                await store._convert_to_incremental_vacuum()
        except sqlite3.OperationalError as exc:
            await db.close()
            msg = str(exc)
            if "locked" in msg or "busy" in msg:
                raise StoreError(f"the database {p} is locked by another process; stop it or use --db") from exc
            if "readonly" in msg:
                raise StoreError(f"the database {p} is read-only for this user (uid {os.getuid()}): "
                                 "give the bot's user write access to the file and its folder") from exc
            raise StoreError(f"cannot use the database {p}: {msg}") from exc
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise StoreError(f"{p} is not a usable SQLite database: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self.db.close()

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """One row, read in a single call: no read transaction stays open across an await.

        (A read left open on this shared connection would make the next write fail at once
        with "database is locked" when another connection — the outbox's — holds the lock.)
        """
        rows = await self.db.execute_fetchall(sql, args)
        return rows[0] if rows else None

    async def _check_intact(self) -> None:
        """``PRAGMA quick_check`` at start: a damaged file is refused by name, not met mid-turn."""
        rows = await self.db.execute_fetchall("PRAGMA quick_check(5)")
        problems = [str(r[0]) for r in rows if r[0] != "ok"]
        if problems:
            raise StoreError(f"the database {self.path} is damaged (quick_check: {'; '.join(problems)}); "
                             "restore a backup (python -m bot backup-db) or move the file away")

    async def _check_writable(self) -> None:
        """A write that changes nothing, rolled back: a read-only file fails here, at start."""
        row = await self.fetchone("PRAGMA user_version")
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            await self.db.execute(f"PRAGMA user_version = {int(row[0]) if row else 0}")
        finally:
            await self.db.execute("ROLLBACK")

    async def _migrate(self) -> None:
        row = await self.fetchone("PRAGMA user_version")
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the database {self.path} has schema version {version}, newer than this bot "
                f"knows ({len(MIGRATIONS)}); upgrade the bot"
            )
        for i in range(version, len(MIGRATIONS)):
            log.info("migrating %s to schema version %d", self.path, i + 1)
            await self.db.executescript(
                "BEGIN IMMEDIATE;\n" + MIGRATIONS[i] + f"\nPRAGMA user_version = {i + 1};\nCOMMIT;"
            )

    async def _convert_to_incremental_vacuum(self) -> None:
        """A file made before auto_vacuum was set: convert it once (VACUUM rewrites it)."""
        row = await self.fetchone("PRAGMA auto_vacuum")
        if row is None or int(row[0]) == 2:
            return
        log.info("converting %s to incremental auto-vacuum (a one-time VACUUM)", self.path)
        try:
            await self.db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            await self.db.execute("VACUUM")
        except sqlite3.OperationalError as exc:  # another process reads it: next start
            log.warning("could not convert %s to incremental auto-vacuum yet: %s", self.path, exc)

    async def reclaim(self) -> None:
        """After deleting personal data: give free pages back and empty the write-ahead log.
        A checkpoint that other readers block is finished by a later one (logged)."""
        async with self.tx_lock:
            await reclaim_space(self.db)

    async def backup_to(self, target: str | Path) -> None:
        """SQLite's online backup API: a consistent copy (owner-only) while the bot runs."""
        _create_private(str(target))
        dest = await aiosqlite.connect(str(target))
        try:
            await self.db.backup(dest)
        finally:
            await dest.close()

    # -- the engine's port -----------------------------------------------------------
    async def load_state(self, conversation_id: str) -> State | None:
        row = await self.fetchone(
            "SELECT flow, step, seq, state_json, active, paused, user_name FROM conversations WHERE id = ?",
            (conversation_id,),
        )
        if row is None:
            return None
        extra = json.loads(row[3] or "{}")
        return State(
            conversation_id=conversation_id,
            flow=row[0],
            step=row[1],
            seq=int(row[2]),
            values=dict(extra.get("values", {})),
            history=tuple(extra.get("history", ())),
            offer=tuple(extra.get("offer", ())),
            misses=int(extra.get("misses", 0)),
            active=bool(row[4]),
            paused=bool(row[5]),
            user_name=row[6],
            lang=extra.get("lang", "en"),
        )

    async def save_turn(self, state: State, entries: Sequence[Entry], events: Sequence[str] = ()) -> None:
        now = time.time()
        extra = json.dumps({
            "values": dict(state.values), "history": list(state.history), "offer": list(state.offer),
            "misses": state.misses, "lang": state.lang,
        }, ensure_ascii=False)
        db = self.db
        async with self.tx_lock:
            await self._save_turn(db, state, entries, extra, now, events)

    async def _save_turn(self, db: aiosqlite.Connection, state: State, entries: Sequence[Entry],
                         extra: str, now: float, events: Sequence[str] = ()) -> None:
        await db.execute("BEGIN IMMEDIATE")  # take the write lock first (busy timeout applies)
        try:
            rows = await db.execute_fetchall(
                "SELECT flow, step, updated_at FROM conversations WHERE id = ?", (state.conversation_id,)
            )
            previous = (str(rows[0][0]), str(rows[0][1]), float(rows[0][2])) if rows else None
            await self._count(db, turn_counts(previous, state, entries, events, now), now)
            await db.execute(
                """INSERT INTO conversations (id, flow, step, seq, state_json, active, paused, user_name,
                                              created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET flow=excluded.flow, step=excluded.step,
                     seq=excluded.seq, state_json=excluded.state_json, active=excluded.active,
                     paused=excluded.paused, user_name=excluded.user_name, updated_at=excluded.updated_at""",
                (state.conversation_id, state.flow, state.step, state.seq, extra, int(state.active),
                 int(state.paused), state.user_name, now, now),
            )
            if entries:
                await db.executemany(
                    """INSERT INTO messages (conversation_id, ts, direction, kind, text, intent, score,
                                             decision, flow, step) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [(state.conversation_id, now, e.direction.value, e.kind, e.text, e.intent, e.score,
                      e.decision, e.flow, e.step) for e in entries],
                )
                unmatched = [e for e in entries if e.decision in ("reject", "suggest")]
                if unmatched:
                    await db.executemany(
                        "INSERT INTO unmatched (conversation_id, ts, text, decision, candidates_json) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(state.conversation_id, now, e.text, e.decision or "",
                          json.dumps([[c, s] for c, s in e.candidates])) for e in unmatched],
                    )
            extra = TURN_WRITES.get()
            if extra is not None:
                await extra(db, state)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    @staticmethod
    async def _count(db: aiosqlite.Connection, counts: Mapping[str, int], now: float) -> None:
        if counts:
            day = day_of(now)
            await db.executemany(
                "INSERT INTO counters (day, name, n) VALUES (?, ?, ?) "
                "ON CONFLICT (day, name) DO UPDATE SET n = n + excluded.n",
                [(day, name, n) for name, n in counts.items()],
            )

    # -- queries for tools and doors ------------------------------------------------
    async def set_flags(self, conversation_id: str, *, active: bool | None = None,
                        paused: bool | None = None) -> None:
        sets, args = [], []
        if active is not None:
            sets.append("active = ?")
            args.append(int(active))
        if paused is not None:
            sets.append("paused = ?")
            args.append(int(paused))
        if not sets:
            return
        async with self.tx_lock:
            await self.db.execute(f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?",
                                  (*args, conversation_id))

    async def add_entries(self, conversation_id: str, entries: Sequence[Entry]) -> None:
        """Transcript lines outside an engine turn (agent messages, notes); an escalation note
        (kind ``escalation:<event>``) is counted in the same transaction."""
        now = time.time()
        counts = note_counts(entries)
        async with self.tx_lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                await self.db.executemany(
                    "INSERT INTO messages (conversation_id, ts, direction, kind, text) VALUES (?, ?, ?, ?, ?)",
                    [(conversation_id, now, e.direction.value, e.kind, e.text) for e in entries],
                )
                await self._count(self.db, counts, now)
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise

    async def conversations(self, limit: int = 50) -> list[ConversationRow]:
        rows = await self.db.execute_fetchall(
            """SELECT c.id, c.flow, c.step, c.active, c.paused, c.user_name, c.created_at, c.updated_at,
                      (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)
               FROM conversations c ORDER BY c.updated_at DESC LIMIT ?""",
            (limit,),
        )
        return [ConversationRow(r[0], r[1], r[2], bool(r[3]), bool(r[4]), r[5], r[6], r[7], r[8]) for r in rows]

    async def messages(self, conversation_id: str | None = None, after_id: int = 0,
                       limit: int = 10_000) -> list[MessageRow]:
        sql = ("SELECT id, conversation_id, ts, direction, kind, text, intent, score, decision "
               "FROM messages WHERE id > ?")
        args: list[Any] = [after_id]
        if conversation_id is not None:
            sql += " AND conversation_id = ?"
            args.append(conversation_id)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        rows = await self.db.execute_fetchall(sql, args)
        return [MessageRow(*r) for r in rows]

    async def paused_conversations(self) -> list[str]:
        """Conversations an agent has taken over (the bot stays silent in them)."""
        return [str(r[0]) for r in await self.db.execute_fetchall("SELECT id FROM conversations WHERE paused = 1")]

    async def message_summary(self, conversation_id: str) -> tuple[int, float | None]:
        """(lines stored, time of the first) for one conversation (what /privacy counts)."""
        row = await self.fetchone(
            "SELECT COUNT(*), MIN(ts) FROM messages WHERE conversation_id = ?", (conversation_id,)
        )
        return (int(row[0]), row[1]) if row else (0, None)

    async def last_message_id(self) -> int:
        """The newest transcript row's id (0 for none): a cursor for readers of the transcript."""
        row = await self.fetchone("SELECT COALESCE(MAX(id), 0) FROM messages")
        return int(row[0]) if row else 0

    async def unmatched(self, limit: int = 50) -> list[tuple[float, str, str, str, list[Any]]]:
        rows = await self.db.execute_fetchall(
            "SELECT ts, conversation_id, text, decision, candidates_json FROM unmatched ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]


async def reclaim_space(db: aiosqlite.Connection) -> None:
    """``SQLiteStore.reclaim`` on a bare connection (the caller holds the store's write lock)."""
    await db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
    rows = await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
    if rows and rows[0][0]:
        log.info("the write-ahead log could not be emptied yet (a reader is busy)")


__all__ = ["reclaim_space", "TURN_WRITES", "SQLiteStore", "StoreError", "ConversationRow", "MessageRow", "Direction"]
