"""The Telegram door's durable queues in SQLite: updates in (``tg_inbox``), messages out
(``tg_outbox``), and the message per chat that carries the live keyboard (``tg_keyboards``).

The contract that makes a kill -9 lose and double nothing:

* an update is stored (``add_updates``, committed) before Telegram is told it arrived — before
  the next ``getUpdates`` offset moves, before the webhook answers 200; a repeat is ignored;
* a turn marks its update done and writes the messages it will send **in the engine's own
  transaction** (``write_turn``, called from ``SQLiteStore.save_turn`` through
  ``TURN_WRITES``): either the new state, the transcript, the outgoing messages and "done"
  are all there, or none is and the update is processed again after the restart;
* a message is marked ``sending`` (committed) just before its request leaves and ``sent``
  when Telegram answered. After a restart ``pending`` ones go out; a ``sending`` one may or may
  not have reached Telegram (the Bot API has no idempotency key), so it is not sent again
  blindly: it is marked ``unsure`` and logged.

This class only reads and writes rows; ``bot.tg.sender`` sends them. It shares the store's
connection and takes ``store.tx_lock`` for every write (one connection, one transaction at a
time).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

ANSWER = 0  # a user is waiting for it
HOUSEKEEPING = 1  # edits that only tidy up (the pressed keyboard, an old keyboard), other chats
INBOX_MEMORY_S = 7 * 24 * 3600  # done updates are remembered this long (Telegram keeps ~24 h)
SENT_MEMORY_S = 2 * 24 * 3600  # finished outgoing rows are kept this long (for `stats`/tests)


async def in_db_thread(db: aiosqlite.Connection, fn: Any, *args: Any) -> Any:
    """Run ``fn(sqlite3_connection, *args)`` on aiosqlite's own thread: several statements for
    one hand-over between threads (each hand-over waits for the GIL; under load that, not
    SQLite, is what a statement costs). Uses aiosqlite's thread hand-over (``_execute``)."""
    return await db._execute(fn, db._conn, *args)


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


class _GroupCommit:
    """Many small writes from many coroutines, one transaction: callers that arrive while a
    batch is open join it (the sender marks and settles hundreds of messages a second)."""

    def __init__(self, queue: TelegramQueue, write: Any, *, transaction: bool = True) -> None:
        self.queue = queue
        self.write = write  # async (db, items) -> dict[key, result]
        self.transaction = transaction  # False: the write is one statement (its own transaction)
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
        async with self.queue.store.tx_lock:
            items, self.items, self.waiter = self.items, [], None
            db = self.queue.db
            try:
                if not self.transaction:
                    result = await self.write(db, items)
                else:
                    await db.execute("BEGIN IMMEDIATE")
                    try:
                        result = await self.write(db, items)
                        await db.execute("COMMIT")
                    except BaseException:
                        await db.execute("ROLLBACK")
                        raise
            except Exception as exc:  # every caller of the batch sees it
                waiter.set_exception(exc)
                return
        waiter.set_result(result)


class TelegramQueue:
    def __init__(self, store: Any) -> None:
        self.store = store  # SQLiteStore: .db, .tx_lock
        self._marks = _GroupCommit(self, self._write_marks, transaction=False)
        self._settles = _GroupCommit(self, self._write_settles, transaction=False)
        self._marks_db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        return self.store.db  # type: ignore[no-any-return]

    async def _write(self, fn: Any) -> Any:
        db = self.db
        async with self.store.tx_lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = await fn(db)
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        return result

    # -- updates in --------------------------------------------------------------
    async def add_updates(self, updates: Sequence[tuple[int, str]]) -> list[int]:
        """Store ``(update_id, raw JSON)`` pairs; returns the ids that were new (in order)."""
        if not updates:
            return []
        now = time.time()

        async with self.store.tx_lock:  # one statement: its own transaction
            rows = await self.db.execute_fetchall(
                "INSERT OR IGNORE INTO tg_inbox (update_id, body, received_at) "
                "SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), ? FROM json_each(?) AS j "
                "RETURNING update_id",
                (now, json.dumps([[u, body] for u, body in updates], ensure_ascii=False)),
            )
            fresh = {int(r[0]) for r in rows}
            if any(u % 1000 == 0 for u in fresh):
                await self.db.execute("DELETE FROM tg_inbox WHERE status != 'new' AND received_at < ?", (now - INBOX_MEMORY_S,))
                await self.db.execute(
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
        """Updates stored but not yet done (after a restart: the ones to process first)."""
        rows = await self.db.execute_fetchall("SELECT update_id, body FROM tg_inbox WHERE status = 'new' ORDER BY update_id")
        return [(int(r[0]), str(r[1])) for r in rows]

    async def last_update_id(self) -> int:
        rows = await self.db.execute_fetchall("SELECT MAX(update_id) FROM tg_inbox")
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    async def update_status(self, update_id: int) -> str | None:
        rows = await self.db.execute_fetchall("SELECT status FROM tg_inbox WHERE update_id = ?", (update_id,))
        return str(rows[0][0]) if rows else None

    # -- a turn's writes (inside the engine's transaction) ------------------------------
    async def write_turn(
        self, db: aiosqlite.Connection, update_id: int | None, specs: Iterable[JobSpec], *, spent: tuple[int, int] | None = None, status: str = "done"
    ) -> list[Job]:
        """Insert the turn's jobs and mark its update done. Call inside an open transaction.
        ``spent``: (chat, message id) whose keyboard the turn used up (a press)."""
        specs = list(specs)
        now = time.time()
        rows = [(sp.chat_id, sp.kind, sp.priority, json.dumps(sp.body, ensure_ascii=False)) for sp in specs]
        ids = await in_db_thread(db, _write_turn, rows, update_id, now, spent, status)
        return [Job(i, sp.chat_id, sp.kind, sp.priority, sp.body, update_id, 0, now) for i, sp in zip(ids, specs, strict=True)]

    async def finish(self, update_id: int | None, specs: Iterable[JobSpec] = (), *, status: str = "done", spent: tuple[int, int] | None = None) -> list[Job]:
        """``write_turn`` in a transaction of its own (updates that are not engine turns)."""
        specs = list(specs)

        async def write(db: aiosqlite.Connection) -> list[Job]:
            return await self.write_turn(db, update_id, specs, spent=spent, status=status)

        return list(await self._write(write))

    # -- messages out --------------------------------------------------------------
    async def recover(self) -> tuple[list[Job], int]:
        """At start: the jobs still to send, and how many were caught mid-send (now ``unsure``)."""
        unsure = 0

        async def write(db: aiosqlite.Connection) -> int:
            cur = await db.execute(
                "UPDATE tg_outbox SET status = 'unsure', last_error = 'stopped while sending', body = '{}' WHERE status = 'sending'"
            )
            return int(cur.rowcount or 0)

        unsure = int(await self._write(write))
        rows = await self.db.execute_fetchall(
            "SELECT id, chat_id, kind, priority, body, update_id, attempts, created_at FROM tg_outbox WHERE status = 'pending' ORDER BY id"
        )
        jobs = [Job(int(r[0]), int(r[1]), str(r[2]), int(r[3]), json.loads(r[4]), r[5], int(r[6]), float(r[7])) for r in rows]
        return jobs, unsure

    async def open_marks(self) -> None:
        """A connection of its own for the "sending" marks: a mark sits between a message's
        rate-limit slot and its request, so it must not queue behind the turns' transactions
        on the shared connection (a late mark bunches requests past Telegram's limits). One
        UPDATE in autocommit; SQLite's busy timeout orders it with the other writers."""
        path = getattr(self.store, "path", ":memory:")
        if self._marks_db is not None or path == ":memory:":
            return
        db = await aiosqlite.connect(path, timeout=5.0, isolation_level=None)
        await db.execute("PRAGMA busy_timeout = 5000")
        self._marks_db = db

    async def close(self) -> None:
        if self._marks_db is not None:
            db, self._marks_db = self._marks_db, None
            await db.close()

    async def sending(self, job_ids: Sequence[int]) -> None:
        """Committed before the requests leave: after a kill these are not sent again."""
        if self._marks_db is not None:
            # BEGIN IMMEDIATE: an autocommit UPDATE reads first, and upgrading that read to a
            # write after another connection committed fails at once ("database is locked")
            ids = ",".join(str(int(i)) for i in job_ids)  # integers only: safe to inline
            await self._marks_db.executescript(
                f"BEGIN IMMEDIATE; UPDATE tg_outbox SET status = 'sending', attempts = attempts + 1 WHERE id IN ({ids}); COMMIT;"
            )
            return
        await self._marks.add(list(job_ids))

    @staticmethod
    async def _write_marks(db: aiosqlite.Connection, items: list[list[int]]) -> dict[Any, Any]:
        ids = [i for batch in items for i in batch]
        await db.execute(
            "UPDATE tg_outbox SET status = 'sending', attempts = attempts + 1 WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        )
        return {}

    async def settle(self, outcomes: Sequence[tuple[Job, str, int | None, str]]) -> list[Job]:
        """Record ``(job, status, message_id, error)`` outcomes: ``sent``, ``pending`` (try
        again), ``failed``, ``unsure``. A sent keyboard becomes the chat's live one; the one it
        replaces gets a ``retire`` job (returned)."""
        done = await self._settles.add(list(outcomes))
        return [r for job, *_ in outcomes for r in done.get(job.id, ())]

    @staticmethod
    async def _write_settles(db: aiosqlite.Connection, items: list[list[tuple[Job, str, int | None, str]]]) -> dict[Any, Any]:
        outcomes = [o for batch in items for o in batch]
        rows = [(job.id, job.chat_id, job.kind, bool(job.body.get("keyboard")), status, mid, error[:300]) for job, status, mid, error in outcomes]
        made = await in_db_thread(db, _write_settles, rows, time.time())
        retire: dict[int, list[Job]] = {}
        for owner, rid, chat, body, now in made:
            retire.setdefault(owner, []).append(Job(rid, chat, "retire", HOUSEKEEPING, body, None, 0, now))
        return retire

    async def drop_chat(self, chat_id: int, reason: str) -> int:
        """The chat blocked the bot: its pending jobs will never go out."""

        async def write(db: aiosqlite.Connection) -> int:
            cur = await db.execute(
                "UPDATE tg_outbox SET status = 'failed', last_error = ?, body = '{}' WHERE chat_id = ? AND status = 'pending'",
                (reason, chat_id),
            )
            await db.execute("DELETE FROM tg_keyboards WHERE chat_id = ?", (chat_id,))
            return int(cur.rowcount or 0)

        return int(await self._write(write))

    async def keyboard_of(self, chat_id: int) -> int | None:
        rows = await self.db.execute_fetchall("SELECT message_id FROM tg_keyboards WHERE chat_id = ?", (chat_id,))
        return int(rows[0][0]) if rows else None

    async def counts(self) -> dict[str, int]:
        rows = await self.db.execute_fetchall("SELECT status, COUNT(*) FROM tg_outbox GROUP BY status")
        return {str(r[0]): int(r[1]) for r in rows}


# -- run on aiosqlite's thread (one hand-over each) ---------------------------------------------
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


def _write_settles(
    con: sqlite3.Connection, rows: list[tuple[int, int, str, bool, str, int | None, str]], now: float
) -> list[tuple[int, int, int, dict[str, Any], float]]:
    """Outcomes in one transaction: status (a finished message's text is not kept — the
    transcript has it, redacted); a sent keyboard becomes the chat's live one and the one it
    replaces gets a retire job (returned as (owner job, id, chat, body, created))."""
    made = []
    con.execute("BEGIN IMMEDIATE")
    try:
        for job_id, chat_id, kind, has_keyboard, status, mid, error in rows:
            con.execute(
                "UPDATE tg_outbox SET status = ?, message_id = ?, last_error = ?, sent_at = ?, "
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
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return made
