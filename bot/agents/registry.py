"""The desk's own tables (``schema.py``): topics per conversation (with the case's owner),
relays, users' media waiting to be copied into their topic, trash, meta — and the other
queries the agents' tools make (``watch``, labelling): the only SQL of bot/agents besides
``reports`` and ``privacy``.

``agent_topics`` is the topic registry and the mirror's durable progress: for each
conversation its forum topic, pinned case card, and two cursors over ``messages.id`` —
``seen_cursor`` (every line up to it is visible somewhere in the group: its topic or the
Live feed) and ``topic_cursor`` (every line up to it is in its own topic). After a restart
the mirror continues from them; nothing is posted twice or lost.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Any

from bot.store.conversations import MessageRow
from bot.store.counters import day_of
from bot.store.database import statements

from .rows import QUEUE_COLUMNS, TOPIC_COLUMNS, Post, QueueItem, Topic, topic_from_row


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def _statements(db: Any) -> Any:
    """A bare aiosqlite connection as a ``Transaction`` (statements on it as they are: no lock,
    no BEGIN); a ``Database`` or a ``Transaction`` as it is."""
    return statements(db)


class Registry:
    """SQL for the desk's tables, on either engine.

    ``db`` is where reads go, ``write_db`` where writes go (``db`` when not given); each is a
    ``Database`` (bot/store/database.py), an open ``Transaction`` of one, or — SQLite — a bare
    aiosqlite connection:

    * SQLite: reads on the desk's own connection (WAL readers never wait and never make a
      user's turn wait); writes on the store's connection under the store's ``tx_lock``
      (``lock``), so they never interleave with a turn's transaction and never contend for
      SQLite's write lock from a second connection;
    * PostgreSQL: the ``Database`` for both (a pool: each write its own transaction, several
      statements in ``transaction()``);
    * inside another's transaction (an erasure): that ``Transaction`` for both.

    SQL is portable (``ON CONFLICT``, ``RETURNING``, ``CASE``); nothing here names the engine."""

    def __init__(self, db: Any, write_db: Any = None, lock: Any = None) -> None:
        self.db = _statements(db)
        writer = _statements(write_db if write_db is not None else db)
        # a Database writes on its own (its lock, or the server's); otherwise statements on a
        # connection or inside a transaction, under the lock the caller gives
        self._database = writer if hasattr(writer, "transaction") else None
        self.write_db = writer
        self.lock = lock if lock is not None else _NoLock()

    async def write(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        if self._database is not None:
            return int(await self._database.execute(sql, args))
        async with self.lock:
            return int(await self.write_db.execute(sql, args))

    async def write_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self._database is not None:
            await self._database.executemany(sql, rows)
            return
        async with self.lock:
            await self.write_db.executemany(sql, rows)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Any]:
        """Several writes together: a transaction of the ``Database``, else the statements
        under the lock (SQLite's connection, as before; or the caller's transaction)."""
        if self._database is not None:
            async with self._database.transaction() as tx:
                yield tx
        else:
            async with self.lock:
                yield self.write_db

    async def _one(self, sql: str, args: Any = ()) -> Any:
        return await self.db.fetchone(sql, tuple(args))

    async def _all(self, sql: str, args: Any = ()) -> list[Any]:
        return list(await self.db.fetchall(sql, tuple(args)))

    # -- topics -----------------------------------------------------------------------------------
    async def topic(self, conversation_id: str) -> Topic | None:
        row = await self._one(f"SELECT {', '.join(TOPIC_COLUMNS)} FROM agent_topics WHERE conversation_id = ?",
                              (conversation_id,))
        return topic_from_row(row) if row else None

    async def topic_by_ref(self, ref: int) -> Topic | None:
        row = await self._one(f"SELECT {', '.join(TOPIC_COLUMNS)} FROM agent_topics WHERE ref = ?", (ref,))
        return topic_from_row(row) if row else None

    async def topic_by_thread(self, thread_id: int) -> Topic | None:
        row = await self._one(f"SELECT {', '.join(TOPIC_COLUMNS)} FROM agent_topics WHERE thread_id = ?", (thread_id,))
        return topic_from_row(row) if row else None

    async def all_topics(self) -> list[Topic]:
        return [topic_from_row(r) for r in await self._all(f"SELECT {', '.join(TOPIC_COLUMNS)} FROM agent_topics")]

    async def create_topic(self, conversation_id: str, cursor: int) -> Topic:
        """Register a conversation; its mirror starts after message id ``cursor``."""
        now = time.time()
        async with self._tx() as tx:
            await tx.execute(
                "INSERT INTO agent_topics (conversation_id, topic_cursor, seen_cursor, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (conversation_id, cursor, cursor, now, now),
            )
            row = await tx.fetchone(
                f"SELECT {', '.join(TOPIC_COLUMNS)} FROM agent_topics WHERE conversation_id = ?", (conversation_id,)
            )
        assert row is not None
        return topic_from_row(row)

    async def save(self, topic: Topic) -> None:
        topic.updated_at = time.time()
        cols = [f.name for f in fields(Topic) if f.name in TOPIC_COLUMNS and f.name not in ("ref",)]
        values = [getattr(topic, c) for c in cols]
        values = [int(v) if isinstance(v, bool) else v for v in values]
        await self.write(
            f"UPDATE agent_topics SET {', '.join(c + ' = ?' for c in cols)} WHERE ref = ?",
            (*values, topic.ref),
        )

    async def create_topics(
        self, conversation_ids: list[str], cursor: int, symptoms: dict[str, str] | None = None
    ) -> list[Topic]:
        """``create_topic`` for many conversations at once: one short write under the lock,
        the read-back on the desk's own connection."""
        now = time.time()
        symptoms = symptoms or {}
        await self.write_many(
            "INSERT INTO agent_topics (conversation_id, topic_cursor, seen_cursor, symptom, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(c, cursor, cursor, symptoms.get(c, ""), now, now) for c in conversation_ids],
        )
        out: list[Topic] = []
        for i in range(0, len(conversation_ids), 500):
            chunk = conversation_ids[i : i + 500]
            out += [topic_from_row(r) for r in await self._all(
                f"SELECT {', '.join(TOPIC_COLUMNS)} FROM agent_topics WHERE conversation_id IN "
                f"({','.join('?' * len(chunk))})",
                chunk,
            )]
        return out

    async def save_many(self, topics: list[Topic]) -> None:
        if not topics:
            return
        now = time.time()
        cols = [f.name for f in fields(Topic) if f.name in TOPIC_COLUMNS and f.name not in ("ref",)]
        rows = []
        for t in topics:
            t.updated_at = now
            values = [getattr(t, c) for c in cols]
            rows.append((*[int(v) if isinstance(v, bool) else v for v in values], t.ref))
        await self.write_many(f"UPDATE agent_topics SET {', '.join(c + ' = ?' for c in cols)} WHERE ref = ?", rows)

    async def save_seen(self, topics: list[Topic]) -> None:
        await self.write_many(
            "UPDATE agent_topics SET seen_cursor = ? WHERE ref = ?", [(t.seen_cursor, t.ref) for t in topics]
        )

    # -- relays (agent message in the group -> copy in the user's chat) -------------------------
    async def add_relay(self, agent_message_id: int, conversation_id: str, user_message_id: int, caption: bool) -> None:
        await self.write(
            "INSERT INTO agent_relays (agent_message_id, conversation_id, user_message_id, caption, ts) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent_message_id) DO UPDATE SET "
            "conversation_id = excluded.conversation_id, user_message_id = excluded.user_message_id, "
            "caption = excluded.caption, ts = excluded.ts",
            (agent_message_id, conversation_id, user_message_id, int(caption), time.time()),
        )

    async def relay(self, agent_message_id: int) -> tuple[str, int, bool] | None:
        row = await self._one(
            "SELECT conversation_id, user_message_id, caption FROM agent_relays WHERE agent_message_id = ?",
            (agent_message_id,),
        )
        return (row[0], int(row[1]), bool(row[2])) if row else None

    # -- topics to delete on Telegram (after /forget or the retention purge) ----------------------
    async def trash(self, thread_ids: list[int]) -> None:
        await self.write_many(
            "INSERT INTO agent_trash (thread_id, ts) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(t, time.time()) for t in thread_ids],
        )

    async def trash_topic_of(self, conversation_id: str) -> int | None:
        """Inside an erasure's transaction (the caller holds the lock): the conversation's
        forum topic is queued for deletion on Telegram. Returns its thread id."""
        db = self.write_db
        row = await db.fetchone("SELECT thread_id FROM agent_topics WHERE conversation_id = ?", (conversation_id,))
        thread = row[0] if row else None
        if thread is not None:
            await db.execute("INSERT INTO agent_trash (thread_id, ts) VALUES (?, ?) ON CONFLICT DO NOTHING",
                             (thread, time.time()))
        return thread

    async def forget_card(self, conversation_id: str) -> None:
        """The stored card loses what it showed (the caller holds the lock); drawn again."""
        await self.write_db.execute("UPDATE agent_topics SET card_html = '' WHERE conversation_id = ?",
                                    (conversation_id,))

    async def trashed(self) -> list[int]:
        return [int(r[0]) for r in await self._all("SELECT thread_id FROM agent_trash ORDER BY ts")]

    async def untrash(self, thread_id: int) -> None:
        await self.write("DELETE FROM agent_trash WHERE thread_id = ?", (thread_id,))

    # -- posts that carry a user's data (agent_posts): cleaned up on /forget and retention ---------
    async def add_post(
        self,
        message_id: int,
        kind: str,
        parts: list[tuple[str | None, str]],
        *,
        thread_id: int | None = None,
        private_chat: int | None = None,
        editable: bool = False,
    ) -> None:
        """Record a message the desk posted, with the conversations it is about: ``parts`` are
        (conversation id or None for a heading, its HTML — kept only when ``editable``)."""
        async with self._tx() as tx:
            row = await tx.fetchone(
                "INSERT INTO agent_posts (private_chat, thread_id, message_id, kind, editable, ts) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (private_chat, thread_id, message_id, kind, int(editable), time.time()),
            )
            post_id = int(row[0])
            await tx.executemany(
                "INSERT INTO agent_post_parts (post_id, seq, conversation_id, html) VALUES (?, ?, ?, ?)",
                [(post_id, i, cid, html if editable else "") for i, (cid, html) in enumerate(parts)],
            )

    _MARK = ("UPDATE agent_posts SET cleanup = CASE WHEN cleanup > 1 THEN cleanup ELSE 1 END WHERE id IN "
             "(SELECT post_id FROM agent_post_parts WHERE conversation_id = ?)")

    async def mark_posts_of(self, conversation_id: str, thread_id: int | None) -> None:
        """Inside an erasure's transaction (the caller holds the lock): posts about the
        conversation are to be cleaned up; those in its own topic go with the topic."""
        db = self.write_db
        if thread_id is not None:
            await db.execute("DELETE FROM agent_posts WHERE thread_id = ? AND private_chat IS NULL", (thread_id,))
        await db.execute(self._MARK, (conversation_id,))

    async def mark_posts_now(self, conversation_id: str) -> None:
        """After the erasure: posts recorded about the conversation while it ran (their content
        was made before it) are cleaned up too, and their part of a shared message goes now."""
        async with self._tx() as tx:
            await tx.execute(self._MARK, (conversation_id,))
            await tx.execute("DELETE FROM agent_post_parts WHERE conversation_id = ?", (conversation_id,))

    async def expire_posts(self, cutoff: float) -> int:
        """Posts older than the retention period are deleted on Telegram, whoever they are about."""
        async with self._tx() as tx:
            n = await tx.execute("UPDATE agent_posts SET cleanup = 2 WHERE ts < ? AND cleanup < 2", (cutoff,))
            await tx.execute(
                "DELETE FROM agent_post_parts WHERE post_id IN (SELECT id FROM agent_posts WHERE cleanup = 2)"
            )
        return max(0, int(n))

    async def posts_to_clean(self, limit: int = 500) -> list[Post]:
        rows = await self._all(
            "SELECT id, private_chat, thread_id, message_id, kind, editable, cleanup FROM agent_posts "
            "WHERE cleanup > 0 ORDER BY id LIMIT ?",
            (limit,),
        )
        return [Post(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows]

    async def post_parts(self, post_id: int) -> list[tuple[str | None, str]]:
        rows = await self._all(
            "SELECT conversation_id, html FROM agent_post_parts WHERE post_id = ? ORDER BY seq", (post_id,)
        )
        return [(r[0], r[1]) for r in rows]

    async def drop_posts(self, post_ids: list[int]) -> None:
        """The messages are gone from Telegram: forget the records (their parts follow)."""
        await self.write_many("DELETE FROM agent_post_parts WHERE post_id = ?", [(i,) for i in post_ids])
        await self.write_many("DELETE FROM agent_posts WHERE id = ?", [(i,) for i in post_ids])

    async def post_cleaned(self, post_id: int) -> None:
        """The message was edited: the erased conversation's part is out of it."""
        await self.write("UPDATE agent_posts SET cleanup = 0 WHERE id = ?", (post_id,))

    # -- meta -------------------------------------------------------------------------------------
    async def meta(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM agent_meta WHERE key = ?", (key,))
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str | int | float | None) -> None:
        if value is None:
            await self.write("DELETE FROM agent_meta WHERE key = ?", (key,))
        else:
            await self.write(
                "INSERT INTO agent_meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, str(value)),
            )

    # -- the transcript, as the mirror reads it ---------------------------------------------------
    async def max_message_id(self) -> int:
        row = await self._one("SELECT COALESCE(MAX(id), 0) FROM messages")
        return int(row[0]) if row else 0

    async def rows_after(self, after_id: int, limit: int = 5000) -> list[MessageRow]:
        rows = await self._all(
            "SELECT id, conversation_id, ts, direction, kind, text, flow, step FROM messages "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [MessageRow(*r) for r in rows]

    async def conversation_rows(
        self,
        conversation_id: str,
        after_id: int = 0,
        upto_id: int | None = None,
        limit: int = 100_000,
    ) -> list[MessageRow]:
        sql = (
            "SELECT id, conversation_id, ts, direction, kind, text, flow, step FROM messages "
            "WHERE conversation_id = ? AND id > ?"
        )
        args: list[Any] = [conversation_id, after_id]
        if upto_id is not None:
            sql += " AND id <= ?"
            args.append(upto_id)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [MessageRow(*r) for r in await self._all(sql, args)]

    async def escalations_after(self, after_id: int, limit: int = 50) -> list[MessageRow]:
        rows = await self._all(
            "SELECT id, conversation_id, ts, direction, kind, text, flow, step FROM messages "
            "WHERE id > ? AND direction = 'note' AND kind LIKE 'escalation:%' ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [MessageRow(*r) for r in rows]

    # -- users' media (copied into their topic; see desk/mirror.py) -------------------------------
    async def add_media(self, conversation_id: str, chat_id: int, message_id: int, kind: str, ts: float) -> None:
        await self.write(
            "INSERT INTO agent_media (conversation_id, chat_id, message_id, kind, ts) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (conversation_id, chat_id, message_id, kind, ts),
        )

    async def media(self) -> list[tuple[str, int, int, str, float]]:
        """(conversation id, chat id, message id, kind, ts) not yet copied, oldest first."""
        rows = await self._all("SELECT conversation_id, chat_id, message_id, kind, ts FROM agent_media ORDER BY id")
        return [(str(r[0]), int(r[1]), int(r[2]), str(r[3]), float(r[4])) for r in rows]

    async def drop_media(self, chat_id: int, message_id: int) -> None:
        await self.write("DELETE FROM agent_media WHERE chat_id = ? AND message_id = ?", (chat_id, message_id))

    # -- names and look-ups -----------------------------------------------------------------------
    async def user_names(self) -> dict[str, str]:
        """Conversation id -> the user's first name, for topics registered here (after a restart)."""
        rows = await self._all(
            "SELECT c.id, c.user_name FROM conversations c JOIN agent_topics t ON t.conversation_id = c.id "
            "WHERE c.user_name != ''"
        )
        return {str(r[0]): str(r[1]) for r in rows}

    async def conversation_of(self, ref: str) -> str | None:
        """``#N`` or ``N`` (a conversation's short number) or a conversation id -> its id."""
        ref = ref.strip()
        number = ref.removeprefix("#")
        if number.isdigit():
            t = await self.topic_by_ref(int(number))
            return t.conversation_id if t else None
        return ref or None

    # -- labelling unmatched messages (bot/agents/labelling.py) -----------------------------------
    async def unlabelled(self, limit: int) -> list[tuple[int, str, str, str]]:
        """(id, text, decision, candidates json) of rejected/unsure messages nobody taught yet."""
        rows = await self._all(
            "SELECT u.id, u.text, u.decision, u.candidates_json FROM unmatched u "
            "WHERE NOT EXISTS (SELECT 1 FROM learned_examples l WHERE l.text = u.text) "
            "ORDER BY u.id DESC LIMIT ?",
            (limit,),
        )
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    async def unmatched_row(self, unmatched_id: int) -> tuple[str, str] | None:
        """(text, candidates json) of one rejected/unsure message."""
        r = await self._one("SELECT text, candidates_json FROM unmatched WHERE id = ?", (unmatched_id,))
        return (str(r[0]), str(r[1])) if r else None

    # -- the escalation queue (migration 2; bot/agents/desk/queue.py) ----------------------------
    async def open_item(self, conversation_id: str, kind: str, now: float, *, status: str = "open",
                        agent: str = "") -> QueueItem | None:
        """A new item, unless this conversation has one of this kind not yet resolved (None)."""
        async with self._tx() as tx:
            if await tx.fetchone(
                "SELECT id FROM agent_queue WHERE conversation_id = ? AND kind = ? AND status != 'resolved'",
                (conversation_id, kind),
            ) is not None:
                return None
            row = await tx.fetchone(
                "INSERT INTO agent_queue (conversation_id, kind, status, agent, opened_at, claimed_at) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (conversation_id, kind, status, agent, now, now if status == "claimed" else None),
            )
            item_id = int(row[0]) if row else 0
        return QueueItem(item_id, conversation_id, kind, status, agent, None, now,
                         now if status == "claimed" else None, None, None)

    async def item(self, item_id: int) -> QueueItem | None:
        row = await self._one(f"SELECT {QUEUE_COLUMNS} FROM agent_queue WHERE id = ?", (item_id,))
        return QueueItem(*row) if row else None

    async def unresolved_items(self, conversation_id: str | None = None, limit: int = 200) -> list[QueueItem]:
        """Items not resolved yet (one conversation's, or all), oldest first."""
        where, args = "status != 'resolved'", ()
        if conversation_id is not None:
            where, args = where + " AND conversation_id = ?", (conversation_id,)
        rows = await self._all(
            f"SELECT {QUEUE_COLUMNS} FROM agent_queue WHERE {where} ORDER BY opened_at, id LIMIT ?", (*args, limit)
        )
        return [QueueItem(*r) for r in rows]

    async def items_in_message(self, message_id: int) -> list[QueueItem]:
        rows = await self._all(f"SELECT {QUEUE_COLUMNS} FROM agent_queue WHERE message_id = ? ORDER BY id",
                               (message_id,))
        return [QueueItem(*r) for r in rows]

    async def set_item_status(self, item_ids: list[int], status: str, agent: str, now: float) -> None:
        """open (back in the queue: no owner), claimed (by ``agent``) or resolved."""
        if not item_ids:
            return
        marks = ",".join("?" * len(item_ids))
        if status == "open":
            sql, args = "status = 'open', agent = '', claimed_at = NULL, alerted_at = NULL", ()
        elif status == "claimed":
            sql, args = "status = 'claimed', agent = ?, claimed_at = COALESCE(claimed_at, ?)", (agent, now)
        else:
            sql, args = "status = 'resolved', agent = CASE WHEN ? = '' THEN agent ELSE ? END, resolved_at = ?", (
                agent, agent, now)
        await self.write(f"UPDATE agent_queue SET {sql} WHERE id IN ({marks})", (*args, *item_ids))

    async def set_item_message(self, item_ids: list[int], message_id: int) -> None:
        if item_ids:
            await self.write(
                f"UPDATE agent_queue SET message_id = ? WHERE id IN ({','.join('?' * len(item_ids))})",
                (message_id, *item_ids),
            )

    async def set_item_alerted(self, item_id: int, now: float) -> None:
        await self.write("UPDATE agent_queue SET alerted_at = ? WHERE id = ?", (now, item_id))

    # -- anonymous counters (bot/store/counters.py) the desk adds: takeovers, times, ... --------
    async def count(self, counts: dict[str, int | float]) -> None:
        """Add to today's anonymous counters (no conversation id, no user's name or text)."""
        counts = {k: v for k, v in counts.items() if v}
        if counts:
            day = day_of(time.time())
            await self.write_many(
                "INSERT INTO counters (day, name, n) VALUES (?, ?, ?) "
                "ON CONFLICT (day, name) DO UPDATE SET n = counters.n + excluded.n",
                [(day, name, int(round(n))) for name, n in counts.items()],
            )
