"""A turn's transaction on SQLite (``save_turn``): all of the turn or nothing, and — without a
door's extra writes — ONE hand-over to aiosqlite's thread, so the write lock is held for
that one call rather than across a loop turn per statement (what capped the engine under
load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.core.ports import Direction, Entry, State
from bot.store.sqlite import TURN_WRITES, SQLiteStore


async def _count(store: SQLiteStore, cid: str) -> int:
    row = await store.database.fetchone("SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (cid,))
    return int(row[0])


async def test_a_turn_is_one_hand_over_to_the_database_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await SQLiteStore.open(str(tmp_path / "t.db"))
    try:
        calls: list[str] = []
        real = aiosqlite.Connection._execute

        async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(getattr(fn, "__name__", "?"))
            return await real(self, fn, *args, **kwargs)

        await store.save_turn(State("tg:1"), [Entry(Direction.IN, "hi, my backup failed")])
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        await store.save_turn(State("tg:2"), [Entry(Direction.IN, "icloud says storage full, what now"),
                                              Entry(Direction.OUT, "Let's free up some space first.")])
        assert len(calls) == 1
        monkeypatch.undo()
        assert await _count(store, "tg:2") == 2
    finally:
        await store.close()


async def test_a_doors_writes_that_fail_take_the_whole_turn_back(tmp_path: Path) -> None:
    store = await SQLiteStore.open(str(tmp_path / "t.db"))
    try:
        async def door_writes(tx: Any, state: State) -> None:
            await tx.execute("CREATE TABLE IF NOT EXISTS outq (x TEXT)")
            await tx.execute("INSERT INTO outq VALUES (?)", (state.conversation_id,))
            raise OSError("the outgoing queue is full")

        token = TURN_WRITES.set(door_writes)
        try:
            with pytest.raises(OSError):
                await store.save_turn(State("tg:3"), [Entry(Direction.IN, "phone fell in the bath, no backup")])
        finally:
            TURN_WRITES.reset(token)
        assert await _count(store, "tg:3") == 0
        await store.save_turn(State("tg:3"), [Entry(Direction.IN, "phone fell in the bath, no backup")])
        assert await _count(store, "tg:3") == 1  # the lock was given back
    finally:
        await store.close()
