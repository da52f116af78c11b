"""What agents ask the database: statistics (today, a period, week by week, the desk's
figures), rejected messages, search, transcripts.

Typed records over the store's tables (the SQL is in ``reports_store.ReportStore``); the
agents' group (via the desk, with texts from content/) and the terminal (``python -m bot
stats`` ...) format them. Works on any bot database, with or without an agents' group.
Every figure comes from the anonymous counters, so erasing a person changes none of them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bot.store.conversations import MessageRow
from bot.store.counters import day_of

from .reports_store import ReportStore

_NOT_SYMPTOMS = ("", "main_menu", "common", "feedback")
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


async def stats(db: aiosqlite.Connection, since: float) -> Stats:
    """The figures since ``since``, from the anonymous counters (``bot/store/counters.py``): whole
    local days, the day ``since`` falls in included. An erasure does not change them."""
    sums = await ReportStore(db).counter_sums(day_of(since))
    if not sums:
        return Stats(since, 0, 0, 0, 0, (), 0, 0, 0)
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


def _avg(total: int, n: int) -> float | None:
    return total / n if n else None


@dataclass(frozen=True)
class Week:
    """One week's figures (Monday to Sunday, local days) from the anonymous counters."""

    start: str  # the Monday, YYYY-MM-DD
    conversations: int
    resolved: int  # the bot reached "that fixed it"
    escalated: int
    takeovers: int
    first_response_s: float | None  # mean seconds from an escalation / unanswered message to an agent's reply
    handle_s: float | None  # mean seconds from takeover to hand-back
    csat_n: int
    csat: float | None  # mean rating 1-5 (the bot's and the agents' together)

    def as_dict(self) -> dict[str, Any]:
        return {
            "week": self.start,
            "conversations": self.conversations,
            "resolved_by_bot": self.resolved,
            "escalated": self.escalated,
            "takeovers": self.takeovers,
            "first_response_s": None if self.first_response_s is None else round(self.first_response_s, 1),
            "handle_s": None if self.handle_s is None else round(self.handle_s, 1),
            "ratings": self.csat_n,
            "satisfaction": None if self.csat is None else round(self.csat, 2),
        }


@dataclass(frozen=True)
class DeskFigures:
    """A period's breakdowns: step analytics, resolution per flow, takeovers per agent, ratings."""

    fixed_after: tuple[tuple[str, int], ...]  # (flow.step, times the user said "fixed" right after it)
    resolved_per_flow: tuple[tuple[str, int, int], ...]  # (flow, resolved in it, times entered)
    takeovers: tuple[tuple[str, int], ...]  # (agent, takeovers)
    ratings: dict[str, tuple[int, float | None]]  # bot / agent -> (how many, mean)
    comments: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "fixed_after": [{"step": s, "times": n} for s, n in self.fixed_after],
            "resolved_per_flow": [{"flow": f, "resolved": r, "entered": e} for f, r, e in self.resolved_per_flow],
            "takeovers_per_agent": [{"agent": a, "takeovers": n} for a, n in self.takeovers],
            "ratings": {k: {"n": n, "mean": None if m is None else round(m, 2)} for k, (n, m) in self.ratings.items()},
            "comments": self.comments,
        }


def week_start(ts: float) -> float:
    """Local midnight of the Monday of the week ``ts`` falls in."""
    d = dt.datetime.fromtimestamp(ts).replace(hour=0, minute=0, second=0, microsecond=0)
    return (d - dt.timedelta(days=d.weekday())).timestamp()


def _ratings(sums: dict[str, int], who: str | None = None) -> tuple[int, float | None]:
    n = total = 0
    for k, c in sums.items():
        parts = k.split(":")
        if len(parts) == 3 and parts[0] == "csat" and parts[2].isdigit() and who in (None, parts[1]):
            n += c
            total += c * int(parts[2])
    return n, _avg(total, n)


async def weekly(db: aiosqlite.Connection, weeks: int, now: float) -> list[Week]:
    """The last ``weeks`` weeks (this one included), oldest first."""
    first = week_start(now) - (weeks - 1) * 7 * 86400
    starts = [dt.date.fromtimestamp(first + i * 7 * 86400 + 3600 * 12) for i in range(weeks)]
    per: dict[str, dict[str, int]] = {d.isoformat(): {} for d in starts}
    for day, name, n in await ReportStore(db).counter_days(day_of(first)):
        d = dt.date.fromisoformat(day)
        key = (d - dt.timedelta(days=d.weekday())).isoformat()
        if key in per:
            per[key][name] = per[key].get(name, 0) + n
    out = []
    for key, c in per.items():
        n, mean = _ratings(c)
        out.append(
            Week(
                key,
                c.get("conversations", 0),
                c.get("resolved", 0),
                sum(v for k, v in c.items() if k.startswith("escalation:")),
                c.get("takeover", 0),
                _avg(c.get("first_response_s", 0), c.get("first_response_n", 0)),
                _avg(c.get("handle_s", 0), c.get("handle_n", 0)),
                n,
                mean,
            )
        )
    return out


async def desk_figures(db: aiosqlite.Connection, since: float, top: int = 8) -> DeskFigures:
    """Breakdowns since ``since`` (whole local days)."""
    sums = await ReportStore(db).counter_sums(day_of(since))
    fixed = sorted(((k[6:], n) for k, n in sums.items() if k.startswith("fixed:")), key=lambda x: (-x[1], x[0]))
    per_flow: dict[str, int] = {}
    for step, n in fixed:
        flow = step.partition(".")[0]
        per_flow[flow] = per_flow.get(flow, 0) + n
    resolved = sorted(
        ((f, r, sums.get(f"flow:{f}", 0)) for f, r in per_flow.items()), key=lambda x: (-x[1], x[0])
    )
    agents = sorted(
        ((k[9:], n) for k, n in sums.items() if k.startswith("takeover:")), key=lambda x: (-x[1], x[0])
    )
    return DeskFigures(
        tuple(fixed[:top]),
        tuple(resolved[:top]),
        tuple(agents[:top]),
        {"bot": _ratings(sums, "bot"), "agent": _ratings(sums, "agent")},
        sums.get("csat:comment", 0),
    )


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def week_table(weeks: list[Week]) -> str:
    """A plain-text table, one row per week (monospace: the group's <pre>, the terminal)."""
    head = ("week", "conv", "fixed", "esc", "takeov", "1st resp", "handle", "rating")
    rows = [head]
    for w in weeks:
        rating = "-" if w.csat is None else f"{w.csat:.1f} ({w.csat_n})"
        rows.append((
            w.start[5:],
            str(w.conversations),
            str(w.resolved),
            str(w.escalated),
            str(w.takeovers),
            fmt_duration(w.first_response_s),
            fmt_duration(w.handle_s),
            rating,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)) for r in rows
    )


@dataclass(frozen=True)
class Unmatched:
    ts: float
    conversation_id: str
    text: str
    decision: str  # reject | suggest
    candidates: tuple[tuple[str, float], ...]


async def unmatched(db: aiosqlite.Connection, limit: int = 20) -> list[Unmatched]:
    rows = await ReportStore(db).unmatched_rows(limit)
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
    line: MessageRow
    user_name: str


async def find(db: aiosqlite.Connection, text: str, limit: int = 20, include_bot: bool = False) -> list[Hit]:
    """Newest lines containing ``text`` (case-insensitive for ASCII), plus matching user names."""
    directions = ("in", "agent", "note", "out") if include_bot else ("in", "agent", "note")
    rows = await ReportStore(db).find_rows(text.strip(), directions, limit * 5)
    hits: list[Hit] = []
    by_name: set[str] = set()
    needle = text.strip().lower()
    for r in rows:
        line = MessageRow(*r[:8])
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
    rows = await ReportStore(db).conversation_rows(limit)
    return [ConversationInfo(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), r[6], r[7], r[8]) for r in rows]


async def conversation(db: aiosqlite.Connection, conversation_id: str) -> ConversationInfo | None:
    r = await ReportStore(db).conversation_row(conversation_id)
    return ConversationInfo(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), r[6], r[7], r[8]) if r else None


async def transcript(db: aiosqlite.Connection, conversation_id: str) -> list[MessageRow]:
    return [MessageRow(*r) for r in await ReportStore(db).transcript_rows(conversation_id)]


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def to_jsonl(lines: list[MessageRow]) -> str:
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


def to_markdown(info: ConversationInfo | None, conversation_id: str, lines: list[MessageRow]) -> str:
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
