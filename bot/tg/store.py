"""The Telegram door's durable state, behind one small protocol: updates in (the inbox),
messages out (the reply queue), and the message per chat that carries the live keyboard.

``TelegramStore`` is all the door (``intake``, ``door``, ``sender``) asks of a database;
``SQLiteTelegramStore`` implements it on the conversation store's SQLite connection (tables
``tg_inbox``, ``tg_outbox``, ``tg_keyboards``: ``bot/store/schema.py`` migration 4). A
PostgreSQL implementation is a class with the same methods in a module of its own, passed to
``TelegramDoor(..., tg_store=...)``; nothing else in ``bot/tg`` names the database.

The contract that makes a kill -9 lose and double nothing:

* an update is stored (``add_updates``, committed) before Telegram is told it arrived — before
  the next ``getUpdates`` offset moves, before the webhook answers 200; a repeat is ignored
  (``add_updates`` returns only the new ids);
* a turn marks its update done and writes the messages it will send **in the engine's own
  transaction** (``write_turn(tx, ...)``, called from the conversation store's ``save_turn``
  through ``bot.store.sqlite.TURN_WRITES``; ``tx`` is whatever that hook is handed — the
  implementation that matches the conversation store knows its type): either the new state,
  the transcript, the outgoing messages and "done" are all there, or none is and the update
  is processed again after the restart. ``finish`` is the same in a transaction of its own
  (updates that are not engine turns);
* a message is marked ``sending`` (``mark_then``, committed) just before its request leaves and
  its outcome recorded when Telegram answered (``settle``). ``recover`` at start returns the
  ``pending`` ones to send; a ``sending`` one may or may not have reached Telegram (the Bot
  API has no idempotency key), so it is not sent again blindly: it becomes ``unsure``. (Where
  the mark is kept is the implementation's business: SQLite keeps it in a file of its own.)

Statuses: inbox ``new`` → ``done`` | ``failed`` | ``stale`` | ``bad``; outbox ``pending`` →
``sending`` → ``sent`` | ``failed`` | ``unsure`` | ``blocked`` (a failed send goes back to
``pending`` until its attempts are used up). Handled updates lose their raw body (the user's
words) and finished messages their text: the transcript keeps them, redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiosqlite

from bot.store.sqlite import TurnCall

log = logging.getLogger(__name__)

ANSWER = 0  # a user is waiting for it
HOUSEKEEPING = 1  # edits that only tidy up (the pressed keyboard, an old keyboard), other chats
MARKS_SUFFIX = "-sending"  # the marks' file: the database's path + this
CHECKPOINT_EVERY = 256  # marks between two checkpoints of the marks' file
INBOX_MEMORY_S = 7 * 24 * 3600  # done updates are remembered this long (Telegram keeps ~24 h)
SENT_MEMORY_S = 2 * 24 * 3600  # finished outgoing rows are kept this long (for `stats`/tests)


@dataclass(frozen=True)
class Job:
    """One Bot API call to make. ``kind``: send | edit | retire."""

    id: int
    chat_id: int
    kind: str
    priority: int
    body: dict[str, Any]
    update_id: int | None = None
    attempts: int = 0
    created_at: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class JobSpec:
    """A job before it has an id."""

    chat_id: int
    kind: str
    priority: int
    body: dict[str, Any]


#: ``(job, status, message_id, error)``: what became of one request (``settle``)
Outcome = tuple[Job, str, "int | None", str]


class TelegramStore(Protocol):
    """What the Telegram door needs from a database. Every method is one transaction (or one
    statement), except ``write_turn``, which runs inside the caller's open transaction."""

    #: the exceptions that mean "the database is busy or failing" (the door waits and retries,
    #: or — the webhook — answers 500 so that Telegram sends the update again)
    errors: tuple[type[Exception], ...]

    # -- updates in --
    async def add_updates(self, updates: Sequence[tuple[int, str]]) -> list[int]:
        """Store ``(update_id, raw JSON)`` pairs (committed on return); the ids that were new,
        in order."""
    async def new_updates(self) -> list[tuple[int, str]]:
        """Updates stored but not yet done, oldest first (after a restart: handled first)."""
    async def last_update_id(self) -> int:
        """The highest update id ever stored (0: none) — where polling resumes."""
    async def update_status(self, update_id: int) -> str | None: ...

    # -- a turn's writes --
    async def write_turn(
        self, tx: Any, update_id: int | None, specs: Iterable[JobSpec], *, spent: tuple[int, int] | None = None, status: str = "done"
    ) -> list[Job]:
        """Inside the conversation store's open transaction ``tx``: queue the turn's jobs,
        mark its update ``status``, forget the live keyboard ``spent`` = (chat, message id)."""
    async def finish(
        self, update_id: int | None, specs: Iterable[JobSpec] = (), *, status: str = "done", spent: tuple[int, int] | None = None
    ) -> list[Job]:
        """``write_turn`` in a transaction of its own."""

    # -- messages out --
    async def open(self) -> None:
        """Before the first ``sending`` (the sender's start)."""
    async def close(self) -> None: ...
    async def recover(self) -> tuple[list[Job], int]:
        """At start: the jobs still to send, and how many were caught mid-send (now ``unsure``)."""
    async def mark_then(self, job_ids: Sequence[int], write: Callable[[], None]) -> None:
        """Mark the jobs ``sending`` (committed), then call ``write()`` — the request's bytes
        into the socket — with as little as the database allows in between (no ``await`` after
        the commit). After a kill a ``sending`` job is not sent again: the gap between the
        commit and the write is the only moment a kill loses a message. If the mark fails,
        ``write`` is not called and the error is raised."""
    async def settle(self, outcomes: Sequence[Outcome]) -> list[Job]:
        """Record outcomes (``sent``, ``pending`` = try again, ``failed``, ``unsure``,
        ``blocked``). A sent keyboard becomes the chat's live one; the one it replaces gets a
        ``retire`` job, returned."""
    async def drop_chat(self, chat_id: int, reason: str) -> int:
        """The chat blocked the bot: its pending jobs fail, its keyboard is forgotten."""

    async def missed_answers(self) -> list[int]:
        """Chats whose newest answer was given up (failed to send, not blocked)."""

    # -- keyboards, figures --
    async def keyboard_of(self, chat_id: int) -> int | None: ...
    async def counts(self) -> dict[str, int]:
        """Outgoing rows per status."""


# -- what both implementations read alike ------------------------------------------------------
class TelegramStoreReads:
    """The reads that are the same SQL on every engine, through the ``Database`` seam
    (``self.database``: ``fetchone``/``fetchall`` with ``?`` placeholders). Both
    implementations inherit them, so a query is written once."""

    database: Any

    async def last_update_id(self) -> int:
        row = await self.database.fetchone("SELECT MAX(update_id) FROM tg_inbox")
        return int(row[0]) if row and row[0] is not None else 0

    async def update_status(self, update_id: int) -> str | None:
        row = await self.database.fetchone("SELECT status FROM tg_inbox WHERE update_id = ?", (update_id,))
        return str(row[0]) if row else None

    async def missed_answers(self) -> list[int]:
        """Chats whose newest answer was given up (failed to send, not blocked)."""
        rows = await self.database.fetchall(
            "SELECT o.chat_id FROM tg_outbox AS o WHERE o.status = 'failed' AND o.last_error <> 'blocked' "
            "AND o.id = (SELECT MAX(id) FROM tg_outbox WHERE chat_id = o.chat_id AND kind = 'send' AND priority = ?)",
            (ANSWER,),
        )
        return [int(r[0]) for r in rows]

    async def keyboard_of(self, chat_id: int) -> int | None:
        row = await self.database.fetchone("SELECT message_id FROM tg_keyboards WHERE chat_id = ?", (chat_id,))
        return int(row[0]) if row else None

    async def counts(self) -> dict[str, int]:
        rows = await self.database.fetchall("SELECT status, COUNT(*) FROM tg_outbox GROUP BY status")
        return {str(r[0]): int(r[1]) for r in rows}


# -- the SQLite implementation ------------------------------------------------------------------
class _GroupCommit:
    """Many small writes from many coroutines, one transaction: callers that arrive while a
    batch is open join it (the sender settles hundreds of messages a second)."""

    def __init__(self, store: SQLiteTelegramStore, write: Any) -> None:
        self.store = store
        self.write = write  # async (conn, items) -> dict[key, result]; its own transaction
        self.items: list[Any] = []
        self.waiter: asyncio.Future[dict[Any, Any]] | None = None

    async def add(self, item: Any) -> dict[Any, Any]:
        self.items.append(item)
        if self.waiter is None:
            self.waiter = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().create_task(self._flush(self.waiter))
        return await asyncio.shield(self.waiter)

    async def _flush(self, waiter: asyncio.Future[dict[Any, Any]]) -> None:
        await asyncio.sleep(0)  # let the callers of this loop turn join
        async with self.store.lock:
            items, self.items, self.waiter = self.items, [], None
            try:
                result = await self.write(self.store.conn, items)
            except Exception as exc:  # every caller of the batch sees it
                waiter.set_exception(exc)
                return
        waiter.set_result(result)


class SQLiteTelegramStore(TelegramStoreReads):
    """``TelegramStore`` on the conversation store's aiosqlite connection (``database``: a
    ``bot.store.database.SQLiteDatabase`` — its ``conn``, write ``lock`` and ``path``).

    Two SQLite-only devices, kept inside this class:

    * several statements for one hand-over to aiosqlite's thread (``_in_db_thread``, which uses
      aiosqlite's private ``_execute``/``_conn``): under load each hand-over waits for the GIL,
      and that, not SQLite, is what a statement costs. A turn's writes (``write_turn``) go
      further: they are handed to the conversation store's turn (``bot.store.sqlite.TurnCall``),
      which runs them in the same hand-over as the turn's own writes — one per turn;
    * the ``sending`` marks (``mark_then``) in a small SQLite file of their own next to the
      database (``<db>-sending``, owner-only: table ``sending(job_id)``; in-memory databases
      mark in ``tg_outbox``), written through a plain ``sqlite3`` connection **on the event
      loop's thread** and followed at once by the request's ``write`` — no thread hand-over,
      no loop turn in between, so a kill finds a marked message unsent only in the
      microseconds between the commit's return and the ``send()``. Only this connection
      writes that file, so a mark never waits for a lock (the turns' transactions hold the
      main file's; waiting there delayed messages past their rate-limit slots: 429s). WAL,
      ``synchronous=NORMAL``, no automatic checkpoint (one is run after a write now and then):
      a commit survives a kill of the process (not a power cut). In ``tg_outbox`` a marked
      message stays ``pending`` until settled; a mark is removed when the outcome is known
      (before recording a "try again", after recording the rest); ``recover`` (and ``close``,
      for requests a stop cut short) turns the ``pending`` messages still marked ``unsure``.
    """

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, database: Any) -> None:
        self.database = database
        self._settles = _GroupCommit(self, self._write_settles)
        self._marks_db: sqlite3.Connection | None = None
        self._marked = 0  # marks since the last checkpoint

    @property
    def conn(self) -> aiosqlite.Connection:
        return self.database.conn  # type: ignore[no-any-return]

    @property
    def lock(self) -> asyncio.Lock:
        return self.database.lock  # type: ignore[no-any-return]

    async def _in_db_thread(self, conn: aiosqlite.Connection, fn: Any, *args: Any) -> Any:
        """Run ``fn(sqlite3_connection, *args)`` on aiosqlite's thread: one hand-over."""
        return await conn._execute(fn, conn._conn, *args)

    async def _write(self, fn: Any, *args: Any) -> Any:
        """``fn(sqlite3_connection, *args)`` in one transaction of its own."""
        async with self.lock:
            return await self._in_db_thread(self.conn, _in_transaction, fn, *args)

    # -- updates in --------------------------------------------------------------
    async def add_updates(self, updates: Sequence[tuple[int, str]]) -> list[int]:
        if not updates:
            return []
        now = time.time()
        async with self.lock:  # one statement: its own transaction
            rows = await self.conn.execute_fetchall(
                "INSERT OR IGNORE INTO tg_inbox (update_id, body, received_at) "
                "SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), ? FROM json_each(?) AS j "
                "RETURNING update_id",
                (now, json.dumps([[u, body] for u, body in updates], ensure_ascii=False)),
            )
            fresh = {int(r[0]) for r in rows}
            if any(u % 1000 == 0 for u in fresh):
                await self.conn.execute("DELETE FROM tg_inbox WHERE status != 'new' AND received_at < ?", (now - INBOX_MEMORY_S,))
                await self.conn.execute(
                    "DELETE FROM tg_outbox WHERE status NOT IN ('pending', 'sending') AND created_at < ?",
                    (now - SENT_MEMORY_S,),
                )
        out: list[int] = []
        for u, _ in updates:
            if u in fresh:
                fresh.discard(u)
                out.append(u)
        return out

    async def new_updates(self) -> list[tuple[int, str]]:
        rows = await self.conn.execute_fetchall("SELECT update_id, body FROM tg_inbox WHERE status = 'new' ORDER BY update_id")
        return [(int(r[0]), str(r[1])) for r in rows]

    # -- a turn's writes --------------------------------------------------------------
    async def write_turn(
        self, tx: Any, update_id: int | None, specs: Iterable[JobSpec], *, spent: tuple[int, int] | None = None, status: str = "done"
    ) -> list[Job]:
        specs = list(specs)
        now = time.time()
        rows = _rows(specs)
        if isinstance(tx, TurnCall):  # the conversation store's turn: the same hand-over
            ids = await tx.call(_write_turn, rows, update_id, now, spent, status)
        else:  # inside a transaction the caller opened on this connection
            ids = await self._in_db_thread(self.conn, _write_turn, rows, update_id, now, spent, status)
        return _jobs(ids, specs, update_id, now)

    async def finish(
        self, update_id: int | None, specs: Iterable[JobSpec] = (), *, status: str = "done", spent: tuple[int, int] | None = None
    ) -> list[Job]:
        specs = list(specs)
        now = time.time()
        ids = await self._write(_write_turn, _rows(specs), update_id, now, spent, status)
        return _jobs(ids, specs, update_id, now)

    # -- messages out --------------------------------------------------------------
    async def open(self) -> None:
        path = getattr(self.database, "path", ":memory:")
        if self._marks_db is not None or path == ":memory:":
            return
        self._marks_db = _open_marks(path + MARKS_SUFFIX)

    async def close(self) -> None:
        if self._marks_db is None:
            return
        try:  # requests a stop cut short: "unsure" now (a copy to PostgreSQL must not send them)
            await self._unsure_marked()
        except sqlite3.Error as exc:
            log.warning("could not record the messages a stop cut short (the next start does): %s", exc)
        db, self._marks_db = self._marks_db, None
        db.close()

    async def recover(self) -> tuple[list[Job], int]:
        unsure = await self._unsure_marked()
        rows = await self.conn.execute_fetchall(
            "SELECT id, chat_id, kind, priority, body, update_id, attempts, created_at FROM tg_outbox WHERE status = 'pending' ORDER BY id"
        )
        jobs = [Job(int(r[0]), int(r[1]), str(r[2]), int(r[3]), json.loads(r[4]), r[5], int(r[6]), float(r[7])) for r in rows]
        return jobs, unsure

    async def _unsure_marked(self) -> int:
        """Messages marked and not settled (a ``sending`` status too: in-memory marks, older
        versions) become ``unsure``; the marks are then forgotten."""
        marked = [int(r[0]) for r in self._marks_db.execute("SELECT job_id FROM sending")] if self._marks_db else []
        unsure = int(await self._write(_mark_unsure, marked))
        if marked and self._marks_db is not None:
            self._marks_db.execute("DELETE FROM sending")
        return unsure

    async def mark_then(self, job_ids: Sequence[int], write: Callable[[], None]) -> None:
        ids = [int(i) for i in job_ids]
        db = self._marks_db
        if db is None:  # an in-memory database: nothing survives a kill anyway
            async with self.lock:
                await self.conn.executescript(
                    f"UPDATE tg_outbox SET status = 'sending' WHERE id IN ({','.join(map(str, ids))})"
                )
            write()
            return
        db.executemany("INSERT OR IGNORE INTO sending (job_id) VALUES (?)", [(i,) for i in ids])  # committed
        write()  # nothing in between: no await, no other thread
        self._marked += 1
        if self._marked >= CHECKPOINT_EVERY:
            self._marked = 0
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _unmark(self, job_ids: Sequence[int]) -> None:
        if self._marks_db is not None and job_ids:
            self._marks_db.executemany("DELETE FROM sending WHERE job_id = ?", [(int(i),) for i in job_ids])

    async def settle(self, outcomes: Sequence[Outcome]) -> list[Job]:
        # "try again": it did not arrive, so a restart may send it (unmarked first); the other
        # outcomes are final once recorded (then the mark is no longer needed)
        self._unmark([job.id for job, status, *_ in outcomes if status == "pending"])
        done = await self._settles.add(list(outcomes))
        self._unmark([job.id for job, status, *_ in outcomes if status != "pending"])
        return [r for job, *_ in outcomes for r in done.get(job.id, ())]

    async def _write_settles(self, conn: aiosqlite.Connection, items: list[list[Outcome]]) -> dict[Any, Any]:
        outcomes = [o for batch in items for o in batch]
        rows = [(job.id, job.chat_id, job.kind, bool(job.body.get("keyboard")), status, mid, error[:300]) for job, status, mid, error in outcomes]
        made = await self._in_db_thread(conn, _in_transaction, _write_settles, rows, time.time())
        retire: dict[int, list[Job]] = {}
        for owner, rid, chat, body, now in made:
            retire.setdefault(owner, []).append(Job(rid, chat, "retire", HOUSEKEEPING, body, None, 0, now))
        return retire

    async def drop_chat(self, chat_id: int, reason: str) -> int:
        return int(await self._write(_drop_chat, chat_id, reason))



def _rows(specs: Sequence[JobSpec]) -> list[tuple[int, str, int, str]]:
    return [(sp.chat_id, sp.kind, sp.priority, json.dumps(sp.body, ensure_ascii=False)) for sp in specs]


def _jobs(ids: Sequence[int], specs: Sequence[JobSpec], update_id: int | None, now: float) -> list[Job]:
    return [Job(i, sp.chat_id, sp.kind, sp.priority, sp.body, update_id, 0, now) for i, sp in zip(ids, specs, strict=True)]


def unsure_after_a_crash(db_path: str | os.PathLike[str]) -> int:
    """What the next start would do with a crash's leftovers, without starting the bot: the
    messages still marked in ``<db>-sending`` (caught mid-send by a kill) become ``unsure`` in
    the database, and the marks are forgotten. ``migrate-db`` runs it before copying, so the
    copy never holds them as ``pending`` (PostgreSQL would send them again). Returns how many;
    0 when there is no marks file. Run it only while no bot uses the database."""
    path = os.fspath(db_path)
    if not os.path.isfile(path + MARKS_SUFFIX):
        return 0
    marks = _open_marks(path + MARKS_SUFFIX)
    try:
        marked = [int(r[0]) for r in marks.execute("SELECT job_id FROM sending")]
        if not marked:
            return 0
        con = sqlite3.connect(path, timeout=5.0)
        try:
            with con:
                n = _mark_unsure(con, marked)
        finally:
            con.close()
        marks.execute("DELETE FROM sending")
        return n
    finally:
        marks.close()


def _open_marks(path: str) -> sqlite3.Connection:
    """The marks' file (owner-only, like the database), on this — the event loop's — thread."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    db = sqlite3.connect(path, timeout=0, isolation_level=None)  # the only writer: never waits
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA wal_autocheckpoint = 0")  # not between a mark and its write: mark_then does it after
        db.execute("CREATE TABLE IF NOT EXISTS sending (job_id INTEGER PRIMARY KEY)")
    except BaseException:
        db.close()
        raise
    return db


# -- run on aiosqlite's thread (one hand-over each) ---------------------------------------------
def _in_transaction(con: sqlite3.Connection, fn: Any, *args: Any) -> Any:
    con.execute("BEGIN IMMEDIATE")
    try:
        result = fn(con, *args)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return result


def _write_turn(
    con: sqlite3.Connection, rows: list[tuple[int, str, int, str]], update_id: int | None, now: float, spent: tuple[int, int] | None, status: str
) -> list[int]:
    ids = []
    for chat_id, kind, priority, body in rows:
        cur = con.execute(
            "INSERT INTO tg_outbox (chat_id, kind, priority, body, update_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (chat_id, kind, priority, body, update_id, now),
        )
        ids.append(int(cur.lastrowid or 0))
    if spent is not None:
        con.execute("DELETE FROM tg_keyboards WHERE chat_id = ? AND message_id = ?", spent)
    if update_id is not None:
        # the raw update (the user's words) is not kept once handled: only its id, for repeats
        con.execute("UPDATE tg_inbox SET status = ?, done_at = ?, body = '' WHERE update_id = ?", (status, now, update_id))
    return ids


def _mark_unsure(con: sqlite3.Connection, marked: list[int]) -> int:
    cur = con.execute(
        "UPDATE tg_outbox SET status = 'unsure', last_error = 'stopped while sending', body = '{}' "
        "WHERE status = 'sending' OR (status = 'pending' AND id IN (SELECT value FROM json_each(?)))",
        (json.dumps(marked),),
    )
    return int(cur.rowcount or 0)


def _drop_chat(con: sqlite3.Connection, chat_id: int, reason: str) -> int:
    cur = con.execute(
        "UPDATE tg_outbox SET status = 'failed', last_error = ?, body = '{}' WHERE chat_id = ? AND status = 'pending'",
        (reason, chat_id),
    )
    con.execute("DELETE FROM tg_keyboards WHERE chat_id = ?", (chat_id,))
    return int(cur.rowcount or 0)


def _write_settles(
    con: sqlite3.Connection, rows: list[tuple[int, int, str, bool, str, int | None, str]], now: float
) -> list[tuple[int, int, int, dict[str, Any], float]]:
    """Outcomes (a finished message's text is not kept — the transcript has it, redacted); a
    sent keyboard becomes the chat's live one and the one it replaces gets a retire job
    (returned as (owner job, id, chat, body, created))."""
    made = []
    for job_id, chat_id, kind, has_keyboard, status, mid, error in rows:
        con.execute(
            "UPDATE tg_outbox SET status = ?, message_id = ?, last_error = ?, sent_at = ?, attempts = attempts + 1, "
            "body = CASE WHEN ? = 'pending' THEN body ELSE '{}' END WHERE id = ?",
            (status, mid, error, now if status == "sent" else None, status, job_id),
        )
        if status != "sent" or mid is None or kind != "send" or not has_keyboard:
            continue
        old = con.execute("SELECT message_id FROM tg_keyboards WHERE chat_id = ?", (chat_id,)).fetchone()
        con.execute(
            "INSERT INTO tg_keyboards (chat_id, message_id, ts) VALUES (?, ?, ?) "
            "ON CONFLICT(chat_id) DO UPDATE SET message_id = excluded.message_id, ts = excluded.ts",
            (chat_id, mid, now),
        )
        if old is not None and int(old[0]) != mid:
            body = {"message_id": int(old[0])}
            cur = con.execute(
                "INSERT INTO tg_outbox (chat_id, kind, priority, body, created_at) VALUES (?, 'retire', ?, ?, ?)",
                (chat_id, HOUSEKEEPING, json.dumps(body), now),
            )
            made.append((job_id, int(cur.lastrowid or 0), chat_id, body, now))
    return made
