"""The database seam: one connection per process, its write lock, transactions and each
owner's migrations — what every store class (conversations, quotes, agents, the Telegram
door's queue) is built on.

``Database`` is the protocol the store classes use; ``SQLiteDatabase`` is the SQLite
implementation (aiosqlite, WAL). A PostgreSQL implementation is a new module next to this one
(a class with the same methods, plus store classes speaking its SQL) chosen where the
database is opened — nothing else in the tree names the engine.

Rules for store classes:

* reads go through ``fetchall`` / ``fetchone`` (one call each: no read transaction stays open
  across an ``await`` on the shared connection);
* writes take the write lock: a single statement through ``execute`` / ``executemany``,
  several through ``async with database.transaction() as tx`` (BEGIN IMMEDIATE … COMMIT,
  ROLLBACK on any exception) — a write never lands inside another coroutine's transaction;
* the schema belongs to its owner: ``migrate(owner, migrations)`` runs the owner's list in
  order, each once, each in its own transaction, and remembers how far it got (table
  ``schema_versions``). ``migrations`` is one list per dialect (``{"sqlite": [...],
  "postgresql": [...]}``, numbered alike: step N makes the same tables in both) or a plain list,
  which is SQLite's only;
* what differs between engines is asked of the database, not spelt in a store:
  ``dialect`` ("sqlite", "postgresql"), ``skip_locked`` (the clause a claiming SELECT ends
  with: rows another process is claiming are skipped — nothing on SQLite, where a write
  transaction excludes every other).

``open_database`` (bot/store/__init__.py) chooses the implementation from the setting.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import aiosqlite

Row = Sequence[Any]
#: an owner's migrations: one list per dialect, or a plain list (SQLite's only)
Migrations = Mapping[str, Sequence[str]] | Sequence[str]


class StoreError(Exception):
    """The database cannot be used; the message names the path and what to do."""


_VERSIONS = """CREATE TABLE IF NOT EXISTS schema_versions (
    owner   TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)"""


def pick_migrations(migrations: Migrations, dialect: str, owner: str) -> Sequence[str]:
    """``dialect``'s list out of an owner's migrations; StoreError when it has none."""
    if isinstance(migrations, Mapping):
        steps = migrations.get(dialect)
        lengths = {len(v) for v in migrations.values()}
        if len(lengths) > 1:
            raise StoreError(f"the {owner} migrations are not numbered alike across engines: "
                             + ", ".join(f"{k} has {len(v)}" for k, v in migrations.items()))
    else:
        steps = migrations if dialect == "sqlite" else None
    if steps is None:
        raise StoreError(f"the {owner} feature has no {dialect} schema yet: run it on SQLite (BOT_DB)")
    return steps


class Transaction(Protocol):
    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int: ...
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...
    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None: ...


class Database(Protocol):
    path: str
    lock: asyncio.Lock
    dialect: str
    skip_locked: str

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...
    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None: ...
    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int: ...
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...
    async def migrate(self, owner: str, migrations: Migrations) -> int: ...


class SQLiteStatements:
    """Statements on an aiosqlite connection as they are (no lock, no BEGIN): a ``Transaction``
    inside one already open, or on a connection nobody else writes on."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        cur = await self.conn.execute(sql, tuple(args))
        return max(0, cur.rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, [tuple(r) for r in rows])

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return list(await self.conn.execute_fetchall(sql, tuple(args)))

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        return next(iter(await self.conn.execute_fetchall(sql, tuple(args))), None)


def statements(db: Any) -> Transaction:
    """Any database handle as a ``Transaction``: a bare aiosqlite connection as its statements
    (``SQLiteStatements``); a ``Database`` or a ``Transaction`` as it is. What a store class that
    may be given either calls, so it never names the engine."""
    return SQLiteStatements(db) if isinstance(db, aiosqlite.Connection) else db


class SQLiteDatabase:
    """``Database`` on one aiosqlite connection (autocommit mode: transactions are explicit)."""

    dialect = "sqlite"
    skip_locked = ""  # BEGIN IMMEDIATE already keeps every other writer out

    def __init__(self, conn: aiosqlite.Connection, path: str, lock: asyncio.Lock | None = None) -> None:
        self.conn = conn
        self.path = path
        self.lock = lock or asyncio.Lock()

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return list(await self.conn.execute_fetchall(sql, tuple(args)))

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        rows = await self.conn.execute_fetchall(sql, tuple(args))
        return next(iter(rows), None)

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self.lock:
            cur = await self.conn.execute(sql, tuple(args))
            return max(0, cur.rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(r) for r in rows]
        if batch:
            async with self.lock:
                await self.conn.executemany(sql, batch)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.lock:
            await self.conn.execute("BEGIN IMMEDIATE")  # the write lock first (busy timeout applies)
            try:
                yield SQLiteStatements(self.conn)
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")

    async def migrate(self, owner: str, migrations: Migrations) -> int:
        """Run ``owner``'s migrations it has not run yet; returns its version afterwards."""
        assert owner.isidentifier(), owner
        migrations = pick_migrations(migrations, self.dialect, owner)
        async with self.lock:
            await self.conn.execute(_VERSIONS)
        row = await self.fetchone("SELECT version FROM schema_versions WHERE owner = ?", (owner,))
        version = int(row[0]) if row else 0
        if version > len(migrations):
            raise StoreError(
                f"the database {self.path} has {owner} schema version {version}, newer than this bot "
                f"knows ({len(migrations)}); upgrade the bot"
            )
        for i in range(version, len(migrations)):
            async with self.lock:
                try:
                    await self.conn.executescript(
                        "BEGIN IMMEDIATE;\n" + migrations[i] + "\n"
                        f"INSERT INTO schema_versions (owner, version) VALUES ('{owner}', {i + 1}) "
                        "ON CONFLICT(owner) DO UPDATE SET version = excluded.version;\nCOMMIT;"
                    )
                except sqlite3.Error as exc:
                    if self.conn.in_transaction:
                        await self.conn.execute("ROLLBACK")
                    raise StoreError(f"{owner} migration {i + 1} failed on {self.path}: {exc}") from exc
        return len(migrations)

    async def tables(self) -> list[str]:
        """The tables of this database (SQLite's own left out), sorted."""
        rows = await self.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        )
        return [str(r[0]) for r in rows]
