"""What the Telegram door provides to the other features, and their wiring into ``run``.

* ``TelegramFileFetcher`` — the quote feature's ``FileFetcher``: downloads a photo the user
  sent (``getFile`` + the file URL), refusing files over Telegram's 20 MB download limit.
  It only ever downloads over HTTP(S) from the configured file API: a ``file_path`` that is
  absolute, climbs out (``..``) or names another host is refused — never read from disk
  (PTB's own ``download`` would read a local path that happens to exist).
* ``attach_features(service, runtime, settings)`` — called by ``python -m bot run`` before
  the service starts: the agents' desk (``bot.tg.agents_gateway.attach_agents``: its PTB
  handler goes in before the door's) and the quote outbox worker
  (``bot.escalation.attach_escalation``) with Telegram alerters: the agents' chat (through
  the desk) and the lab chat (``LAB_CHAT_ID``, through the door). Both start after getMe
  and stop after the last update in flight, before PTB shuts down.
"""

from __future__ import annotations

import logging
import mimetypes
from typing import Any
from urllib.parse import quote

from telegram.error import BadRequest, TelegramError

log = logging.getLogger(__name__)

DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API's getFile limit


class FileTooLargeError(Exception):
    """Fallback when the escalation package is not there to name its own."""


def _too_large() -> type[Exception]:
    try:
        from bot.escalation.ports import FileTooLarge

        return FileTooLarge
    except ImportError:  # pragma: no cover - the package ships with the bot
        return FileTooLargeError


class TelegramFileFetcher:
    def __init__(self, bot: Any, limit: int = DOWNLOAD_LIMIT) -> None:
        self.bot = bot
        self.limit = limit

    async def fetch(self, file_id: str) -> tuple[bytes, str] | None:
        """The file's bytes and MIME type; None when Telegram no longer has it."""
        try:
            file = await self.bot.get_file(file_id)
        except BadRequest as exc:
            if "too big" in exc.message.lower():
                raise _too_large()(f"file {file_id} is over {self.limit} bytes") from exc
            log.warning("getFile %s: %s", file_id, exc.message)
            return None
        except TelegramError as exc:
            log.warning("getFile %s failed: %s", file_id, exc)
            return None
        if file.file_size and file.file_size > self.limit:
            raise _too_large()(f"file {file_id} is {file.file_size} bytes")
        # PTB prefixes a relative file_path with the file API's URL, but leaves one that names
        # an existing local file as it is (and its download() would read that file)
        prefix = f"{self.bot.base_file_url}/"
        full = file.file_path or ""
        path = full[len(prefix) :] if full.startswith(prefix) else ""
        if not safe_file_path(path):
            log.warning("getFile %s answered a file path that is not a plain relative path: refused", file_id)
            return None
        url = prefix + quote(path)
        try:
            data = bytes(await self.bot.request.retrieve(url))
        except TelegramError as exc:
            log.warning("downloading %s failed: %s", file_id, exc)
            return None
        if len(data) > self.limit:
            raise _too_large()(f"file {file_id} is {len(data)} bytes")
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return data, mime


def safe_file_path(path: str) -> bool:
    """A Bot API ``file_path`` we download: relative, no ``..``, no scheme, no backslashes."""
    if not path or path.startswith(("/", "~")) or "\\" in path or ":" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


async def attach_features(service: Any, runtime: Any, settings: Any) -> None:
    """Wire the agents' desk and the quote outbox worker into a TelegramService."""
    desk = None
    try:
        from bot.tg.agents_gateway import attach_agents
    except ImportError:
        log.info("agents feature not installed")
    else:
        desk = attach_agents(service.application, runtime, settings, door=service.door)
        service.on_start.append(desk.start)
        service.on_stop.append(desk.close)
    try:
        from bot.escalation.ports import ChatAlerter
        from bot.escalation.service import attach_escalation
    except ImportError:
        log.info("quote feature not installed")
        return

    async def start_outbox() -> None:
        alerter = desk if desk is not None and desk.enabled else None
        lab = ChatAlerter(service.door.send_text, settings.lab_chat_id) if settings.lab_chat_id is not None else None
        hub = await attach_escalation(
            runtime, settings, fetcher=TelegramFileFetcher(service.application.bot), alerter=alerter, lab_notifier=lab
        )
        service.on_stop.insert(0, hub.close)  # stops after the desk (reverse order)

    service.on_start.append(start_outbox)
