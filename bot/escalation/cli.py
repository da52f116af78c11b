"""``python -m bot outbox``: the operator's view of quote deliveries.

    python -m bot outbox                 pending, in-flight and failed deliveries
    python -m bot outbox --all           ... and the delivered ones
    python -m bot outbox retry Q-7K3M9   deliver one again now (failed or waiting)

A thin wrapper over QuoteStore and OutboxWorker. A retry claims the row like the running
bot's worker does (a lease), so the two never send the same row at the same time. The
database is BOT_DB (as for `run` and `chat`) or --db; one that does not exist is an error
naming the path (exit 2), never a new empty database. Times shown are never in the past: a
row already due is "due now".
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bot.config import Settings
from bot.core.content import load_content
from bot.store import is_postgres

from .ports import OutboxRow
from .reference import normalize_reference
from .store import QuoteStore
from .transport import build_transport, recipients
from .worker import OutboxWorker

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("outbox", help="list pending and failed quote deliveries, or retry one")
    p.add_argument("action", nargs="?", choices=("list", "retry"), default="list")
    p.add_argument("ref", nargs="?", help="the quote reference to retry, e.g. Q-7K3M9")
    p.add_argument("--db", help="SQLite file (default: BOT_DB)")
    p.add_argument("--all", action="store_true", help="list delivered requests too")
    p.add_argument("--force", action="store_true", help="retry: send again even if delivered")


def _ts(value: float | None) -> str:
    if not value:
        return "-"
    return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


async def outbox_command(settings: Settings, args: argparse.Namespace) -> int:
    # the same default as `run` and `chat` (BOT_DB); a missing file is a typo, not a new database
    db = args.db or settings.database
    if db != ":memory:" and not is_postgres(db) and not Path(db).is_file():
        print(f"no database at {db} (set BOT_DB or use --db)", file=sys.stderr)
        return 2
    qs = await QuoteStore.open(db, settings)
    try:
        if args.action == "retry":
            return await _retry(settings, qs, args)
        return await _list(qs, args.all)
    finally:
        await qs.close()


def _when(r: OutboxRow, now: float) -> str:
    """When the row goes out: never a time in the past (a due row is due now)."""
    if r.status == "delivered":
        return f"delivered {_ts(r.delivered_at)}"
    if r.status == "sending":
        return f"sending (held by {r.owner})" if r.owner else "sending"
    if r.status == "failed":
        return "no automatic retry (outbox retry REF)"
    if r.next_attempt_at <= now:
        return "next: due now"
    return f"next {_ts(r.next_attempt_at)}"


async def _list(qs: QuoteStore, everything: bool) -> int:
    rows = await qs.outbox(None if everything else ("pending", "sending", "failed"))
    counts = await qs.counts()
    print(
        f"outbox: {counts.get('pending', 0)} pending, {counts.get('sending', 0)} sending, "
        f"{counts.get('failed', 0)} failed, {counts.get('delivered', 0)} delivered"
    )
    now = time.time()
    for r in rows:
        line = f"{r.ref}  {r.channel:<8}  {r.status:<9}  attempts={r.attempts}  {_when(r, now)}"
        if r.status == "failed" and r.alert_state:
            line += f"  alert={r.alert_state}"
        if r.last_error and r.status != "delivered":
            line += f"  error: {r.last_error[:160]}"
        print(line)
    return 0


async def _retry(settings: Settings, qs: QuoteStore, args: argparse.Namespace) -> int:
    ref = normalize_reference(args.ref or "")
    if ref is None:
        print(f"not a quote reference: {args.ref!r} (like Q-7K3M9)", file=sys.stderr)
        return 2
    rows = await qs.outbox(ref=ref)
    if not rows:
        print(f"no quote request {ref}", file=sys.stderr)
        return 1
    now = time.time()
    if all(r.status == "delivered" for r in rows) and not args.force:
        print(f"{ref} was delivered on {_ts(rows[0].delivered_at)}; use --force to send it again")
        return 0
    await qs.requeue(ref, now, channel="email", include_delivered=args.force)
    content, problems = load_content(settings.content_dir, settings.lang)
    if problems:
        log.warning("content has %d problem(s); run python -m bot check", len(problems))
    worker = OutboxWorker(
        qs,
        build_transport(settings),
        content,
        mail_from=settings.mail_from,
        lab_emails=recipients(settings),
        alerts=False,
    )
    claimed = await worker.run_once(ref=ref, channel="email")
    delivered = False
    for r in await qs.outbox(ref=ref):
        detail = r.accepted if r.status == "delivered" else r.last_error
        print(f"{r.ref}  {r.channel:<8}  {r.status:<9}  attempts={r.attempts}  {detail[:200]}")
        delivered = delivered or (r.channel == "email" and r.status == "delivered")
    if not claimed:
        print("(not due or held by the running bot's worker right now; it will deliver it)")
    return 0 if delivered else 1
