"""Quote requests and their outbox (the quote feature's tables: bot/escalation/schema.py), on
the ``Database`` seam — one SQL text for SQLite and PostgreSQL.

Behind the engine's seam, next to the conversation store. A quote and its outbox rows are
written in ONE transaction before the user is told "sent"; the outbox worker then claims
rows (a lease naming the owning process), delivers them and records what the server said.

On SQLite this store uses its own aiosqlite connection to the same file (WAL lets both
work): the engine's connection runs one explicit transaction per turn, and two coroutines
must never interleave BEGIN/COMMIT on one connection (``QuoteStore.beside`` opens it; an
in-memory database shares the engine's). On PostgreSQL it shares the pool, and ``claim``
takes due rows with ``FOR UPDATE SKIP LOCKED`` (``Database.skip_locked``): the workers of
several instances never claim one row twice, so one request is never mailed twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Settings
from bot.store import SQLiteStore, is_postgres
from bot.store.database import Database, Transaction

if TYPE_CHECKING:
    from bot.store.pgstore import PostgresStore

from . import schema
from .ports import OutboxRow, QuoteFields, QuoteRecord, QuoteStatus, TranscriptLine
from .reference import new_reference
from .rowmap import OUTBOX_COLUMNS, fields_from_json, fields_to_json, outbox_row, owner_is_dead

log = logging.getLogger(__name__)

TRANSCRIPT_LINES = 300  # at most this many lines of the current case go with a request
TRANSCRIPT_LINE_CHARS = 2000

async def _case_start(db: Transaction, conversation_id: str) -> float:
    """Where the current case's transcript starts: after the turn that sent the conversation's
    previous request (its transcript's last line, then the one turn after it — all lines of a
    turn share one timestamp). Earlier requests, with their names and e-mails, never go again."""
    row = await db.fetchone(
        "SELECT transcript_json FROM quotes WHERE conversation_id = ? ORDER BY created_at DESC LIMIT 1",
        (conversation_id,),
    )
    if row is None:
        return float("-inf")
    try:
        lines = json.loads(row[0] or "[]")
        last = float(lines[-1]["ts"]) if lines else float("-inf")
    except (ValueError, TypeError, KeyError, IndexError):
        last = float("-inf")
    sending = await db.fetchone(
        "SELECT MIN(ts) FROM messages WHERE conversation_id = ? AND ts > ?", (conversation_id, last)
    )
    return float(sending[0]) if sending and sending[0] is not None else last


class QuoteStore:
    def __init__(
        self,
        database: Database,
        path: str,
        closer: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.database = database
        self.path = path
        self._closer = closer

    @classmethod
    async def open(cls, path: str | Path, settings: Settings | None = None) -> QuoteStore:
        """Own connection to the SQLite file, or own pool on a ``postgresql://`` URL;
        the quote feature's migrations run as for the main store."""
        if is_postgres(path):
            # imported here: asyncpg only for a bot on PostgreSQL (start-up cost)
            from bot.store.postgres import PostgresDatabase

            s = settings or Settings()
            pg = await PostgresDatabase.open(str(path), pool_size=s.db_pool_size,
                                             connect_timeout=s.db_connect_timeout,
                                             command_timeout=s.db_command_timeout)
            try:
                await pg.migrate(schema.OWNER, schema.BY_DIALECT)
            except BaseException:
                await pg.close()
                raise
            return cls(pg, pg.path, pg.close)
        base = await SQLiteStore.open(path)
        try:
            await base.database.migrate(schema.OWNER, schema.BY_DIALECT)
        except BaseException:
            await base.close()
            raise
        return cls(base.database, base.path, base.close)

    @classmethod
    def sharing(cls, store: SQLiteStore | PostgresStore) -> QuoteStore:
        """Use the engine's own connection (in-memory databases) or pool (PostgreSQL)."""
        return cls(store.database, store.path, None)

    @classmethod
    async def beside(cls, store: SQLiteStore | PostgresStore) -> QuoteStore:
        """A quote store next to the conversation store: a connection of its own on a SQLite
        file (its transactions never interleave with a turn's); the same pool on PostgreSQL,
        the same connection for an in-memory database. ``close()`` it either way."""
        if store.database.dialect != "sqlite" or store.path == ":memory:":
            return cls.sharing(store)
        return await cls.open(store.path)

    async def close(self) -> None:
        if self._closer is not None:
            closer, self._closer = self._closer, None
            await closer()

    async def _fetchall(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        return await self.database.fetchall(sql, tuple(args))

    async def _exec(self, sql: str, args: Iterable[Any] = ()) -> int:
        return await self.database.execute(sql, tuple(args))

    # -- creating ------------------------------------------------------------------
    async def create_quote(
        self,
        conversation_id: str,
        fields: QuoteFields,
        *,
        draft_id: str = "",
        channels: Sequence[str] = ("email",),
        now: float | None = None,
        transcript_limit: int = TRANSCRIPT_LINES,
    ) -> tuple[str, bool]:
        """Store a request, its outbox rows and its photos in one transaction.

        Returns (reference, created). The same (conversation, draft) twice returns the first
        reference and creates nothing: a repeated "send" never makes a second request.
        """
        now = time.time() if now is None else now
        async with self.database.transaction() as db:
            if draft_id:
                row = await db.fetchone(
                    "SELECT ref FROM quotes WHERE conversation_id = ? AND draft_id = ?",
                    (conversation_id, draft_id),
                )
                if row is not None:
                    return str(row[0]), False
            since = await _case_start(db, conversation_id)
            rows = await db.fetchall(
                "SELECT ts, direction, kind, text FROM messages WHERE conversation_id = ? AND ts > ? "
                "ORDER BY id DESC LIMIT ?",
                (conversation_id, since, transcript_limit),
            )
            lines = [
                TranscriptLine(float(r[0]), r[1], r[2], str(r[3])[:TRANSCRIPT_LINE_CHARS])
                for r in reversed(rows)
            ]
            transcript = json.dumps([asdict(line) for line in lines], ensure_ascii=False)
            for _ in range(50):
                ref = new_reference()
                added = await db.execute(
                    "INSERT INTO quotes (ref, conversation_id, draft_id, created_at, "
                    "damage, device, "
                    "fields_json, transcript_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (ref) DO NOTHING",
                    (
                        ref,
                        conversation_id,
                        draft_id,
                        now,
                        fields.damage,
                        fields.device[:200],
                        fields_to_json(fields),
                        transcript,
                    ),
                )
                if added == 1:
                    break
                # the reference exists already: draw another
            else:  # pragma: no cover - 28 million references
                raise RuntimeError("no free quote reference")
            await db.executemany(
                "INSERT INTO outbox (ref, channel, next_attempt_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(ref, ch, now, now, now) for ch in channels],
            )
            if fields.photos:
                await db.executemany(
                    "INSERT INTO attachments (ref, position, file_id) VALUES (?, ?, ?)",
                    [(ref, i, fid) for i, fid in enumerate(fields.photos, 1)],
                )
        return ref, True

    # -- reading -------------------------------------------------------------------
    async def quote(self, ref: str) -> QuoteRecord | None:
        rows = await self._fetchall(
            "SELECT ref, conversation_id, created_at, fields_json, transcript_json "
            "FROM quotes WHERE ref = ?",
            (ref,),
        )
        if not rows:
            return None
        r = rows[0]
        lines = tuple(
            TranscriptLine(float(x["ts"]), x["direction"], x["kind"], x["text"])
            for x in json.loads(r[4] or "[]")
        )
        return QuoteRecord(r[0], r[1], float(r[2]), fields_from_json(r[3]), lines)

    async def outbox(
        self, statuses: Sequence[str] | None = None, ref: str | None = None
    ) -> list[OutboxRow]:
        sql = f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE 1 = 1"
        args: list[Any] = []
        if statuses:
            sql += f" AND status IN ({', '.join('?' for _ in statuses)})"
            args += list(statuses)
        if ref:
            sql += " AND ref = ?"
            args.append(ref)
        sql += " ORDER BY id"
        return [outbox_row(r) for r in await self._fetchall(sql, args)]

    async def statuses_for(self, conversation_id: str, limit: int = 3) -> list[QuoteStatus]:
        rows = await self._fetchall(
            "SELECT q.ref, q.created_at, o.status, o.delivered_at, o.alert_state FROM quotes q "
            "JOIN outbox o ON o.ref = q.ref AND o.channel = 'email' "
            "WHERE q.conversation_id = ? ORDER BY q.created_at DESC LIMIT ?",
            (conversation_id, limit),
        )
        out = []
        for ref, created, status, delivered_at, alert_state in rows:
            shown = {"delivered": "delivered", "failed": "failed"}.get(status, "queued")
            out.append(QuoteStatus(ref, float(created), shown, delivered_at, alert_state == "sent"))
        return out

    async def latest_state(self, conversation_id: str) -> str:
        """Where the conversation's newest request stands, for the agents' case card:
        failed (a channel gave up), delivered (every channel), sent (on its way), "" (none)."""
        rows = await self._fetchall(
            "SELECT o.status FROM quotes q JOIN outbox o ON o.ref = q.ref WHERE q.conversation_id = ? "
            "AND q.created_at = (SELECT MAX(created_at) FROM quotes WHERE conversation_id = ?)",
            (conversation_id, conversation_id),
        )
        statuses = [str(r[0]) for r in rows]
        if not statuses:
            return ""
        if "failed" in statuses:
            return "failed"
        if all(s == "delivered" for s in statuses):
            return "delivered"
        return "sent"

    async def changes_since(self, since: float) -> list[tuple[str, str, float]]:
        """(conversation id, status, when) of every outbox row changed after ``since``, oldest first."""
        rows = await self._fetchall(
            "SELECT q.conversation_id, o.status, o.updated_at FROM outbox o JOIN quotes q ON q.ref = o.ref "
            "WHERE o.updated_at > ? ORDER BY o.updated_at",
            (since,),
        )
        return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]

    async def counts(self) -> dict[str, int]:
        rows = await self._fetchall("SELECT status, COUNT(*) FROM outbox GROUP BY status")
        return {str(s): int(n) for s, n in rows}

    async def next_due(self) -> float | None:
        """When the next row becomes due (pending) or a lease runs out (sending)."""
        rows = await self._fetchall(
            "SELECT MIN(t) FROM (SELECT MIN(next_attempt_at) AS t FROM outbox "
            "WHERE status = 'pending' "
            "UNION ALL SELECT MIN(lease_until) FROM outbox WHERE status = 'sending') AS due"
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    # -- the worker's side ------------------------------------------------------------
    async def claim(
        self,
        now: float,
        owner: str,
        lease: float,
        limit: int,
        ref: str | None = None,
        channel: str | None = None,
    ) -> list[OutboxRow]:
        """Take due rows (or rows whose lease ran out) for ``owner``; counts one attempt each."""
        async with self.database.transaction() as db:
            sql = (
                "SELECT id FROM outbox WHERE ((status = 'pending' AND next_attempt_at <= ?) "
                "OR (status = 'sending' AND lease_until <= ?))"
            )
            args: list[Any] = [now, now]
            if ref:
                sql += " AND ref = ?"
                args.append(ref)
            if channel:
                sql += " AND channel = ?"
                args.append(channel)
            sql += " ORDER BY next_attempt_at, id LIMIT ?" + self.database.skip_locked
            args.append(limit)
            ids = [int(r[0]) for r in await db.fetchall(sql, args)]
            if not ids:
                return []
            marks = ", ".join("?" for _ in ids)
            await db.execute(
                "UPDATE outbox SET status = 'sending', owner = ?, lease_until = ?, "
                "attempts = attempts + 1, "
                f"updated_at = ? WHERE id IN ({marks})",
                (owner, now + lease, now, *ids),
            )
            rows = await db.fetchall(
                f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id IN ({marks}) ORDER BY "
                "next_attempt_at, id",
                ids,
            )
            return [outbox_row(r) for r in rows]

    async def reclaim_dead(self, now: float) -> int:
        """Rows leased by a process of this host that died (SIGKILL, crash): due again now."""
        rows = await self._fetchall("SELECT id, owner FROM outbox WHERE status = 'sending'")
        dead = [int(i) for i, owner in rows if owner_is_dead(owner)]
        if not dead:
            return 0
        marks = ", ".join("?" for _ in dead)
        await self._exec(
            f"UPDATE outbox SET status = 'pending', owner = '', lease_until = 0, "
            f"next_attempt_at = ?, updated_at = ? WHERE status = 'sending' AND id IN ({marks})",
            (now, now, *dead),
        )
        return len(dead)

    async def set_message_id(self, row_id: int, message_id: str) -> str:
        """Fix the row's Message-ID once (before the first attempt); return the stored one."""
        async with self.database.transaction() as db:
            await db.execute(
                "UPDATE outbox SET message_id = ? WHERE id = ? AND message_id = ''",
                (message_id, row_id),
            )
            row = await db.fetchone("SELECT message_id FROM outbox WHERE id = ?", (row_id,))
        return str(row[0]) if row else message_id

    async def mark_delivered(self, row_id: int, owner: str, accepted: str, now: float) -> bool:
        n = await self._exec(
            "UPDATE outbox SET status = 'delivered', accepted = ?, delivered_at = ?, owner = '', "
            "lease_until = 0, last_error = '', error_kind = '', updated_at = ? "
            "WHERE id = ? AND owner = ? AND status = 'sending'",
            (accepted[:1000], now, now, row_id, owner),
        )
        return n == 1

    async def mark_retry(
        self, row_id: int, owner: str, error: str, kind: str, next_at: float, now: float
    ) -> bool:
        n = await self._exec(
            "UPDATE outbox SET status = 'pending', last_error = ?, error_kind = ?, "
            "next_attempt_at = ?, "
            "owner = '', lease_until = 0, updated_at = ? WHERE id = ? AND owner = "
            "? AND status = 'sending'",
            (error[:1000], kind, next_at, now, row_id, owner),
        )
        return n == 1

    async def mark_failed(self, row_id: int, owner: str, error: str, kind: str, now: float) -> bool:
        n = await self._exec(
            "UPDATE outbox SET status = 'failed', last_error = ?, error_kind = ?, "
            "alert_state = 'pending', "
            "owner = '', lease_until = 0, updated_at = ? WHERE id = ? AND owner = "
            "? AND status = 'sending'",
            (error[:1000], kind, now, row_id, owner),
        )
        return n == 1

    async def release(self, row_ids: Sequence[int], owner: str, error: str, now: float) -> None:
        """Give rows back untouched (the server was unreachable: not the message's fault)."""
        if not row_ids:
            return
        marks = ", ".join("?" for _ in row_ids)
        await self._exec(
            "UPDATE outbox SET status = 'pending', "
            "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, last_error = ?, "
            f"error_kind = 'server', owner = '', lease_until = 0, updated_at = ? "
            f"WHERE owner = ? AND status = 'sending' AND id IN ({marks})",
            (error[:1000], now, owner, *row_ids),
        )

    async def release_owner(self, owner: str, now: float) -> None:
        """On stop: rows still leased by ``owner`` go back to pending, due now."""
        await self._exec(
            "UPDATE outbox SET status = 'pending', owner = '', lease_until = 0, "
            "next_attempt_at = ?, "
            "updated_at = ? WHERE owner = ? AND status = 'sending'",
            (now, now, owner),
        )

    async def requeue(
        self, ref: str, now: float, channel: str | None = None, include_delivered: bool = False
    ) -> int:
        """Operator's retry: failed/waiting rows of ``ref`` due now, fresh attempts."""
        statuses = (
            ("failed", "pending", "delivered") if include_delivered else ("failed", "pending")
        )
        sql = (
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = "
            "?, alert_state = '', "
            f"updated_at = ? WHERE ref = ? AND status IN ({', '.join('?' for _ in statuses)})"
        )
        args: list[Any] = [now, now, ref, *statuses]
        if channel:
            sql += " AND channel = ?"
            args.append(channel)
        return await self._exec(sql, args)

    async def pending_alerts(self) -> list[OutboxRow]:
        return [
            outbox_row(r)
            for r in await self._fetchall(
                f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE alert_state = 'pending' ORDER BY id"
            )
        ]

    async def set_alert_state(self, row_id: int, state: str) -> None:
        await self._exec("UPDATE outbox SET alert_state = ? WHERE id = ?", (state, row_id))

    # -- photos --------------------------------------------------------------------
    async def attachments(self, ref: str) -> list[tuple[int, str, str, str, bytes | None]]:
        """(position, file_id, status, mime, data) of a request's photos."""
        rows = await self._fetchall(
            "SELECT position, file_id, status, mime, data FROM attachments WHERE "
            "ref = ? ORDER BY position",
            (ref,),
        )
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4]) for r in rows]

    async def save_attachment(
        self, ref: str, position: int, status: str, mime: str = "", data: bytes | None = None
    ) -> None:
        await self._exec(
            "UPDATE attachments SET status = ?, mime = ?, data = ? WHERE ref = ? AND position = ?",
            (status, mime, data, ref, position),
        )
