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

from bot.store.counters import day_of

from .registry import Line

_NOT_SYMPTOMS = ("", "main_menu", "common")
_LABELS = {"in": "user", "out": "bot", "agent": "agent", "note": "note"}


@dataclass(frozen=True)
class Stats:
    since: float
    conversations: int  # conversations active each day, summed over the days
    resolved: int  # times the bot reached "resolved" ("that fixed it")
    escalated: int  # escalations the desk recorded (person asked for, still broken, quote sent/failed...)
    quotes: int
    top: tuple[tuple[str, int], ...]  # (flow id, times entered), most first
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
    """The figures since ``since``, from the anonymous counters (``bot/store/counters.py``): whole
    local days, the day ``since`` falls in included. An erasure does not change them."""
    if not await _has_table(db, "counters"):
        return Stats(since, 0, 0, 0, 0, (), 0, 0, 0)
    async with db.execute(
        "SELECT name, SUM(n) FROM counters WHERE day >= ? GROUP BY name", (day_of(since),)
    ) as cur:
        sums = {str(name): int(n) for name, n in await cur.fetchall()}
    flows = [(k.removeprefix("flow:"), n) for k, n in sums.items() if k.startswith("flow:")]
    top = tuple(sorted(((f, n) for f, n in flows if f not in _NOT_SYMPTOMS), key=lambda x: (-x[1], x[0]))[:5])
    rejected, unsure = sums.get("match:reject", 0), sums.get("match:suggest", 0)
    return Stats(
        since,
        sums.get("conversations", 0),
        sums.get("resolved", 0),
        sum(n for k, n in sums.items() if k.startswith("escalation:")),
        sums.get("event:quote_sent", 0),
        top,
        sums.get("match:accept", 0) + rejected + unsure,
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
