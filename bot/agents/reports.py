"""What agents ask the database: statistics, rejected messages, search, transcripts.

Plain queries over the store's tables returning typed records; the agents' group (via
the desk, with texts from content/) and the terminal (``python -m bot stats`` ...) format
them. Works on any bot database, with or without an agents' group configured.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

from .registry import Line

_NOT_SYMPTOMS = ("", "main_menu", "common")
_LABELS = {"in": "user", "out": "bot", "agent": "agent", "note": "note"}


@dataclass(frozen=True)
class Stats:
    since: float
    conversations: int
    resolved: int  # reached "resolved" with no agent message
    escalated: int  # conversations with at least one escalation flag
    quotes: int
    top: tuple[tuple[str, int], ...]  # (flow id, conversations), most first
    matched: int  # user messages the matcher judged
    rejected: int
    unsure: int

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.matched if self.matched else 0.0

    @property
    def unsure_share(self) -> float:
        return self.unsure / self.matched if self.matched else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "conversations": self.conversations,
            "resolved_by_bot": self.resolved,
            "escalated": self.escalated,
            "quotes": self.quotes,
            "top_symptoms": [{"flow": f, "conversations": n} for f, n in self.top],
            "matched": self.matched,
            "rejected": self.rejected,
            "unsure": self.unsure,
            "rejected_share": round(self.rejected_share, 4),
            "unsure_share": round(self.unsure_share, 4),
        }


def start_of_day(now: float) -> float:
    """Local midnight of the day ``now`` falls in."""
    d = dt.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return d.timestamp()


async def _one(db: aiosqlite.Connection, sql: str, args: tuple[Any, ...]) -> Any:
    async with db.execute(sql, args) as cur:
        row = await cur.fetchone()
    return row[0] if row and row[0] is not None else 0


async def _has_table(db: aiosqlite.Connection, name: str) -> bool:
    return bool(await _one(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))


async def stats(db: aiosqlite.Connection, since: float) -> Stats:
    conversations = await _one(db, "SELECT COUNT(DISTINCT conversation_id) FROM messages WHERE ts >= ?", (since,))
    resolved = await _one(
        db,
        """
        SELECT COUNT(DISTINCT m.conversation_id) FROM messages m
        WHERE m.ts >= ? AND m.direction = 'out' AND m.flow = 'common' AND m.step = 'resolved'
          AND NOT EXISTS (SELECT 1 FROM messages a WHERE a.conversation_id = m.conversation_id
                          AND a.direction = 'agent' AND a.ts >= ?)""",
        (since, since),
    )
    escalated = await _one(
        db,
        "SELECT COUNT(DISTINCT conversation_id) FROM messages WHERE ts >= ? AND "
        "direction = 'note' AND kind LIKE 'escalation:%'",
        (since,),
    )
    if await _has_table(db, "quotes"):
        quotes = await _one(db, "SELECT COUNT(*) FROM quotes WHERE created_at >= ?", (since,))
    else:
        quotes = await _one(
            db,
            "SELECT COUNT(*) FROM messages WHERE ts >= ? AND direction = 'note' AND kind = 'escalation:quote_sent'",
            (since,),
        )
    async with db.execute(
        f"""SELECT flow, COUNT(DISTINCT conversation_id) AS n FROM messages
            WHERE ts >= ? AND direction = 'out' AND flow NOT IN ({",".join("?" * len(_NOT_SYMPTOMS))})
            GROUP BY flow ORDER BY n DESC, flow LIMIT 5""",
        (since, *_NOT_SYMPTOMS),
    ) as cur:
        top = tuple((str(r[0]), int(r[1])) for r in await cur.fetchall())
    async with db.execute(
        "SELECT COUNT(*), COALESCE(SUM(decision = 'reject'), 0), COALESCE(SUM(decision = 'suggest'), 0) "
        "FROM messages WHERE ts >= ? AND direction = 'in' AND decision IS NOT NULL",
        (since,),
    ) as cur:
        row = await cur.fetchone()
    matched, rejected, unsure = (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)
    return Stats(
        since,
        int(conversations),
        int(resolved),
        int(escalated),
        int(quotes),
        top,
        matched,
        rejected,
        unsure,
    )


@dataclass(frozen=True)
class Unmatched:
    ts: float
    conversation_id: str
    text: str
    decision: str  # reject | suggest
    candidates: tuple[tuple[str, float], ...]


async def unmatched(db: aiosqlite.Connection, limit: int = 20) -> list[Unmatched]:
    async with db.execute(
        "SELECT ts, conversation_id, text, decision, candidates_json FROM unmatched ORDER BY id DESC LIMIT ?",
        (limit,),
    ) as cur:
        rows = await cur.fetchall()
    out = []
    for ts, cid, text, decision, cand in rows:
        try:
            pairs = tuple((str(c[0]), float(c[1])) for c in json.loads(cand or "[]"))
        except (ValueError, TypeError, IndexError):
            pairs = ()
        out.append(Unmatched(float(ts), str(cid), str(text), str(decision), pairs))
    return out


@dataclass(frozen=True)
class Hit:
    line: Line
    user_name: str


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def find(db: aiosqlite.Connection, text: str, limit: int = 20, include_bot: bool = False) -> list[Hit]:
    """Newest lines containing ``text`` (case-insensitive for ASCII), plus matching user names."""
    directions = ("in", "agent", "note", "out") if include_bot else ("in", "agent", "note")
    pattern = _like(text.strip())
    async with db.execute(
        f"""SELECT m.id, m.conversation_id, m.ts, m.direction, m.kind, m.text, m.flow, m.step,
                   COALESCE(c.user_name, '')
            FROM messages m LEFT JOIN conversations c ON c.id = m.conversation_id
            WHERE m.direction IN ({",".join("?" * len(directions))})
              AND (m.text LIKE ? ESCAPE '\\' OR c.user_name LIKE ? ESCAPE '\\' OR m.conversation_id LIKE ? ESCAPE '\\')
            ORDER BY m.id DESC LIMIT ?""",
        (*directions, pattern, pattern, pattern, limit * 5),
    ) as cur:
        rows = await cur.fetchall()
    hits: list[Hit] = []
    by_name: set[str] = set()
    needle = text.strip().lower()
    for r in rows:
        line = Line(*r[:8])
        name = str(r[8])
        if needle in line.text.lower():
            hits.append(Hit(line, name))
        elif line.conversation_id not in by_name:  # a name/id match: show its latest line once
            by_name.add(line.conversation_id)
            hits.append(Hit(line, name))
        if len(hits) >= limit:
            break
    return hits


# -- transcripts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationInfo:
    id: str
    user_name: str
    flow: str
    step: str
    paused: bool
    active: bool
    created_at: float
    updated_at: float
    messages: int


async def conversations(db: aiosqlite.Connection, limit: int = 50) -> list[ConversationInfo]:
    async with db.execute(
        """SELECT c.id, c.user_name, c.flow, c.step, c.paused, c.active, c.created_at, c.updated_at,
                  (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)
           FROM conversations c ORDER BY c.updated_at DESC LIMIT ?""",
        (limit,),
    ) as cur:
        rows = await cur.fetchall()
    return [ConversationInfo(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), r[6], r[7], r[8]) for r in rows]


async def conversation(db: aiosqlite.Connection, conversation_id: str) -> ConversationInfo | None:
    async with db.execute(
        """SELECT c.id, c.user_name, c.flow, c.step, c.paused, c.active, c.created_at, c.updated_at,
                  (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)
           FROM conversations c WHERE c.id = ?""",
        (conversation_id,),
    ) as cur:
        r = await cur.fetchone()
    return ConversationInfo(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), r[6], r[7], r[8]) if r else None


async def transcript(db: aiosqlite.Connection, conversation_id: str) -> list[Line]:
    async with db.execute(
        "SELECT id, conversation_id, ts, direction, kind, text, flow, step FROM messages "
        "WHERE conversation_id = ? ORDER BY id",
        (conversation_id,),
    ) as cur:
        return [Line(*r) for r in await cur.fetchall()]


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def to_jsonl(lines: list[Line]) -> str:
    return "".join(
        json.dumps(
            {
                "id": ln.id,
                "conversation_id": ln.conversation_id,
                "ts": ln.ts,
                "time": iso(ln.ts),
                "who": _LABELS.get(ln.direction, ln.direction),
                "kind": ln.kind,
                "text": ln.text,
                "flow": ln.flow,
                "step": ln.step,
            },
            ensure_ascii=False,
        )
        + "\n"
        for ln in lines
    )


def to_markdown(info: ConversationInfo | None, conversation_id: str, lines: list[Line]) -> str:
    name = info.user_name if info and info.user_name else conversation_id
    out = [f"# Conversation with {name}", "", f"- id: `{conversation_id}`"]
    if info:
        out.append(f"- started: {iso(info.created_at)}; last activity: {iso(info.updated_at)}")
        out.append(f"- now at: `{info.flow}.{info.step}`" if info.flow else "- now at: (start)")
        if info.paused:
            out.append("- the bot is paused: a person has taken over")
    out.append(f"- lines: {len(lines)}")
    out.append("")
    for ln in lines:
        who = _LABELS.get(ln.direction, ln.direction)
        where = f" `{ln.flow}.{ln.step}`" if ln.flow and ln.direction == "out" else ""
        kind = "" if ln.kind in ("text", "reply") else f" ({ln.kind})"
        body = ln.text.replace("\n", "\n  > ")
        out.append(f"**{iso(ln.ts)} · {who}{kind}**{where}\n  > {body}\n")
    return "\n".join(out)
