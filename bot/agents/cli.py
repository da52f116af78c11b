"""The agents' tools in the terminal (no agents' group needed): ``python -m bot transcripts``,
``watch``, ``stats`` and ``unmatched``. Thin formatting over ``reports``; they open the bot's
database read-mostly (a second connection is fine next to a running bot: WAL mode), or the
PostgreSQL database of ``DATABASE_URL`` (``--db`` takes either).

    python -m bot transcripts                       # the latest conversations
    python -m bot transcripts show tg:123           # one conversation, as text (or #42, 42)
    python -m bot transcripts export tg:123 --format jsonl --out t.jsonl
    python -m bot transcripts export --all --format md --out transcripts/
    python -m bot transcripts forget tg:123         # erase one conversation (like /forget)
    python -m bot transcripts purge                 # apply RETENTION_DAYS now
    python -m bot watch [--conversation tg:123]     # follow new lines live (Ctrl-C stops)
    python -m bot stats [--days 7] [--weeks 4] [--json]
    python -m bot unmatched [--limit 30] [--json]
    python -m bot find Q-KRBMA                      # lines (the bot's too) containing the words

A conversation is named by its id (``tg:123``) or its short number (``#42`` or ``42``, as in
the agents' group). The SQL is in the store classes (``registry``, ``reports``, ``privacy``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bot.config import Settings
from bot.store import SQLiteStore, is_postgres, open_store
from bot.store.conversations import MessageRow

if TYPE_CHECKING:
    from bot.store.pgstore import PostgresStore

from . import privacy, reports
from .registry import Registry
from .reports_store import ReportStore

COMMANDS = ("transcripts", "watch", "stats", "unmatched", "find")
_WHO = {"in": "user ", "out": "bot  ", "agent": "agent", "note": "note "}


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("transcripts", help="list, show, export or erase conversations")
    p.add_argument("action", nargs="?", default="list", choices=("list", "show", "export", "forget", "purge"))
    p.add_argument(
        "conversation", nargs="?", help="a conversation id (tg:123) or number (#42, 42) (show, export, forget)"
    )
    p.add_argument("--all", action="store_true", help="export: every conversation")
    p.add_argument("--format", choices=("md", "jsonl"), default="md", help="export format (default md)")
    p.add_argument("--out", help="export: a file (one conversation) or a folder (--all); default stdout")
    p.add_argument("--limit", type=int, default=30, help="list: how many (default 30)")
    p.add_argument("--db", help="SQLite file or postgresql:// URL (default: DATABASE_URL, else BOT_DB)")
    p = sub.add_parser("watch", help="follow new transcript lines of all conversations live")
    p.add_argument("--conversation", help="only this conversation (tg:123, #42 or 42)")
    p.add_argument("--tail", type=int, default=20, help="show this many earlier lines first (default 20)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between looks (default 0.5)")
    p.add_argument("--db", help="SQLite file or postgresql:// URL (default: DATABASE_URL, else BOT_DB)")
    p = sub.add_parser("stats", help="conversations, resolved, escalated, quotes, top problems")
    p.add_argument("--days", type=float, default=7, help="period in days (default 7; today is also shown)")
    p.add_argument("--weeks", type=int, default=4, help="the week-by-week table: this many weeks (default 4)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--db", help="SQLite file or postgresql:// URL (default: DATABASE_URL, else BOT_DB)")
    p = sub.add_parser("unmatched", help="latest messages the matcher rejected or was unsure about")
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--json", action="store_true", help="JSON lines")
    p.add_argument("--db", help="SQLite file or postgresql:// URL (default: DATABASE_URL, else BOT_DB)")
    p = sub.add_parser("find", help="newest lines containing the words (users', agents', the bot's, notes)")
    p.add_argument("words", nargs="+")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--db", help="SQLite file or postgresql:// URL (default: DATABASE_URL, else BOT_DB)")


def run_command(command: str, settings: Settings, args: argparse.Namespace) -> int:
    db_path = args.db or settings.database
    if db_path != ":memory:" and not is_postgres(db_path) and not Path(db_path).exists():
        print(f"no database at {db_path} (set BOT_DB or use --db)", file=sys.stderr)
        return 2
    if command == "watch":
        return asyncio.run(_watch_main(db_path, args))
    return asyncio.run(_run(command, db_path, settings, args, sys.stdout))


async def _open(db_path: str) -> SQLiteStore | PostgresStore:
    return await open_store(db_path)


async def _run(command: str, db_path: str, settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    store = await _open(db_path)
    try:
        db = store.db
        if command == "stats":
            return await _stats(db, args, out)
        if command == "unmatched":
            return await _unmatched(db, args, out)
        if command == "find":
            return await _find(db, args, out)
        return await _transcripts(db, settings, args, out)
    finally:
        await store.close()


def _time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def format_line(line: MessageRow, name: str = "") -> str:
    t = dt.datetime.fromtimestamp(line.ts).strftime("%H:%M:%S")
    who = _WHO.get(line.direction, line.direction)
    kind = "" if line.kind in ("text", "reply") else f"[{line.kind}] "
    text = " ".join(line.text.split()) if line.direction == "out" else line.text.replace("\n", "\n        ")
    head = f"{line.conversation_id}{f' ({name})' if name else ''}"
    return f"{t} {head} {who} {kind}{text}"


async def _transcripts(db, settings: Settings, args: argparse.Namespace, out: TextIO) -> int:  # noqa: ANN001
    action = args.action
    if action == "list":
        rows = await reports.conversations(db, args.limit)
        if not rows:
            print("no conversations yet", file=out)
        for c in rows:
            flags = ("paused " if c.paused else "") + ("" if c.active else "blocked ")
            where = f"{c.flow}.{c.step}" if c.flow else "-"
            print(
                f"{c.id:<22} {c.user_name[:16]:<16} {c.messages:>5} lines  {_time(c.updated_at)}  {where} "
                f"{flags}".rstrip(),
                file=out,
            )
        return 0
    if action == "purge":
        n = await privacy.purge_expired(db, settings.retention_days, quote_retention_days=settings.quote_retention_days)
        print(f"purged {n} conversation(s) idle for more than {settings.retention_days} days", file=out)
        return 0
    if action == "export" and args.all:
        convs = await reports.conversations(db, 1_000_000)
        target = Path(args.out) if args.out else None
        if target is None:
            for c in convs:
                out.write(await _render(db, c.id, args.format))
            return 0
        target.mkdir(parents=True, exist_ok=True)
        for c in convs:
            name = c.id.replace(":", "_").replace("/", "_") + (".md" if args.format == "md" else ".jsonl")
            (target / name).write_text(await _render(db, c.id, args.format), encoding="utf-8")
        print(f"exported {len(convs)} conversation(s) to {target}", file=sys.stderr)
        return 0
    if not args.conversation:
        print(f"transcripts {action}: name a conversation id (see `python -m bot transcripts`)", file=sys.stderr)
        return 2
    cid = await Registry(db).conversation_of(args.conversation)
    if cid is None:
        print(f"no conversation {args.conversation}", file=sys.stderr)
        return 1
    if action == "forget":
        n = await privacy.forget_conversation(db, cid)
        print(f"deleted {n} row(s) of {cid}", file=out)
        return 0 if n else 1
    if await reports.conversation(db, cid) is None and not await reports.transcript(db, cid):
        print(f"no conversation {cid}", file=sys.stderr)
        return 1
    if action == "show":
        info = await reports.conversation(db, cid)
        name = info.user_name if info else ""
        for line in await reports.transcript(db, cid):
            print(format_line(line, name), file=out)
        return 0
    text = await _render(db, cid, args.format)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        out.write(text)
    return 0


async def _render(db, cid: str, fmt: str) -> str:  # noqa: ANN001
    lines = await reports.transcript(db, cid)
    if fmt == "jsonl":
        return reports.to_jsonl(lines)
    return reports.to_markdown(await reports.conversation(db, cid), cid, lines) + "\n"


async def _stats(db, args: argparse.Namespace, out: TextIO) -> int:  # noqa: ANN001
    now = time.time()
    today = await reports.stats(db, reports.start_of_day(now))
    period = await reports.stats(db, now - args.days * 86400)
    weeks = await reports.weekly(db, args.weeks, now)
    figures = await reports.desk_figures(db, reports.week_start(now) - (args.weeks - 1) * 7 * 86400)
    if args.json:
        print(
            json.dumps(
                {
                    "today": today.as_dict(),
                    f"last_{args.days:g}_days": period.as_dict(),
                    "weeks": [w.as_dict() for w in weeks],
                    f"last_{args.weeks}_weeks": figures.as_dict(),
                },
                ensure_ascii=False,
            ),
            file=out,
        )
        return 0
    for label, s in (("Today", today), (f"Last {args.days:g} days", period)):
        print(
            f"{label}: {s.conversations} conversations, {s.resolved} resolved by the bot, {s.escalated} "
            f"escalated, {s.quotes} quote request(s)",
            file=out,
        )
        if s.top:
            print("  top problems: " + ", ".join(f"{f} ({n})" for f, n in s.top), file=out)
        print(
            f"  not understood: {s.rejected_share:.0%} ({s.rejected} of {s.matched} messages); "
            f"unsure: {s.unsure_share:.0%}",
            file=out,
        )
    print(
        "\nWeek by week (weeks start on Monday; conv = conversations, fixed = resolved by the bot, "
        "esc = escalations, 1st resp / handle = mean agent times, rating = mean 1-5 (how many)):",
        file=out,
    )
    print(reports.week_table(weeks), file=out)
    print(f"\nLast {args.weeks} weeks:", file=out)
    print("  fixed after (step: times): " + (", ".join(f"{s}: {n}" for s, n in figures.fixed_after) or "-"), file=out)
    print(
        "  resolved per problem (resolved/entered): "
        + (", ".join(f"{fl} {r}/{e}" for fl, r, e in figures.resolved_per_flow) or "-"),
        file=out,
    )
    print("  takeovers per agent: " + (", ".join(f"{a} {n}" for a, n in figures.takeovers) or "-"), file=out)
    (bn, bm), (an, am) = figures.ratings["bot"], figures.ratings["agent"]
    print(
        f"  satisfaction: after a fix {'-' if bm is None else f'{bm:.1f}'} ({bn}), after an agent "
        f"{'-' if am is None else f'{am:.1f}'} ({an}), comments {figures.comments}",
        file=out,
    )
    return 0


async def _find(db, args: argparse.Namespace, out: TextIO) -> int:  # noqa: ANN001
    hits = await reports.find(db, " ".join(args.words), args.limit, include_bot=True)
    for h in hits:
        print(format_line(h.line, h.user_name), file=out)
    if not hits:
        print("nothing found", file=out)
    return 0 if hits else 1


async def _unmatched(db, args: argparse.Namespace, out: TextIO) -> int:  # noqa: ANN001
    items = await reports.unmatched(db, args.limit)
    for u in items:
        if args.json:
            print(
                json.dumps(
                    {
                        "ts": u.ts,
                        "conversation_id": u.conversation_id,
                        "text": u.text,
                        "decision": u.decision,
                        "candidates": [{"intent": i, "score": round(s, 1)} for i, s in u.candidates],
                    },
                    ensure_ascii=False,
                ),
                file=out,
            )
        else:
            cands = ", ".join(f"{i} {s:.0f}" for i, s in u.candidates[:3]) or "-"
            print(f"{_time(u.ts)} {u.decision:<7} {u.text!r}  ->  {cands}", file=out)
    if not items and not args.json:
        print("nothing rejected yet", file=out)
    return 0


# -- watch ---------------------------------------------------------------------------------------


async def watch(
    db_path: str,
    out: TextIO,
    stop: asyncio.Event,
    *,
    conversation: str | None = None,
    tail: int = 20,
    interval: float = 0.5,
) -> int:
    """Print new transcript lines as they are stored until ``stop`` is set; returns how many."""
    store = await _open(db_path)
    printed = 0
    names: dict[str, str] = {}
    try:
        reads = ReportStore(store.db)
        if conversation is not None:  # #42 / 42 / tg:123
            conversation = await Registry(store.db).conversation_of(conversation) or conversation
        cursor = await reads.watch_cursor(conversation, tail)
        while True:
            rows = [MessageRow(*r) for r in await reads.lines_after(cursor, conversation, 500)]
            for line in rows:
                cursor = line.id
                if line.conversation_id not in names:
                    names[line.conversation_id] = await reads.user_name(line.conversation_id)
                print(format_line(line, names[line.conversation_id]), file=out, flush=True)
                printed += 1
            if stop.is_set():
                return printed
            if len(rows) < 500:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
    finally:
        await store.close()


async def _watch_main(db_path: str, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    from bot.store.postgres import redact_url  # asyncpg only loaded here

    print(f"watching {redact_url(db_path)} (Ctrl-C stops)", file=sys.stderr)
    await watch(db_path, sys.stdout, stop, conversation=args.conversation, tail=args.tail, interval=args.interval)
    return 0
