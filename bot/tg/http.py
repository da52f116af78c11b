"""An aiohttp transport for python-telegram-bot (a ``telegram.request.BaseRequest``).

PTB's default transport is httpx; under load its pure-Python stack (httpx, httpcore, anyio,
h11) was ~40% of the door's CPU in the benchmark. aiohttp — already a dependency for the
webhook server — parses HTTP in C. Only the transport changes: PTB's ``BaseRequest`` still
turns status codes into exceptions (429 -> RetryAfter, 403 -> Forbidden, 400 -> BadRequest,
401/404 -> InvalidToken, 409 -> Conflict, 5xx -> NetworkError). This class maps transport
failures the way ``HTTPXRequest`` does: timeouts -> ``TimedOut``, anything else ->
``NetworkError``. Requests are POSTs: a JSON body, or multipart when files are attached.
``JSONRequestData`` carries a body that is already plain JSON values (the door's outgoing
messages: no per-field conversion on the way).
Environment proxies are honoured only with ``trust_env=True`` (never for a local server).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData


class JSONRequestData(RequestData):
    """A Bot API request body of plain JSON values (``BaseRequest.post`` takes it like PTB's
    own ``RequestData``; any transport can send it)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__([])
        self._payload = {k: v for k, v in payload.items() if v is not None}

    @property
    def parameters(self) -> dict[str, Any]:
        return self._payload

    @property
    def json_parameters(self) -> dict[str, str]:
        return {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in self._payload.items()}

    @property
    def json_payload(self) -> bytes:
        return json.dumps(self._payload, ensure_ascii=False).encode()

    @property
    def multipart_data(self) -> None:
        return None


JSON_HEADERS = {"Content-Type": "application/json"}


class AiohttpRequest(BaseRequest):
    __slots__ = (
        "_session",
        "_pool_size",
        "_timeouts",
        "_trust_env",
        "_media_write_timeout",
        "_pool_slots",
    )

    def __init__(
        self,
        *,
        connection_pool_size: int = 32,
        read_timeout: float | None = 10.0,
        write_timeout: float | None = 10.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 5.0,
        media_write_timeout: float | None = 20.0,
        trust_env: bool = False,
    ) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._pool_size = connection_pool_size
        self._timeouts = {
            "read": read_timeout,
            "write": write_timeout,
            "connect": connect_timeout,
            "pool": pool_timeout,
        }
        self._media_write_timeout = media_write_timeout
        self._trust_env = trust_env
        self._pool_slots: asyncio.Semaphore | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._timeouts["read"]

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._pool_size, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=self._trust_env,
                headers={"User-Agent": self.USER_AGENT},
            )
            self._pool_slots = asyncio.Semaphore(self._pool_size)

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _pick(self, value: Any, name: str) -> float | None:
        return self._timeouts[name] if isinstance(value, DefaultValue) else value

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed or self._pool_slots is None:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data else None
        read = self._pick(read_timeout, "read")
        write = self._pick(write_timeout, "write") if not files else self._media_write_timeout
        connect = self._pick(connect_timeout, "connect")
        pool = self._pick(pool_timeout, "pool")
        body: Any = None
        headers = None
        if files and request_data is not None:
            form = aiohttp.FormData()
            for name, value in request_data.json_parameters.items():
                form.add_field(name, value)
            for part, (filename, content, mimetype) in files.items():
                form.add_field(part, content, filename=filename, content_type=mimetype)
            body = form
        elif request_data is not None and request_data.parameters:
            # one JSON document, nested values as JSON (PTB's json_payload would encode them as
            # strings inside it: Telegram takes both, this is smaller and quicker)
            body, headers = json.dumps(request_data.parameters, ensure_ascii=False).encode(), JSON_HEADERS
        # aiohttp has no separate write timeout: the read timeout counts from the request's end
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=connect,
            sock_read=read,
            connect=None if pool is None or connect is None else pool + connect,
        )
        del write
        try:
            try:
                if self._pool_slots.locked():  # wait_for costs a task and a loop turn: only when needed
                    await asyncio.wait_for(self._pool_slots.acquire(), pool)
                else:
                    await self._pool_slots.acquire()
            except TimeoutError as err:
                raise TimedOut(
                    "Pool timeout: all connections are busy; the request was *not* sent to Telegram."
                ) from err
            try:
                async with self._session.request(method, url, data=body, headers=headers, timeout=timeout) as resp:
                    return resp.status, await resp.read()
            finally:
                self._pool_slots.release()
        except TimedOut:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as err:
            raise TimedOut from err
        except aiohttp.ClientError as err:
            raise NetworkError(f"aiohttp.{err.__class__.__name__}: {err}") from err


class NotSent(ConnectionError):
    """The cause of a transport error raised before any byte of the request was written
    (``bot.tg.wire``): sending it again cannot deliver it twice."""


def never_reached_server(exc: BaseException) -> bool:
    """True when a failed request certainly did not reach the Bot API (no pool slot, no
    connection), so sending it again cannot deliver it twice."""
    if "Pool timeout" in str(exc):
        return True
    cause = exc.__cause__
    if isinstance(cause, NotSent):
        return True
    if isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return True
    try:  # only PTB's httpx transport raises these; it is not loaded unless chosen
        import httpx
    except ImportError:  # pragma: no cover - PTB depends on httpx
        return False
    return isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def server_refused(exc: BaseException) -> bool:
    """True for an error the server answered with (5xx): the message was not delivered."""
    return exc.__cause__ is None and not isinstance(exc, TimedOut)
