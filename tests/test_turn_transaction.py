"""A turn's transaction on SQLite (``save_turn``): all of the turn or nothing, and — with or
without a door's extra writes — ONE hand-over to aiosqlite's thread, so the write lock is held
for that one call rather than across a loop turn per statement (what capped the engine under
load, and what cost the Telegram door CPU per update)."""

from __future__ import annotations

import sqlite3
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


async def test_a_turn_with_a_doors_writes_is_still_one_hand_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await SQLiteStore.open(str(tmp_path / "t.db"))
    try:
        await store.database.execute("CREATE TABLE outq (conversation_id TEXT, step TEXT)")
        calls: list[str] = []
        real = aiosqlite.Connection._execute

        async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(getattr(fn, "__name__", "?"))
            return await real(self, fn, *args, **kwargs)

        def queue(conn: sqlite3.Connection, cid: str, step: str) -> int:
            return int(conn.execute("INSERT INTO outq VALUES (?, ?)", (cid, step)).lastrowid or 0)

        queued: list[int] = []

        async def door_writes(tx: Any, state: State) -> None:
            queued.append(await tx.call(queue, state.conversation_id, state.step))

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        token = TURN_WRITES.set(door_writes)
        try:
            await store.save_turn(State("tg:4", flow="storage", step="free_space"),
                                  [Entry(Direction.IN, "it says not enough storage?? i pay for 50gb")])
        finally:
            TURN_WRITES.reset(token)
        assert len(calls) == 1
        monkeypatch.undo()
        assert queued == [1]  # the hook got its statement's answer back
        assert await store.database.fetchall("SELECT * FROM outq") == [("tg:4", "free_space")]
        assert await _count(store, "tg:4") == 1
    finally:
        await store.close()


async def test_a_doors_writes_that_fail_take_the_whole_turn_back(tmp_path: Path) -> None:
    store = await SQLiteStore.open(str(tmp_path / "t.db"))
    try:
        await store.database.execute("CREATE TABLE outq (x TEXT)")

        def queue_then_fail(conn: sqlite3.Connection, cid: str) -> None:
            conn.execute("INSERT INTO outq VALUES (?)", (cid,))
            raise sqlite3.OperationalError("the outgoing queue is full")

        async def door_writes(tx: Any, state: State) -> None:
            await tx.call(queue_then_fail, state.conversation_id)

        token = TURN_WRITES.set(door_writes)
        try:
            with pytest.raises(sqlite3.OperationalError):
                await store.save_turn(State("tg:3"), [Entry(Direction.IN, "phone fell in the bath, no backup")])
        finally:
            TURN_WRITES.reset(token)
        assert await _count(store, "tg:3") == 0
        assert await store.database.fetchall("SELECT * FROM outq") == []
        await store.save_turn(State("tg:3"), [Entry(Direction.IN, "phone fell in the bath, no backup")])
        assert await _count(store, "tg:3") == 1  # the lock was given back
    finally:
        await store.close()


async def test_a_door_that_fails_before_its_writes_saves_nothing(tmp_path: Path) -> None:
    store = await SQLiteStore.open(str(tmp_path / "t.db"))
    try:
        async def door_writes(tx: Any, state: State) -> None:
            raise ValueError("a stale button")

        token = TURN_WRITES.set(door_writes)
        try:
            with pytest.raises(ValueError):
                await store.save_turn(State("tg:5"), [Entry(Direction.IN, "pressed the old button by mistake sorry")])
        finally:
            TURN_WRITES.reset(token)
        assert await _count(store, "tg:5") == 0
        assert await store.load_state("tg:5") is None
    finally:
        await store.close()
