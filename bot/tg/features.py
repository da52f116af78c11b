"""What the Telegram door offers the features (``bot.runtime.Ports``), and their start and
stop in ``run``.

* ``TelegramFileFetcher`` — the quote feature's ``FileFetcher``: downloads a photo the user
  sent (``getFile`` + the file URL), refusing files over Telegram's 20 MB download limit.
  It only ever downloads over HTTP(S) from the configured file API: a ``file_path`` that is
  absolute, climbs out (``..``) or names another host is refused — never read from disk
  (PTB's own ``download`` would read a local path that happens to exist).
* ``telegram_ports(service, settings, features)`` — the ports: the photo fetcher, the lab
  chat (``LAB_CHAT_ID``, through the door), the agents' group (``AGENT_CHAT_ID``:
  ``agents_gateway.PTBGateway``) and, with a group, the agents' feature as the quote
  feature's alerter.
* ``attach_features(service, runtime, settings, features)`` — called by ``python -m bot run``
  before the service starts: ``runtime.start(ports)`` after getMe (then the agents' PTB
  handler goes in, before the door's), ``runtime.stop()`` after the last update in flight,
  before PTB shuts down. The handler hands agents' updates to whichever desk the feature has
  now: with several processes only the leader has one (``bot.agents.feature``); the webhook
  of a follower refuses the agents' chat's updates (503), so the load balancer passes them
  to the leader (or Telegram sends them again).
"""

from __future__ import annotations

import dataclasses
import logging
import mimetypes
from typing import Any
from urllib.parse import quote

from telegram import Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import TypeHandler

from bot.config import Settings
from bot.escalation.ports import ChatAlerter, FileTooLarge
from bot.features import Features
from bot.runtime import Ports, Runtime

from .agents_gateway import AGENTS_GROUP, AgentUpdates, PTBGateway

log = logging.getLogger(__name__)

DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API's getFile limit


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
                raise FileTooLarge(f"file {file_id} is over {self.limit} bytes") from exc
            log.warning("getFile %s: %s", file_id, exc.message)
            return None
        except TelegramError as exc:
            log.warning("getFile %s failed: %s", file_id, exc)
            return None
        if file.file_size and file.file_size > self.limit:
            raise FileTooLarge(f"file {file_id} is {file.file_size} bytes")
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
            raise FileTooLarge(f"file {file_id} is {len(data)} bytes")
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return data, mime


def safe_file_path(path: str) -> bool:
    """A Bot API ``file_path`` we download: relative, no ``..``, no scheme, no backslashes."""
    if not path or path.startswith(("/", "~")) or "\\" in path or ":" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


class _CurrentDesk:
    """What the agents' handler submits to: the feature's desk of the moment (it comes and goes
    with leadership when several processes share the database)."""

    def __init__(self, agents: Any) -> None:
        self.agents = agents

    def _leading(self) -> Any:
        desk = self.agents.desk
        return desk if desk is not None and desk.enabled else None  # a follower's desk only records

    def submit(self, item: Any) -> None:
        desk = self._leading()
        if desk is not None:
            desk.submit(item)
        else:  # polling: only the leader polls; webhook: a follower refuses the agents' chat
            log.warning("an agents' group update reached a process that does not lead: not handled")

    async def is_agent(self, user_id: int) -> bool:
        desk = self._leading()
        return desk is not None and bool(await desk.is_agent(user_id))


def telegram_ports(service: Any, settings: Settings, features: Features) -> Ports:
    bot = service.application.bot
    group = None
    if settings.agent_chat_id is not None:
        group = PTBGateway(bot, settings.agent_chat_id, deliver=service.door.deliver)
    lab = ChatAlerter(service.door.send_text, settings.lab_chat_id) if settings.lab_chat_id is not None else None
    return Ports(
        file_fetcher=TelegramFileFetcher(bot),
        lab_chat=lab,
        alerter=features.agents if group is not None else None,  # else: the quote feature logs
        agents_group=group,
    )


async def attach_features(service: Any, runtime: Runtime, settings: Settings, features: Features) -> None:
    """Start the features with a TelegramService (after getMe), stop them before PTB shuts down."""
    ports = telegram_ports(service, settings, features)
    if features.agents not in runtime.features:  # left out by the caller: no agents' group
        ports = dataclasses.replace(ports, agents_group=None, alerter=None)

    async def start() -> None:
        await runtime.start(ports)
        if ports.agents_group is not None and settings.agent_chat_id is not None:
            handler = AgentUpdates(_CurrentDesk(features.agents), settings.agent_chat_id)  # type: ignore[arg-type]
            service.application.add_handler(TypeHandler(Update, handler), group=AGENTS_GROUP)

    service.on_start.append(start)
    service.on_stop.append(runtime.stop)
