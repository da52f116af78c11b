"""Command line: ``python -m bot <command>``. The default command is ``chat``.

chat (terminal conversation), match, intents, check, bench, run (Telegram), outbox,
backup-db, migrate-db, transcripts, watch, stats, unmatched. Each command is a thin wrapper; the work
lives in the modules it calls.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

from bot.config import ConfigError, Settings
from bot.core.errors import ContentError
from bot.store import StoreError, is_postgres

log = logging.getLogger("bot")


def setup_logging(level: str, settings: Settings | None = None) -> None:
    from bot import logsafe

    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if level != "DEBUG":  # httpx logs every request at INFO: noise (the filter masks the token)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)
    s = settings or Settings()
    logsafe.install((s.telegram_token, s.smtp_password, s.webhook_secret), user_text=s.log_user_text)


UNDELIVERED_GRACE_S = 5.0  # on leaving the chat: how long the outbox may try to deliver first


async def _chat(settings: Settings, args: argparse.Namespace) -> int:
    """On leaving, a quote request of this chat that is still undelivered (the mail server is
    down) gets a few seconds, then the operator is told it waits in the database, and where."""
    from bot.features import standard_features
    from bot.runtime import open_runtime
    from bot.terminal import chat

    # the same database as `run` and `outbox` (BOT_DB): a quote sent here stays in the outbox
    # until delivered, and `python -m bot outbox` shows it
    db = args.db or settings.database
    undelivered: list[str] = []
    features = standard_features(settings, desk=False)  # no agents' group in a terminal
    runtime = await open_runtime(db, settings.content_dir, settings.flows_dir, settings.lang,
                                 features=features.all, settings=settings)
    db = runtime.store.path  # what we show: a PostgreSQL URL without its password
    hub = features.quotes
    try:
        # the same outbox worker as on Telegram: a quote sent here reaches the same inbox
        await runtime.start()
        banner = (f"Terminal chat (database: {db}). Type your problem; numbers press buttons; "
                  f"/help for commands, /restart to start over, /quit to leave.\n{hub.delivery_note()}")
        try:
            await chat(runtime.engine, f"term:{args.user}", banner=banner)
        finally:
            try:
                undelivered = await _deliver_first(hub, f"term:{args.user}")
            except (OSError, StoreError, sqlite3.Error) as exc:  # unsure: say so, the file stays anyway
                undelivered = [f"unknown ({exc})"]
    finally:
        await runtime.close()
    if undelivered:  # never a silent loss: the requests wait in this file for a worker
        print(f"\n{len(undelivered)} quote request(s) not delivered yet: {', '.join(undelivered)}. "
              f"They are kept in the database\n  {db}\n"
              f"and delivered by the next `python -m bot run` or `python -m bot chat` on it, or now with: "
              f"python -m bot outbox retry <reference> --db {db}", file=sys.stderr)
    return 0


async def _deliver_first(hub: object, conversation_id: str) -> list[str]:
    """Give the outbox a few seconds to deliver what this chat queued; the references of the
    chat's requests still waiting after that."""
    from bot.escalation.service import Escalation

    assert isinstance(hub, Escalation)
    deadline = time.monotonic() + UNDELIVERED_GRACE_S
    while True:
        async with hub.quotes() as qs:
            statuses = await qs.statuses_for(conversation_id, limit=50)
        waiting = sorted(s.ref for s in statuses if s.status != "delivered")
        if not waiting or hub.worker is None or time.monotonic() >= deadline:
            return waiting
        hub.kick()
        await asyncio.sleep(0.2)  # the worker's pace; a terminal user is leaving anyway


def _utf8_streams() -> None:
    """stdin read as UTF-8 with invalid bytes replaced (U+FFFD), stdout written as UTF-8,
    whatever the locale: one bad byte neither stops `match`/`chat` nor makes their output
    invalid UTF-8."""
    for stream in (sys.stdin, sys.stdout):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(encoding="utf-8", errors="replace")


async def _learned_rows(db: str) -> list:
    from bot.store import open_store
    from bot.store.learned import LearnedStore

    store = await open_store(db)
    try:
        return await LearnedStore(store).since(0)
    finally:
        await store.close()


def _match(settings: Settings, args: argparse.Namespace) -> int:
    from bot.features import standard_features
    from bot.runtime import load_knowledge

    matcher = load_knowledge(settings.content_dir, settings.flows_dir, settings.lang,
                             standard_features(settings).all, settings).matcher
    if args.db:  # what agents taught, as the running bot uses it
        matcher.learn((r.text, r.intent) for r in asyncio.run(_learned_rows(args.db)))
    for line in sys.stdin:
        text = line.rstrip("\n")
        r = matcher.match(text)
        out = {
            "text": text, "decision": r.decision, "intent": r.intent, "score": round(r.score, 1),
            "candidates": [{"intent": c.intent, "score": round(c.score, 1)} for c in r.candidates],
        }
        hit = matcher.answer(text, r.intent if r.decision == "accept" else None)
        if hit is not None:  # a direct question: the card's answer comes first (as in the engine)
            out.update(decision="accept", intent=hit.card.intent, score=hit.score, answer=hit.card.id)
        print(json.dumps(out, ensure_ascii=False), flush=True)
    return 0


async def _learn(settings: Settings, args: argparse.Namespace) -> int:
    from bot.core.matcher import INTENT_IDS
    from bot.learning import export_yaml, import_jsonl
    from bot.store import open_store
    from bot.store.learned import LearnedStore

    store = await open_store(args.db or settings.database, settings)
    db = store.path  # what we show: a PostgreSQL URL without its password
    try:
        learned = LearnedStore(store)
        if args.action == "import":
            if not args.file:
                print("learn import needs a FILE.jsonl", file=sys.stderr)
                return 2
            added, known, problems = await import_jsonl(learned, INTENT_IDS, Path(args.file))
            for p in problems:
                print(p, file=sys.stderr)
            if problems:
                print(f"nothing imported: {len(problems)} problem(s)", file=sys.stderr)
                return 1
            print(f"learned {added} new example(s) into {db} ({known} already known); "
                  "a running bot uses them within seconds")
            return 0
        text = export_yaml(await learned.since(0))
        target = args.file or str(settings.content_dir / "learned.yaml")
        if target == "-":
            sys.stdout.write(text)
        else:
            Path(target).write_text(text, encoding="utf-8")
            print(f"wrote {target}")
        return 0
    finally:
        await store.close()


def _intents(settings: Settings) -> int:
    from bot.core.matcher import Matcher

    matcher = Matcher.load(settings.content_dir / settings.lang / "intents.yaml")
    for intent, examples in matcher.examples().items():
        print(json.dumps({"intent": intent, "examples": list(examples)}, ensure_ascii=False))
    return 0


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from bot.features import standard_features
    from bot.runtime import check

    knowledge, problems = check(settings.content_dir, settings.flows_dir, settings.lang,
                                standard_features(settings).all)
    db = args.db
    if db and knowledge is not None:  # a text agents taught under two intents
        from bot.learning import conflicts

        problems += conflicts(asyncio.run(_learned_rows(db)), knowledge.matcher, db)
    for p in problems:
        print(p, file=sys.stderr)
    if problems or knowledge is None:
        print(f"check failed: {len(problems)} problem(s)", file=sys.stderr)
        return 2  # content is configuration: systemd's RestartPreventExitStatus=2 stops the loop
    steps = sum(len(f.steps) for f in knowledge.flows.flows.values())
    print(f"ok: {len(knowledge.flows.flows)} flows, {steps} steps, {len(knowledge.content.texts)} texts, "
          f"{len(knowledge.matcher.intents)} intents")
    return 0


async def _migrate_db(settings: Settings, args: argparse.Namespace) -> int:
    """Copy BOT_DB (or --db) into the PostgreSQL database --to; 1 when a table's counts differ,
    2 when the target is neither empty nor a copy of this database."""
    from bot.features import standard_features  # the features' migrations: only this command needs them
    from bot.store import schema
    from bot.store.copy import CopyRefused, copy_sqlite_to_postgres
    from bot.store.postgres import redact_url

    if not is_postgres(args.to):
        raise ConfigError(f"--to must be a postgresql:// URL, got {redact_url(args.to)}")
    source = args.db or settings.db_path
    owners = [(schema.OWNER, schema.BY_DIALECT)]
    owners += [(f.name, f.migrations()) for f in standard_features(settings, desk=False, deliver=False).all]
    from bot.tg.store import unsure_after_a_crash  # the door's leftovers of a kill -9: not to be sent again

    try:
        caught = unsure_after_a_crash(source)
    except sqlite3.Error as exc:
        raise StoreError(f"{source}: cannot read the messages a crash caught mid-send: {exc}") from exc
    if caught:
        print(f"{caught} message(s) were being sent when the bot last stopped: recorded as 'unsure', not to be sent again")
    try:
        report = await copy_sqlite_to_postgres(source, args.to, owners, connect_timeout=settings.db_connect_timeout)
    except CopyRefused as exc:
        print(f"migrate-db: {exc}", file=sys.stderr)
        return 2
    for table, (a, b) in report.counts.items():
        print(f"{table}: {a} rows in SQLite, {b} in PostgreSQL ({report.copied[table]} copied now)")
    for table, n in report.left_behind.items():
        print(f"{table}: {n} rows in SQLite, no PostgreSQL table (its feature has no PostgreSQL store yet)")
    bad = report.mismatched
    if bad:
        print(f"row counts differ: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"copied {source} to {redact_url(args.to)}: every table's row count matches")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    p_chat = sub.add_parser("chat", help="talk to the bot in the terminal")
    p_chat.add_argument("--db", help="SQLite file (default: BOT_DB, like run and outbox)")
    p_chat.add_argument("--user", default="local", help="who is talking (default: local)")
    p_match = sub.add_parser("match", help="match stdin lines to intents, JSON lines out")
    p_match.add_argument("--db", help="also use the examples agents taught, from this database")
    p_learn = sub.add_parser("learn", help="teach the matcher: import labelled messages, export what it learned")
    p_learn.add_argument("action", choices=["import", "export"])
    p_learn.add_argument("file", nargs="?", help="import: a JSON-lines file {\"text\": ..., \"intent\": ...}; "
                         "export: the YAML file to write (default content/learned.yaml, - for stdout)")
    p_learn.add_argument("--db", help="the bot's database (default BOT_DB)")
    sub.add_parser("intents", help="print the matcher's example phrases, JSON lines")
    p_check = sub.add_parser("check", help="validate content/ and flows/ (and, with a database, learned examples)")
    p_check.add_argument("--db", help="also check the examples agents taught, in this database")
    sub.add_parser("diagram", help="print a Mermaid graph of every flow (docs/flows.md)")
    p_bench = sub.add_parser("bench", help="measure matcher and engine speed")
    p_bench.add_argument("--telegram", action="store_true", help="also the Telegram door end to end")
    p_bench.add_argument("--real-limits", action="store_true",
                         help="with --telegram: 20 msgs/s for 30 s with Telegram's limits enforced")
    p_bench.add_argument("--kill", action="store_true",
                         help="with --telegram: kill -9 the real bot 10 times per mode under 200 users")
    p_bench.add_argument("--quotes", action="store_true", help="also the quote outbox drain")
    p_bench.add_argument("--postgres", action="store_true",
                         help="also the engine on PostgreSQL, one and two instances (needs the [dev] extra)")
    p_bench.add_argument("--agents", action="store_true", help="also agents' mirroring")
    # -- Telegram door hooks (logic in bot/tg/cli.py) --
    p_run = sub.add_parser("run", help="run the Telegram bot (long polling; --webhook to serve a webhook)")
    p_run.add_argument("--webhook", action="store_true",
                       help="serve a webhook (WEBHOOK_URL, WEBHOOK_SECRET, WEBHOOK_LISTEN/PORT)")
    p_migrate = sub.add_parser("migrate-db", help="copy the SQLite database into PostgreSQL (idempotent)")
    p_migrate.add_argument("--to", required=True, metavar="postgresql://…", help="the target database's URL")
    p_migrate.add_argument("--db", help="the SQLite file to copy (default BOT_DB)")
    p_backup = sub.add_parser("backup-db", help="copy the database safely while the bot runs")
    p_backup.add_argument("path", help="backup file (or an existing folder: a dated file inside)")
    p_backup.add_argument("--force", action="store_true", help="overwrite an existing backup file")
    # -- quote outbox hook (logic in bot/escalation/cli.py) --
    from bot.escalation.cli import add_parser as add_outbox_parser

    add_outbox_parser(sub)
    # -- agents' tools hooks (logic in bot/agents/cli.py) --
    from bot.agents.cli import add_parsers as add_agents_parsers

    add_agents_parsers(sub)
    args = parser.parse_args(argv)
    command = args.command or "chat"
    if command == "chat" and not hasattr(args, "db"):
        args = parser.parse_args(["chat", *(argv or [])])

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    # whatever the umask: the database, backups, exports and the Maildir hold users' words
    os.umask(os.umask(0o077) | 0o077)
    # the terminal chat shares the screen with the log: only problems, unless asked for more
    quiet = command in ("chat", "match", "intents", "learn", "check") and not settings.log_level_given
    setup_logging("WARNING" if quiet else settings.log_level, settings)
    if command in ("chat", "match"):
        _utf8_streams()
    try:
        if command == "chat":
            return asyncio.run(_chat(settings, args))
        if command == "match":
            return _match(settings, args)
        if command == "learn":
            return asyncio.run(_learn(settings, args))
        if command == "intents":
            return _intents(settings)
        if command == "check":
            return _check(settings, args)
        if command == "diagram":
            from bot.core.flows import load_flows
            from bot.diagram import mermaid

            flows, problems = load_flows(settings.flows_dir)
            if problems:
                raise ContentError(problems)
            print(mermaid(flows))
            return 0
        if command == "run":  # Telegram door hook
            from bot.tg.cli import run_command

            return run_command(settings, webhook=args.webhook)
        if command == "backup-db":  # Telegram door hook
            from bot.tg.cli import backup_command

            return backup_command(settings, args.path, force=args.force)
        if command == "outbox":  # quote outbox hook
            from bot.escalation.cli import outbox_command

            return asyncio.run(outbox_command(settings, args))
        if command in ("transcripts", "watch", "stats", "unmatched", "find"):  # agents' tools hook
            from bot.agents.cli import run_command as agents_command

            return agents_command(command, settings, args)
        if command == "migrate-db":
            return asyncio.run(_migrate_db(settings, args))
        if command == "bench":
            from bot.testing.bench import run_bench

            return asyncio.run(run_bench(settings, args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except ContentError as exc:
        print(f"content error (run `python -m bot check`):\n{exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
