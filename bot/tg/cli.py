"""``python -m bot run [--webhook]`` and ``python -m bot backup-db PATH``: the logic behind
the two CLI hooks in ``bot/__main__.py``.

``run`` opens the runtime (content, flows, the SQLite store), starts the Telegram service and
waits for SIGTERM/SIGINT; then it stops taking updates, finishes those in flight and closes
the database. Exit codes: 0 after a clean stop, 2 for a missing/rejected token or missing
webhook settings, 1 when the Bot API cannot be reached at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from bot.config import Settings

log = logging.getLogger(__name__)

NO_TOKEN = """\
No Telegram bot token: set TELEGRAM_BOT_TOKEN (or TELEGRAM_BOT_TOKEN_FILE, a file holding it).

How to get one (two minutes):
  1. In Telegram, open a chat with @BotFather and send /newbot.
  2. Choose a display name and a username ending in "bot".
  3. BotFather answers with a token like 123456789:AAE...; keep it secret.
  4. Start the bot:  TELEGRAM_BOT_TOKEN='<your token>' python -m bot run

Just want to try the conversation? No token needed:  python -m bot chat
"""

NO_WEBHOOK_URL = """\
Webhook mode needs WEBHOOK_URL: the public https:// address Telegram should post to
(e.g. https://bot.example.com/telegram), and WEBHOOK_SECRET (1-256 characters of
A-Z a-z 0-9 _ -). Without a public address, run long polling instead:  python -m bot run
"""


def run_command(settings: Settings, *, webhook: bool = False) -> int:
    if not settings.telegram_token:
        print(NO_TOKEN, file=sys.stderr, end="")
        return 2
    if webhook and not settings.webhook_url:
        print(NO_WEBHOOK_URL, file=sys.stderr, end="")
        return 2
    if webhook and not settings.webhook_url.startswith("https://"):
        log.warning("WEBHOOK_URL is not https://: Telegram only delivers to HTTPS webhooks")
    return asyncio.run(run(settings, webhook=webhook))


async def run(settings: Settings, *, webhook: bool = False, stop: asyncio.Event | None = None) -> int:
    # deferred: `python -m bot backup-db` shares this module and must not load PTB and every feature
    from telegram.error import BadRequest, InvalidToken, NetworkError

    from bot.features import standard_features
    from bot.runtime import open_runtime
    from bot.store.leader import leadership_for

    from .features import attach_features
    from .service import TelegramService

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    api_host = urlsplit(settings.telegram_base_url).netloc  # never the token
    features = standard_features(settings)
    # several processes on one PostgreSQL database: one of them (per bot) polls, runs the
    # agents' desk, timers and retention; SQLite: this one
    bot_id = settings.telegram_token.split(":", 1)[0]  # the bot's public id, never the secret part
    leadership = leadership_for(settings.database_url, key=f"bot:{bot_id}")
    runtime = await open_runtime(settings.database, settings.content_dir, settings.flows_dir, settings.lang,
                                 features=features.all, settings=settings, leadership=leadership)
    log.info("database: %s", runtime.store.path)
    service: TelegramService | None = None
    code = 0
    try:
        service = TelegramService(settings, runtime, webhook=webhook, on_fatal=lambda exc: stop.set())
        try:
            await attach_features(service, runtime, settings, features)
            await service.start()
        except InvalidToken:
            log.error("the Bot API at %s rejected the token (401): check TELEGRAM_BOT_TOKEN", api_host)
            return 2
        except BadRequest as exc:  # e.g. setWebhook refused the URL
            log.error("the Bot API at %s refused the set-up: %s", api_host, exc.message)
            return 2
        except NetworkError as exc:
            log.error("cannot reach the Bot API at %s: %s", api_host, exc)
            return 1
        except OSError as exc:  # the webhook port is taken, or not ours to bind
            log.error("cannot listen on %s:%s: %s", settings.webhook_listen, settings.webhook_port, exc.strerror or exc)
            return 1
        await stop.wait()
        if service.fatal is not None:
            code = 2
        log.info("stopping: no new updates; finishing %d in flight", service.door.in_flight)
    finally:
        try:
            if service is not None:
                await service.stop()
        finally:
            await runtime.close()
            log.info("database closed")
    return code


def backup_command(settings: Settings, target: str, *, force: bool = False) -> int:
    return asyncio.run(backup_db(settings.db_path, target, force=force))


async def backup_db(db_path: str, target: str, *, force: bool = False) -> int:
    """Copy the live database with SQLite's online backup API (safe while the bot runs)."""
    from bot.store import SQLiteStore  # deferred like run()'s imports: only this command needs it

    src = Path(db_path)
    if not src.is_file():
        print(f"no database at {src} (set BOT_DB to the bot's database file)", file=sys.stderr)
        return 1
    dest = Path(target)
    if target.endswith(("/", os.sep)) or dest.is_dir():  # a folder (created if needed): a new dated file
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = dest / f"{src.stem}-{stamp}.db"
        n = 1
        while dest.exists():  # two backups within a second
            n += 1
            dest = dest.with_name(f"{src.stem}-{stamp}-{n}.db")
    if dest.exists() and not force:
        print(f"{dest} exists; choose another path or add --force", file=sys.stderr)
        return 1
    if dest.resolve() == src.resolve():
        print("the backup cannot overwrite the database itself", file=sys.stderr)
        return 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    store = await SQLiteStore.open(src)
    try:
        await store.backup_to(part)
    finally:
        await store.close()
    try:
        con = sqlite3.connect(part)
        try:
            con.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            result = con.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as exc:
        part.unlink(missing_ok=True)
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    if result != "ok":
        part.unlink(missing_ok=True)
        print(f"backup failed the integrity check: {result}", file=sys.stderr)
        return 1
    os.replace(part, dest)
    print(f"backed up {src} to {dest} ({dest.stat().st_size} bytes)")
    return 0
