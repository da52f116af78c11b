"""The webhook endpoint (aiohttp) for ``python -m bot run --webhook``.

Telegram POSTs each update to the public URL; the reverse proxy forwards it here. Requests
without the right ``X-Telegram-Bot-Api-Secret-Token`` get 403 and are never parsed. A good
update is put on the PTB ``Application``'s update queue (the same path polling uses) and
answered 200 at once; a body that is JSON but not an update is logged and answered 200
too, so it cannot hold Telegram's queue. ``GET /healthz`` answers 200 with a small JSON
status while the bot runs and the database answers, 503 otherwise.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from telegram import Update
from telegram.ext import Application

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookServer:
    def __init__(
        self,
        application: Application,
        *,
        listen: str,
        port: int,
        path: str,
        secret: str,
        health: Callable[[], Awaitable[dict[str, Any]]],
    ) -> None:
        if not secret:
            raise ValueError("a webhook needs a secret token")
        self.application = application
        self.listen = listen
        self.port = port
        self.path = path if path.startswith("/") else f"/{path}"
        self._secret = secret.encode()
        self._health = health
        self._runner: web.AppRunner | None = None
        self.received = 0
        self.refused = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_post(self.path, self._on_update)
        app.router.add_get("/healthz", self._on_health)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None and server.sockets:  # type: ignore[union-attr]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("webhook listening on %s:%s%s", self.listen, self.port, self.path)

    async def stop(self) -> None:
        """Stop taking requests (in-flight ones finish)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_update(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            self.refused += 1
            log.warning("webhook request without the right secret token refused (from %s)", request.remote)
            return web.Response(status=403, text="forbidden")
        try:
            data = await request.json(loads=json.loads)
        except ValueError:
            return web.Response(status=400, text="body is not JSON")
        if not self.application.running:
            return web.Response(status=503, text="stopping")  # Telegram retries later
        try:
            update = Update.de_json(data, self.application.bot)
        except Exception as exc:  # not an update: answering non-2xx would hold Telegram's queue
            log.error("webhook body is not a valid update (%s): dropped", exc)
            return web.Response(text="ignored")
        self.received += 1
        await self.application.update_queue.put(update)
        return web.Response(text="ok")

    async def _on_health(self, request: web.Request) -> web.Response:
        try:
            status = await self._health()
        except Exception as exc:
            return web.json_response({"ok": False, "error": type(exc).__name__}, status=503)
        return web.json_response(status, status=200 if status.get("ok") else 503)
