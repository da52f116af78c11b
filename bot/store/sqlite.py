"""SQLite implementation of the store port (aiosqlite, WAL, versioned migrations).

One connection per process; aiosqlite serialises calls on its own thread. Each engine
turn is one transaction (state + transcript lines + unmatched rows + a door's writes, through
``TURN_WRITES``), run in ONE hand-over to that thread (``TurnCall``). Errors opening the
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
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bot.core.ports import Direction, Entry, State

from . import conversations as sql
from .conversations import ConversationRow, MessageRow
from .database import SQLiteDatabase, StoreError
from .schema import BY_DIALECT, MIGRATIONS, OWNER

log = logging.getLogger(__name__)



TurnWrites = Callable[[Any, State], Awaitable[None]]
#: Extra writes of the turn being saved, set by a door around ``Engine.handle`` (the Telegram
#: door: its outgoing messages, the update marked done). ``save_turn`` awaits it with the
#: turn's handle — SQLite's ``TurnCall``, PostgreSQL's ``Transaction`` — and its writes are
#: part of the turn's transaction: if it raises, nothing of the turn is saved.
TURN_WRITES: contextvars.ContextVar[TurnWrites | None] = contextvars.ContextVar("turn_writes", default=None)


class TurnCall:
    """A turn on SQLite, as a door's hook (``TURN_WRITES``) is handed it: ``await
    turn.call(fn, *args)`` runs ``fn(sqlite3_connection, *args)`` — plain sqlite3 statements —
    inside the turn's transaction, in the SAME hand-over to aiosqlite's thread as the turn's
    own writes (BEGIN IMMEDIATE, the turn, ``fn``, COMMIT), and returns what ``fn`` returned.

    So the hook's work before the call (planning, rendering) runs on the event loop before
    the transaction begins — raising there saves nothing — and its work after the call runs
    once the turn is committed. One call per turn; when the hook makes none, ``save_turn``
    makes it (the turn alone). Each hand-over costs a future, a thread wake-up and GIL
    switches, and the write lock is held across it: one per turn, not one per statement.
    """

    def __init__(self, store: SQLiteStore, state: State, entries: Sequence[Entry], events: Sequence[str],
                 now: float) -> None:
        self._store = store
        self._turn = (state, entries, events, now)
        self.done = False

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.done:
            raise RuntimeError("a turn's writes are one call: this turn is already committed")
        self.done = True
        db = self._store.db
        async with self._store.tx_lock:
            return await db._execute(_turn_transaction, db._conn, self._turn, fn, args)


def _turn_transaction(conn: sqlite3.Connection, turn: tuple[State, Sequence[Entry], Sequence[str], float],
                      fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """On aiosqlite's thread: the turn's writes and ``fn``'s, one transaction."""
    conn.execute("BEGIN IMMEDIATE")  # take the write lock first (busy timeout applies)
    try:
        run_now(sql.write_turn(_ThreadTx(conn), *turn))
        result = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return result


def _no_more(conn: sqlite3.Connection) -> None:
    """A turn without a door's writes."""


class _ThreadTx:
    """``Transaction`` on the sqlite3 connection, for code running on aiosqlite's thread: the
    coroutines never suspend, so ``run_now`` drives them to the end in one go."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return max(0, self.conn.execute(sql, tuple(args)).rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, [tuple(r) for r in rows])

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return list(self.conn.execute(sql, tuple(args)).fetchall())

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, tuple(args)).fetchone()


def run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that awaits only ``_ThreadTx`` calls to its end, here (on aiosqlite's thread)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a turn's writes awaited something other than the database")


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
        """The conversation store's migrations through ``Database.migrate`` (one runner for
        every owner). A file made when ``PRAGMA user_version`` counted them has its count
        taken over once; ``user_version`` stays equal to the count, so an older bot still
        refuses a newer file."""
        row = await self.fetchone("PRAGMA user_version")
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the database {self.path} has schema version {version}, newer than this bot "
                f"knows ({len(MIGRATIONS)}); upgrade the bot"
            )
        async with self.tx_lock:
            await self.db.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions (owner TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            if version:
                await self.db.execute(
                    "INSERT INTO schema_versions (owner, version) VALUES (?, ?) ON CONFLICT (owner) DO NOTHING",
                    (OWNER, version),
                )
        done = await self.database.migrate(OWNER, BY_DIALECT)
        if done != version:
            async with self.tx_lock:
                await self.db.execute(f"PRAGMA user_version = {int(done)}")

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
        return sql.state_from_row(conversation_id, await self.fetchone(sql.LOAD_STATE, (conversation_id,)))

    async def save_turn(self, state: State, entries: Sequence[Entry], events: Sequence[str] = ()) -> None:
        """The turn and a door's writes (``TURN_WRITES``) in one transaction, one hand-over
        to aiosqlite's thread (``TurnCall``)."""
        turn = TurnCall(self, state, entries, events, time.time())
        extra = TURN_WRITES.get()
        if extra is not None:
            await extra(turn, state)
        if not turn.done:
            await turn.call(_no_more)

    # -- queries for tools and doors ------------------------------------------------
    async def set_flags(self, conversation_id: str, *, active: bool | None = None,
                        paused: bool | None = None) -> None:
        update = sql.flags_update(active, paused)
        if update is None:
            return
        async with self.tx_lock:
            await self.db.execute(update[0], (*update[1], conversation_id))

    async def add_entries(self, conversation_id: str, entries: Sequence[Entry]) -> None:
        """Transcript lines outside an engine turn (agent messages, notes); an escalation note
        (kind ``escalation:<event>``) is counted in the same transaction."""
        now = time.time()
        async with self.database.transaction() as tx:
            await sql.write_notes(tx, conversation_id, entries, now)

    async def conversations(self, limit: int = 50) -> list[ConversationRow]:
        return sql.conversation_rows(await self.db.execute_fetchall(sql.CONVERSATIONS, (limit,)))

    async def messages(self, conversation_id: str | None = None, after_id: int = 0,
                       limit: int = 10_000) -> list[MessageRow]:
        query, args = sql.messages_query(conversation_id, after_id, limit)
        return [MessageRow(*r) for r in await self.db.execute_fetchall(query, args)]

    async def paused_conversations(self) -> list[str]:
        """Conversations an agent has taken over (the bot stays silent in them)."""
        return [str(r[0]) for r in await self.db.execute_fetchall(sql.PAUSED)]

    async def message_summary(self, conversation_id: str) -> tuple[int, float | None]:
        """(lines stored, time of the first) for one conversation (what /privacy counts)."""
        row = await self.fetchone(
            "SELECT COUNT(*), MIN(ts) FROM messages WHERE conversation_id = ?", (conversation_id,)
        )
        return (int(row[0]), row[1]) if row else (0, None)

    async def last_message_id(self) -> int:
        """The newest transcript row's id (0 for none): a cursor for readers of the transcript."""
        row = await self.fetchone(sql.LAST_MESSAGE)
        return int(row[0]) if row else 0

    async def unmatched(self, limit: int = 50) -> list[tuple[float, str, str, str, list[Any]]]:
        return sql.unmatched_rows(await self.db.execute_fetchall(sql.UNMATCHED, (limit,)))


async def reclaim_space(db: aiosqlite.Connection) -> None:
    """``SQLiteStore.reclaim`` on a bare connection (the caller holds the store's write lock)."""
    await db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
    rows = await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
    if rows and rows[0][0]:
        log.info("the write-ahead log could not be emptied yet (a reader is busy)")


__all__ = ["reclaim_space", "TURN_WRITES", "TurnCall", "SQLiteStore", "StoreError", "ConversationRow", "MessageRow", "Direction"]
