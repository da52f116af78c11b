"""The SQL behind ``reports`` (statistics, rejected messages, search, transcripts): the only
place these reads are written. Plain rows out; ``reports`` turns them into typed records.

Reads only, on whatever it is given: a ``Database`` (either engine), an open transaction of
one, or a bare aiosqlite connection (the desk's own reader, the terminal's). The one
engine-specific read (does a table exist?) asks the database's ``tables()`` when it has one.
"""

from __future__ import annotations

from typing import Any

from bot.store.database import statements

_ROW = "id, conversation_id, ts, direction, kind, text, flow, step"


def like_pattern(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class ReportStore:
    def __init__(self, db: Any) -> None:
        self.db = statements(db)
        # LIKE is case-insensitive (for ASCII) on SQLite; PostgreSQL's ILIKE is that
        self._like = "ILIKE" if getattr(db, "dialect", "sqlite") == "postgresql" else "LIKE"

    async def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return list(await self.db.fetchall(sql, args))

    async def has_table(self, name: str) -> bool:
        tables = getattr(self.db, "tables", None)
        if tables is not None:
            return name in await tables()
        rows = await self._all("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return bool(rows and rows[0][0])

    # -- the anonymous counters (bot/store/counters.py) -------------------------------------------
    async def counter_sums(self, since_day: str) -> dict[str, int]:
        """name -> sum over the days from ``since_day`` (a local date, YYYY-MM-DD) on."""
        if not await self.has_table("counters"):
            return {}
        rows = await self._all("SELECT name, SUM(n) FROM counters WHERE day >= ? GROUP BY name", (since_day,))
        return {str(name): int(n) for name, n in rows}

    async def counter_days(self, since_day: str) -> list[tuple[str, str, int]]:
        """(day, name, n) from ``since_day`` on, oldest first."""
        if not await self.has_table("counters"):
            return []
        rows = await self._all("SELECT day, name, n FROM counters WHERE day >= ? ORDER BY day", (since_day,))
        return [(str(d), str(name), int(n)) for d, name, n in rows]

    # -- rejected messages ------------------------------------------------------------------------
    async def unmatched_rows(self, limit: int) -> list[tuple[Any, ...]]:
        return [
            tuple(r)
            for r in await self._all(
                "SELECT ts, conversation_id, text, decision, candidates_json FROM unmatched ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        ]

    # -- search -----------------------------------------------------------------------------------
    async def find_rows(self, text: str, directions: tuple[str, ...], limit: int) -> list[tuple[Any, ...]]:
        """Newest lines (with the user's name) whose text, name or conversation id contains ``text``."""
        pattern = like_pattern(text)
        like = self._like
        rows = await self._all(
            f"""SELECT m.id, m.conversation_id, m.ts, m.direction, m.kind, m.text, m.flow, m.step,
                       COALESCE(c.user_name, '')
                FROM messages m LEFT JOIN conversations c ON c.id = m.conversation_id
                WHERE m.direction IN ({",".join("?" * len(directions))})
                  AND (m.text {like} ? ESCAPE '\\' OR c.user_name {like} ? ESCAPE '\\'
                       OR m.conversation_id {like} ? ESCAPE '\\')
                ORDER BY m.id DESC LIMIT ?""",
            (*directions, pattern, pattern, pattern, limit),
        )
        return [tuple(r) for r in rows]

    # -- conversations and transcripts ------------------------------------------------------------
    _CONVERSATION = """SELECT c.id, c.user_name, c.flow, c.step, c.paused, c.active, c.created_at, c.updated_at,
                              (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)
                       FROM conversations c"""

    async def conversation_rows(self, limit: int) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._all(f"{self._CONVERSATION} ORDER BY c.updated_at DESC LIMIT ?", (limit,))]

    async def conversation_row(self, conversation_id: str) -> tuple[Any, ...] | None:
        rows = await self._all(f"{self._CONVERSATION} WHERE c.id = ?", (conversation_id,))
        return tuple(rows[0]) if rows else None

    async def transcript_rows(self, conversation_id: str) -> list[tuple[Any, ...]]:
        return [
            tuple(r)
            for r in await self._all(
                f"SELECT {_ROW} FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            )
        ]

    # -- following the transcript (``python -m bot watch``) ---------------------------------------
    async def watch_cursor(self, conversation: str | None, tail: int) -> int:
        """The message id to follow from so the last ``tail`` lines come first (0: none)."""
        where, args = (" WHERE conversation_id = ?", (conversation,)) if conversation else ("", ())
        if tail <= 0:
            rows = await self._all(f"SELECT COALESCE(MAX(id), 0) FROM messages{where}", args)
            return int(rows[0][0]) if rows else 0
        rows = await self._all(f"SELECT id FROM messages{where} ORDER BY id DESC LIMIT 1 OFFSET ?", (*args, tail - 1))
        return int(rows[0][0]) - 1 if rows else 0

    async def lines_after(self, cursor: int, conversation: str | None, limit: int = 500) -> list[tuple[Any, ...]]:
        where, args = (" AND conversation_id = ?", (conversation,)) if conversation else ("", ())
        rows = await self._all(
            f"SELECT {_ROW} FROM messages WHERE id > ?{where} ORDER BY id LIMIT ?", (cursor, *args, limit)
        )
        return [tuple(r) for r in rows]

    async def user_name(self, conversation_id: str) -> str:
        rows = await self._all("SELECT user_name FROM conversations WHERE id = ?", (conversation_id,))
        return str(rows[0][0]) if rows and rows[0][0] else ""
