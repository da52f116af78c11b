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

import json
import logging
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


class TelegramQueue:
    def __init__(self, store: Any) -> None:
        self.store = store  # SQLiteStore: .db, .tx_lock

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

        async def write(db: aiosqlite.Connection) -> list[int]:
            ids = [u for u, _ in updates]
            marks = ",".join("?" * len(ids))
            known = {r[0] for r in await db.execute_fetchall(f"SELECT update_id FROM tg_inbox WHERE update_id IN ({marks})", ids)}
            fresh = [(u, body) for u, body in updates if u not in known]
            if fresh:
                await db.executemany(
                    "INSERT OR IGNORE INTO tg_inbox (update_id, body, received_at) VALUES (?, ?, ?)",
                    [(u, body, now) for u, body in fresh],
                )
            if any(u % 1000 == 0 for u, _ in fresh):
                await db.execute("DELETE FROM tg_inbox WHERE status != 'new' AND received_at < ?", (now - INBOX_MEMORY_S,))
                await db.execute(
                    "DELETE FROM tg_outbox WHERE status NOT IN ('pending', 'sending') AND created_at < ?",
                    (now - SENT_MEMORY_S,),
                )
            seen: set[int] = set()
            out = []
            for u, _ in fresh:
                if u not in seen:
                    seen.add(u)
                    out.append(u)
            return out

        return list(await self._write(write))

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
        now = time.time()
        jobs = []
        for spec in specs:
            body = json.dumps(spec.body, ensure_ascii=False)
            cur = await db.execute(
                "INSERT INTO tg_outbox (chat_id, kind, priority, body, update_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (spec.chat_id, spec.kind, spec.priority, body, update_id, now),
            )
            jobs.append(Job(int(cur.lastrowid or 0), spec.chat_id, spec.kind, spec.priority, spec.body, update_id, 0, now))
        if spent is not None:
            await db.execute("DELETE FROM tg_keyboards WHERE chat_id = ? AND message_id = ?", spent)
        if update_id is not None:
            # the raw update (the user's words) is not kept once handled: only its id, for repeats
            await db.execute("UPDATE tg_inbox SET status = ?, done_at = ?, body = '' WHERE update_id = ?", (status, now, update_id))
        return jobs

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

    async def sending(self, job_ids: Sequence[int]) -> None:
        """Committed before the requests leave: after a kill these are not sent again."""

        async def write(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "UPDATE tg_outbox SET status = 'sending', attempts = attempts + 1 WHERE id = ?", [(i,) for i in job_ids]
            )

        await self._write(write)

    async def settle(self, outcomes: Sequence[tuple[Job, str, int | None, str]]) -> list[Job]:
        """Record ``(job, status, message_id, error)`` outcomes: ``sent``, ``pending`` (try
        again), ``failed``, ``unsure``. A sent keyboard becomes the chat's live one; the one it
        replaces gets a ``retire`` job (returned)."""
        now = time.time()

        async def write(db: aiosqlite.Connection) -> list[Job]:
            retire = []
            for job, status, message_id, error in outcomes:
                # a finished message's text is not kept (the transcript has it, redacted)
                await db.execute(
                    "UPDATE tg_outbox SET status = ?, message_id = ?, last_error = ?, sent_at = ?, "
                    "body = CASE WHEN ? = 'pending' THEN body ELSE '{}' END WHERE id = ?",
                    (status, message_id, error[:300], now if status == "sent" else None, status, job.id),
                )
                if status == "sent" and message_id is not None and job.body.get("keyboard") and job.kind == "send":
                    rows = await db.execute_fetchall("SELECT message_id FROM tg_keyboards WHERE chat_id = ?", (job.chat_id,))
                    await db.execute(
                        "INSERT INTO tg_keyboards (chat_id, message_id, ts) VALUES (?, ?, ?) "
                        "ON CONFLICT(chat_id) DO UPDATE SET message_id = excluded.message_id, ts = excluded.ts",
                        (job.chat_id, message_id, now),
                    )
                    old = int(rows[0][0]) if rows else None
                    if old is not None and old != message_id:
                        body = {"message_id": old}
                        cur = await db.execute(
                            "INSERT INTO tg_outbox (chat_id, kind, priority, body, created_at) VALUES (?, 'retire', ?, ?, ?)",
                            (job.chat_id, HOUSEKEEPING, json.dumps(body), now),
                        )
                        retire.append(Job(int(cur.lastrowid or 0), job.chat_id, "retire", HOUSEKEEPING, body, None, 0, now))
            return retire

        return list(await self._write(write))

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
