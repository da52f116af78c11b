"""What the Telegram door provides to the other features, and their wiring into ``run``.

* ``TelegramFileFetcher`` — the quote feature's ``FileFetcher``: downloads a photo the user
  sent (``getFile`` + the file URL), refusing files over Telegram's 20 MB download limit.
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
        data = bytes(await file.download_as_bytearray())
        mime = mimetypes.guess_type(file.file_path or "")[0] or "application/octet-stream"
        return data, mime


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
