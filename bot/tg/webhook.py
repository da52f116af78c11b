"""The webhook endpoint (aiohttp) for ``python -m bot run --webhook``.

Telegram POSTs each update to the public URL; the reverse proxy forwards it here. Requests
without the right ``X-Telegram-Bot-Api-Secret-Token`` (missing, wrong, or not even ASCII) get
403 and are never parsed. An update is stored in the inbox (``Intake.accept``, committed)
and only then answered 200: a kill before that makes Telegram deliver it again, a repeat is
ignored. A body that is JSON but has no usable ``update_id`` is logged and answered 200, so
it cannot hold Telegram's queue; a database that cannot store it answers 500 (Telegram
retries). ``refuse(update)`` true: 503 before anything is stored (a follower of several
instances leaves the agents' chat to the leader). ``GET /healthz`` answers 200 with a small JSON
status while the bot runs and the database answers, 503 otherwise.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from telegram.ext import Application

from .intake import Intake, update_id_of

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookServer:
    def __init__(
        self,
        application: Application,
        intake: Intake,
        *,
        listen: str,
        port: int,
        path: str,
        secret: str,
        health: Callable[[], Awaitable[dict[str, Any]]],
        refuse: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        if not secret:
            raise ValueError("a webhook needs a secret token")
        self.application = application
        self.intake = intake
        self.listen = listen
        self.port = port
        self.path = path if path.startswith("/") else f"/{path}"
        self._secret = secret.encode()
        self._health = health
        self._refuse = refuse
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

    def _secret_ok(self, request: web.Request) -> bool:
        try:  # aiohttp keeps undecodable header bytes as surrogates: they can never match
            given = request.headers.get(SECRET_HEADER, "").encode("utf-8")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(given, self._secret)

    async def _on_update(self, request: web.Request) -> web.Response:
        if not self._secret_ok(request):
            self.refused += 1
            log.warning("webhook request without the right secret token refused (from %s)", request.remote)
            return web.Response(status=403, text="forbidden")
        try:
            data = await request.json(loads=json.loads)
        except ValueError:
            return web.Response(status=400, text="body is not JSON")
        if not self.application.running:
            return web.Response(status=503, text="stopping")  # Telegram retries later
        if update_id_of(data) is None:  # answering non-2xx would hold Telegram's queue
            log.error("webhook body is not an update (no usable update_id): dropped")
            return web.Response(text="ignored")
        if self._refuse is not None and self._refuse(data):
            return web.Response(status=503, text="not this instance")  # the balancer tries another
        try:
            await self.intake.accept([data])
        except self.intake.store.errors as exc:
            log.error("could not store an update (%s): Telegram will send it again", exc)
            return web.Response(status=500, text="not stored")
        self.received += 1
        return web.Response(text="ok")

    async def _on_health(self, request: web.Request) -> web.Response:
        try:
            status = await self._health()
        except Exception as exc:
            return web.json_response({"ok": False, "error": type(exc).__name__}, status=503)
        return web.json_response(status, status=200 if status.get("ok") else 503)
