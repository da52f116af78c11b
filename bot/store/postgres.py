"""The database seam on PostgreSQL (asyncpg): ``PostgresDatabase``, chosen by
``DATABASE_URL=postgresql://…`` (``bot.store.open_database``).

The same ``Database`` protocol as ``SQLiteDatabase`` (bot/store/database.py), so store classes
keep one SQL text where it is portable:

* ``?`` placeholders are translated to ``$1, $2, …`` once per statement text (cached; a ``?``
  inside a quoted literal stays as it is);
* a connection pool (``DB_POOL_SIZE``, ``DB_CONNECT_TIMEOUT``, ``DB_COMMAND_TIMEOUT``) instead
  of one connection and a write lock: ``execute`` is one statement in its own transaction,
  ``transaction()`` holds one pooled connection from BEGIN to COMMIT (ROLLBACK on any
  exception). ``lock`` exists for the protocol's sake; nothing here takes it — PostgreSQL
  orders concurrent writers itself;
* ``migrate(owner, migrations)`` records progress in the same ``schema_versions`` table and
  runs each step in its own transaction, under an advisory lock per owner, so two instances
  starting at once never run one step twice;
* ``turn(conversation_id)``: one transaction holding ``pg_advisory_xact_lock`` on the
  conversation — what makes a conversation's turns strictly ordered across instances
  (``PostgresStore`` runs an engine turn's load and save inside it).

Dialect specifics other modules ask for live here as attributes (``dialect``,
``skip_locked``): a third engine is a third module, not edits across the tree.

Errors: a server that cannot be reached or a bad URL at start is a ``StoreError`` naming
``DATABASE_URL`` (the password never shown); errors of PostgreSQL itself during work are
raised as ``StoreError`` too (with the server's message), so callers catch one type.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .database import Migrations, Row, StoreError, Transaction, pick_migrations

log = logging.getLogger(__name__)

DIALECT = "postgresql"
SCHEMES = ("postgresql", "postgres")

_VERSIONS = """CREATE TABLE IF NOT EXISTS schema_versions (
    owner   TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)"""

#: Errors of the connection or the server while working (not at start).
DB_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
#: ... of which these mean the connection is gone (a read is tried again on a new one)
LOST: tuple[type[BaseException], ...] = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                                         asyncpg.exceptions.AdminShutdownError, ConnectionError)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable DATABASE_URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit((parts.scheme, f"{user}@{netloc[-1]}", parts.path, parts.query, parts.fragment))


def is_postgres_url(target: str) -> bool:
    return target.split("://", 1)[0].lower() in SCHEMES and "://" in target


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """``?`` placeholders to ``$n`` (outside quoted literals and identifiers)."""
    out: list[str] = []
    n = 0
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


_COUNT = re.compile(r"(\d+)\s*$")


def _rowcount(status: str) -> int:
    """asyncpg's command tag ("UPDATE 3", "INSERT 0 1", "DELETE 0") to a row count."""
    m = _COUNT.search(status or "")
    return int(m.group(1)) if m else 0


def _wrap(exc: BaseException) -> StoreError:
    return StoreError(f"PostgreSQL: {type(exc).__name__}: {exc}")


class _PgTx:
    """``Transaction`` on one connection inside BEGIN … COMMIT."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.open = True  # a turn's: False once it has ended (see ``PostgresDatabase._current``)

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            return _rowcount(await self.conn.execute(translate(sql), *args))
        except DB_ERRORS as exc:
            raise _wrap(exc) from exc

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(r) for r in rows]
        if batch:
            try:
                await self.conn.executemany(translate(sql), batch)
            except DB_ERRORS as exc:
                raise _wrap(exc) from exc

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            return list(await self.conn.fetch(translate(sql), *args))
        except DB_ERRORS as exc:
            raise _wrap(exc) from exc

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        try:
            return await self.conn.fetchrow(translate(sql), *args)  # type: ignore[no-any-return]
        except DB_ERRORS as exc:
            raise _wrap(exc) from exc


class PostgresDatabase:
    """``Database`` on an asyncpg pool. Open with :meth:`open`; ``close()`` ends the pool."""

    dialect = DIALECT
    #: appended to a SELECT that claims work: rows another instance is claiming are skipped
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, pool: asyncpg.Pool, url: str, *, turn_slots: int, acquire_timeout: float = 5.0) -> None:
        self.pool = pool
        self.url = url
        self.path = redact_url(url)  # what messages name (never the password)
        self.lock = asyncio.Lock()  # the protocol's; writes here do not need it
        self.acquire_timeout = acquire_timeout
        # the connection of the turn running in this task (reads and the save of the turn
        # go through it); turns hold a connection each, so at most ``turn_slots`` run at once
        # and the rest of the pool stays free for what a turn does meanwhile (a quote's
        # transaction, the outbox worker)
        self._turn: contextvars.ContextVar[_PgTx | None] = contextvars.ContextVar(f"pg_turn_{id(self)}", default=None)
        self._turn_slots = asyncio.Semaphore(turn_slots)

    # -- opening -----------------------------------------------------------------------
    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10, connect_timeout: float = 5.0,
                   command_timeout: float = 30.0) -> PostgresDatabase:
        shown = redact_url(url)
        if not is_postgres_url(url):
            raise StoreError(f"DATABASE_URL must start with postgresql://, got {shown}")
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=pool_size, timeout=connect_timeout,
                command_timeout=command_timeout, statement_cache_size=256,
            )
        except (TimeoutError, OSError) as exc:
            raise StoreError(f"DATABASE_URL: cannot reach the PostgreSQL server at {shown}: "
                             f"{exc.__class__.__name__}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"DATABASE_URL: the PostgreSQL server at {shown} refused the connection: {exc}") from exc
        except (ValueError, asyncpg.InterfaceError) as exc:  # a malformed URL
            raise StoreError(f"DATABASE_URL is not a usable PostgreSQL URL ({shown}): {exc}") from exc
        if pool is None:  # pragma: no cover - create_pool returns a pool when awaited
            raise StoreError("DATABASE_URL: no connection pool")
        return cls(pool, url, turn_slots=max(1, pool_size // 2), acquire_timeout=connect_timeout)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except (TimeoutError, *DB_ERRORS):
            self.pool.terminate()

    # -- connections -----------------------------------------------------------------------
    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, waited for at most ``acquire_timeout`` (DB_CONNECT_TIMEOUT)."""
        try:
            conn = await self.pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError as exc:
            raise StoreError(f"no free PostgreSQL connection within {self.acquire_timeout:g} s "
                             "(raise DB_POOL_SIZE or DB_CONNECT_TIMEOUT)") from exc
        except DB_ERRORS as exc:
            raise _wrap(exc) from exc
        try:
            yield conn
        finally:
            await self.pool.release(conn)

    async def _read(self, fn: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        """A read on a pooled connection; a connection found dead (the server restarted, a
        fail-over, an idle connection cut) is replaced and the read tried once more."""
        for attempt in (1, 2):
            try:
                async with self._connection() as conn:
                    return await fn(conn)
            except LOST as exc:
                if attempt == 2:
                    raise _wrap(exc) from exc
                log.warning("PostgreSQL connection lost (%s); reading again on a new one", type(exc).__name__)
            except DB_ERRORS as exc:
                raise _wrap(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the protocol --------------------------------------------------------------------
    def _current(self) -> _PgTx | None:
        """The turn open in this task. A task started during a turn inherits its context (and
        so the variable) but not the turn: once the turn has ended, reads go to the pool."""
        tx = self._turn.get()
        return tx if tx is not None and tx.open else None

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        tx = self._current()
        if tx is not None:
            return await tx.fetchall(sql, args)
        query = translate(sql)
        return list(await self._read(lambda conn: conn.fetch(query, *args)))

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        tx = self._current()
        if tx is not None:
            return await tx.fetchone(sql, args)
        query = translate(sql)
        return await self._read(lambda conn: conn.fetchrow(query, *args))  # type: ignore[no-any-return]

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self._connection() as conn:
            try:
                return _rowcount(await conn.execute(translate(sql), *args))
            except DB_ERRORS as exc:
                raise _wrap(exc) from exc

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(r) for r in rows]
        if batch:
            async with self._connection() as conn:
                try:
                    await conn.executemany(translate(sql), batch)
                except DB_ERRORS as exc:
                    raise _wrap(exc) from exc

    @asynccontextmanager
    async def _tx(self, conn: asyncpg.Connection) -> AsyncIterator[_PgTx]:
        """BEGIN … COMMIT on ``conn``; ROLLBACK on any exception of the body (which is
        re-raised as it is: only the database's own errors become ``StoreError``)."""
        tr = conn.transaction()
        try:
            await tr.start()
        except DB_ERRORS as exc:
            raise _wrap(exc) from exc
        try:
            yield _PgTx(conn)
        except BaseException:
            with suppress(*DB_ERRORS):
                await tr.rollback()
            raise
        try:
            await tr.commit()
        except DB_ERRORS as exc:
            raise _wrap(exc) from exc

    async def _begin(self, lock_key: str | None = None) -> tuple[AsyncExitStack, _PgTx]:
        """A connection in BEGIN (holding ``lock_key``'s advisory lock when given). Nothing
        has happened yet, so a connection found dead here is replaced once."""
        for attempt in (1, 2):
            stack = AsyncExitStack()
            try:
                conn = await stack.enter_async_context(self._connection())
                tx = await stack.enter_async_context(self._tx(conn))
                if lock_key is not None:
                    await tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (lock_key,))
                return stack, tx
            except StoreError as exc:
                await stack.aclose()
                if attempt == 2 or not isinstance(exc.__cause__, LOST):
                    raise
                log.warning("PostgreSQL connection lost (%s); starting again on a new one",
                            type(exc.__cause__).__name__)
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        stack, tx = await self._begin()
        async with stack:
            yield tx

    @asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[Transaction]:
        """One transaction holding the advisory lock on ``key`` (a conversation id) until it
        ends: another instance's turn on the same key waits here. While it is open, this
        task's ``fetchall`` / ``fetchone`` read inside it (the turn sees its own state)."""
        if self._current() is not None:
            raise RuntimeError("a turn is already open in this task")
        async with self._turn_slots:
            stack, tx = await self._begin(key)
            async with stack:
                token = self._turn.set(tx)
                try:
                    yield tx
                finally:
                    tx.open = False
                    self._turn.reset(token)

    def current_turn(self) -> Transaction | None:
        """The turn transaction open in this task, if any."""
        return self._current()

    async def migrate(self, owner: str, migrations: Migrations) -> int:
        """Run ``owner``'s PostgreSQL migrations it has not run yet; returns its version."""
        assert owner.isidentifier(), owner
        steps = pick_migrations(migrations, DIALECT, owner)
        try:
            async with self._connection() as conn:
                try:
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('schema_versions'))")
                        await conn.execute(_VERSIONS)
                except asyncpg.PostgresError as exc:  # e.g. no right to create tables
                    raise StoreError(f"cannot set up the schema on {self.path}: {exc}") from exc
                version = await self._version(conn, owner)
                if version > len(steps):
                    raise StoreError(
                        f"the database {self.path} has {owner} schema version {version}, newer than this bot "
                        f"knows ({len(steps)}); upgrade the bot"
                    )
                for i in range(version, len(steps)):
                    try:
                        async with conn.transaction():
                            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"schema:{owner}")
                            if await self._version(conn, owner) > i:  # another instance ran it meanwhile
                                continue
                            log.info("migrating %s: %s to version %d", self.path, owner, i + 1)
                            await conn.execute(steps[i])
                            await conn.execute(
                                "INSERT INTO schema_versions (owner, version) VALUES ($1, $2) "
                                "ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
                                owner, i + 1,
                            )
                    except asyncpg.PostgresError as exc:
                        raise StoreError(f"{owner} migration {i + 1} failed on {self.path}: {exc}") from exc
        except (OSError, asyncpg.InterfaceError) as exc:
            raise _wrap(exc) from exc
        return len(steps)

    @staticmethod
    async def _version(conn: asyncpg.Connection, owner: str) -> int:
        v = await conn.fetchval("SELECT version FROM schema_versions WHERE owner = $1", owner)
        return int(v) if v is not None else 0

    async def tables(self) -> list[str]:
        """The tables of this database (the public schema), sorted."""
        rows = await self.fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE' ORDER BY 1"
        )
        return [str(r[0]) for r in rows]

