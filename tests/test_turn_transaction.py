"""A turn's transaction on SQLite is one hand-over to aiosqlite's thread (``save_turn``): the
write lock is held for that one call, not across a loop turn per statement, which is what
capped the door and the engine under load. Its contract: all of the turn or nothing, and a
``TURN_WRITES`` hook that waits for anything but the database is refused (rolled back)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.core.ports import Direction, Entry, State
from bot.store.sqlite import TURN_WRITES, SQLiteStore


async def _count(store: SQLiteStore, cid: str) -> int:
    row = await store.database.fetchone("SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (cid,))
    return int(row[0])


async def test_a_turn_with_the_doors_writes_is_one_hand_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await SQLiteStore.open(str(tmp_path / "t.db"))
    try:
        calls: list[str] = []
        real = aiosqlite.Connection._execute

        async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(getattr(fn, "__name__", "?"))
            return await real(self, fn, *args, **kwargs)

        async def door_writes(tx: Any, state: State) -> None:  # what the Telegram door does
            # bot.tg.store's way: fn(sqlite3_connection, ...) through the connection's _execute
            await tx._execute(lambda conn: conn.execute("CREATE TABLE IF NOT EXISTS outq (x TEXT)"), tx._conn)
            await tx._execute(lambda conn, cid: conn.execute("INSERT INTO outq VALUES (?)", (cid,)),
                              tx._conn, state.conversation_id)

        await store.save_turn(State("tg:1"), [Entry(Direction.IN, "hi, my backup failed")])  # schema warm
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        token = TURN_WRITES.set(door_writes)
        try:
            await store.save_turn(State("tg:2"), [Entry(Direction.IN, "icloud says storage full"),
                                                  Entry(Direction.OUT, "Let's free up space.")])
        finally:
            TURN_WRITES.reset(token)
        assert len(calls) == 1
        monkeypatch.undo()
        assert await _count(store, "tg:2") == 2
        assert await store.database.fetchone("SELECT x FROM outq") == ("tg:2",)
    finally:
        await store.close()


async def test_a_hook_that_waits_for_something_else_rolls_the_turn_back(tmp_path: Path) -> None:
    store = await SQLiteStore.open(str(tmp_path / "t.db"))
    try:
        async def slow_writes(tx: Any, state: State) -> None:
            await asyncio.sleep(0)  # not the database: it cannot run on the database's thread

        token = TURN_WRITES.set(slow_writes)
        try:
            with pytest.raises(RuntimeError, match="awaited something other than the database"):
                await store.save_turn(State("tg:3"), [Entry(Direction.IN, "phone fell in the bath")])
        finally:
            TURN_WRITES.reset(token)
        assert await _count(store, "tg:3") == 0
        await store.save_turn(State("tg:3"), [Entry(Direction.IN, "phone fell in the bath")])  # lock released
        assert await _count(store, "tg:3") == 1
    finally:
        await store.close()
