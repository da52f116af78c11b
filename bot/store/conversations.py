"""The conversation store's portable part: its SQL (one text for every engine — ``?``
placeholders, ``ON CONFLICT``) and the row <-> ``State`` mapping, used by ``SQLiteStore``
(bot/store/sqlite.py) and ``PostgresStore`` (bot/store/pgstore.py).

``write_turn`` is a turn's writes — counters, the conversation row, transcript lines, unmatched
messages — on an open ``Transaction``; the store around it decides where the transaction
comes from (SQLite: BEGIN IMMEDIATE under the write lock; PostgreSQL: the turn's own
transaction, which holds the conversation's advisory lock).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.core.ports import Entry, State

from .counters import day_of, note_counts, turn_counts
from .database import Transaction

LOAD_STATE = "SELECT flow, step, seq, state_json, active, paused, user_name FROM conversations WHERE id = ?"
PREVIOUS = "SELECT flow, step, updated_at FROM conversations WHERE id = ?"
UPSERT = """INSERT INTO conversations (id, flow, step, seq, state_json, active, paused, user_name,
                                       created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET flow=excluded.flow, step=excluded.step,
              seq=excluded.seq, state_json=excluded.state_json, active=excluded.active,
              paused=excluded.paused, user_name=excluded.user_name, updated_at=excluded.updated_at"""
INSERT_MESSAGE = """INSERT INTO messages (conversation_id, ts, direction, kind, text, intent, score,
                                          decision, flow, step) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
INSERT_NOTE = "INSERT INTO messages (conversation_id, ts, direction, kind, text) VALUES (?, ?, ?, ?, ?)"
INSERT_UNMATCHED = ("INSERT INTO unmatched (conversation_id, ts, text, decision, candidates_json) "
                    "VALUES (?, ?, ?, ?, ?)")
COUNT = ("INSERT INTO counters (day, name, n) VALUES (?, ?, ?) "
         "ON CONFLICT (day, name) DO UPDATE SET n = counters.n + excluded.n")
CONVERSATIONS = """SELECT c.id, c.flow, c.step, c.active, c.paused, c.user_name, c.created_at, c.updated_at,
                          (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)
                   FROM conversations c ORDER BY c.updated_at DESC LIMIT ?"""
MESSAGES = ("SELECT id, conversation_id, ts, direction, kind, text, flow, step, intent, score, decision "
            "FROM messages WHERE id > ?")
PAUSED = "SELECT id FROM conversations WHERE paused = 1"
LAST_MESSAGE = "SELECT COALESCE(MAX(id), 0) FROM messages"
UNMATCHED = "SELECT ts, conversation_id, text, decision, candidates_json FROM unmatched ORDER BY id DESC LIMIT ?"


@dataclass(frozen=True)
class ConversationRow:
    id: str
    flow: str
    step: str
    active: bool
    paused: bool
    user_name: str
    created_at: float
    updated_at: float
    messages: int


@dataclass(frozen=True)
class MessageRow:
    """One transcript row (table ``messages``): what the store lists, what the agents' desk
    mirrors and its tools read (they leave the matcher's fields out: ``None``)."""

    id: int
    conversation_id: str
    ts: float
    direction: str
    kind: str
    text: str
    flow: str = ""
    step: str = ""
    intent: str | None = None
    score: float | None = None
    decision: str | None = None


def state_from_row(conversation_id: str, row: Sequence[Any] | None) -> State | None:
    if row is None:
        return None
    extra = json.loads(row[3] or "{}")
    return State(
        conversation_id=conversation_id,
        flow=row[0],
        step=row[1],
        seq=int(row[2]),
        values=dict(extra.get("values", {})),
        history=tuple(extra.get("history", ())),
        offer=tuple(extra.get("offer", ())),
        misses=int(extra.get("misses", 0)),
        active=bool(row[4]),
        paused=bool(row[5]),
        user_name=row[6],
        lang=extra.get("lang", "en"),
    )


def state_json(state: State) -> str:
    return json.dumps({
        "values": dict(state.values), "history": list(state.history), "offer": list(state.offer),
        "misses": state.misses, "lang": state.lang,
    }, ensure_ascii=False)


async def count(tx: Transaction, counts: Mapping[str, int], now: float) -> None:
    if counts:
        day = day_of(now)
        await tx.executemany(COUNT, [(day, name, n) for name, n in counts.items()])


async def write_turn(tx: Transaction, state: State, entries: Sequence[Entry], events: Sequence[str],
                     now: float) -> None:
    """A turn's writes inside ``tx``: its counters, the conversation, its transcript lines and
    the messages the matcher did not understand."""
    rows = await tx.fetchall(PREVIOUS, (state.conversation_id,))
    previous = (str(rows[0][0]), str(rows[0][1]), float(rows[0][2])) if rows else None
    await count(tx, turn_counts(previous, state, entries, events, now), now)
    await tx.execute(
        UPSERT,
        (state.conversation_id, state.flow, state.step, state.seq, state_json(state), int(state.active),
         int(state.paused), state.user_name, now, now),
    )
    if entries:
        await tx.executemany(
            INSERT_MESSAGE,
            [(state.conversation_id, now, e.direction.value, e.kind, e.text, e.intent, e.score,
              e.decision, e.flow, e.step) for e in entries],
        )
        unmatched = [e for e in entries if e.decision in ("reject", "suggest")]
        if unmatched:
            await tx.executemany(
                INSERT_UNMATCHED,
                [(state.conversation_id, now, e.text, e.decision or "",
                  json.dumps([[c, s] for c, s in e.candidates])) for e in unmatched],
            )


async def write_notes(tx: Transaction, conversation_id: str, entries: Sequence[Entry], now: float) -> None:
    """Transcript lines outside a turn, with the escalation notes' counters."""
    await tx.executemany(INSERT_NOTE, [(conversation_id, now, e.direction.value, e.kind, e.text) for e in entries])
    await count(tx, note_counts(entries), now)


def flags_update(active: bool | None, paused: bool | None) -> tuple[str, list[Any]] | None:
    sets, args = [], []
    if active is not None:
        sets.append("active = ?")
        args.append(int(active))
    if paused is not None:
        sets.append("paused = ?")
        args.append(int(paused))
    if not sets:
        return None
    return f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?", args


def messages_query(conversation_id: str | None, after_id: int, limit: int) -> tuple[str, list[Any]]:
    sql = MESSAGES
    args: list[Any] = [after_id]
    if conversation_id is not None:
        sql += " AND conversation_id = ?"
        args.append(conversation_id)
    sql += " ORDER BY id LIMIT ?"
    args.append(limit)
    return sql, args


def conversation_rows(rows: Sequence[Sequence[Any]]) -> list[ConversationRow]:
    return [ConversationRow(r[0], r[1], r[2], bool(r[3]), bool(r[4]), r[5], r[6], r[7], int(r[8])) for r in rows]


def unmatched_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[float, str, str, str, list[Any]]]:
    return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]
