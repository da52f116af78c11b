"""The outgoing queue's own transport: a message leaves the moment its "sending" mark is committed.

Why: the Bot API has no idempotency key, so a message is marked ``sending`` (committed) before
its request leaves, and after a kill a ``sending`` message is not sent again (it may have
arrived). A kill between the mark and the request's bytes reaching the kernel therefore loses
that message. Through PTB's transports (aiohttp, httpx) that gap is several event-loop turns —
the mark's result comes back through the loop, then the client library awaits a connection,
writes headers and body in separate steps — each turn behind whatever else the loop runs
(turns, the matcher): milliseconds to tens of milliseconds under load.

``WireRequest`` (a ``telegram.request.BaseRequest``, so PTB still maps status codes to
exceptions) closes it: it takes a keep-alive connection and builds the request's bytes first,
then hands a ``write`` callable to the request's *guard* (``GuardedRequestData.guard``, the
store's ``mark_then``). The guard commits the mark and calls ``write`` with no ``await`` in
between; ``write`` puts the whole request into the socket at once (asyncio's transports try
``send()`` synchronously, TLS included). What is left is the time from the commit's return to
that ``send()`` on the same thread (see ``bot.tg.store``: microseconds for SQLite).

Failures, for the sender: a request that certainly did not leave (no free connection in time,
no connection, the guard failed, the connection was closed before the write) raises
``NetworkError`` caused by ``NotSent`` (``bot.tg.http.never_reached_server``: sent again
later); once written, a lost connection or a read timeout means "it may have arrived".

A connection idle longer than ``idle_for`` (well under servers' keep-alive time) or readable
while idle (the server closed it, or sent something unasked) is not reused: a request written
into a connection the server is closing would be lost without a trace. No proxy support: the
sender uses this transport only when no HTTP(S) proxy applies (``usable_for``), otherwise PTB's
with the mark just before the request (the wider gap). HTTP/1.1 is parsed by ``h11``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import select
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import h11
from telegram._utils.defaultvalue import DefaultValue
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

from .http import JSON_HEADERS, JSONRequestData, NotSent

#: ``guard(write)``: commit what must hold before the request leaves, then call ``write()``
#: with no ``await`` in between; if it raises, ``write`` was not called (or raised ``NotSent``)
Guard = Callable[[Callable[[], None]], Awaitable[None]]


class GuardedRequestData(JSONRequestData):
    """A JSON request body with the guard that must run right before its bytes leave."""

    def __init__(self, payload: dict[str, Any], guard: Guard) -> None:
        super().__init__(payload)
        self.guard = guard


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(h11.CLIENT)
        self.response: asyncio.Future[tuple[int, bytes]] | None = None
        self.status = 0
        self.body: list[bytes] = []
        self.closed = False
        self.idle_since = time.monotonic()

    # -- asyncio callbacks --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.h11.receive_data(data)
            self._events()
        except h11.RemoteProtocolError as exc:
            self._fail(NetworkError(f"bad HTTP answer from the Bot API: {exc}"))

    def eof_received(self) -> bool | None:
        with contextlib.suppress(h11.RemoteProtocolError):
            self.h11.receive_data(b"")
            self._events()
        self._fail(NetworkError("the Bot API closed the connection before answering"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(NetworkError(f"connection to the Bot API lost: {exc or 'closed'}"))

    # -- the exchange --
    def _events(self) -> None:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Response):
                self.status = event.status_code
            elif isinstance(event, h11.Data):
                self.body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                if self.response is not None and not self.response.done():
                    self.response.set_result((self.status, b"".join(self.body)))
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._fail(NetworkError("the Bot API closed the connection before answering"))
                return

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.response is not None and not self.response.done():
            self.response.set_exception(exc)

    def usable(self, idle_for: float) -> bool:
        """Not closed, not idle too long, and nothing readable (a FIN or stray bytes)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        if time.monotonic() - self.idle_since > idle_for:
            return False
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
        return not readable

    def prepare(self, method: str, host: str, target: str, body: bytes | None, headers: dict[str, str]) -> bytes:
        self.status, self.body = 0, []
        self.response = asyncio.get_running_loop().create_future()
        fields = [("Host", host), *headers.items()]
        if body is not None:
            fields.append(("Content-Length", str(len(body))))
        out = self.h11.send(h11.Request(method=method, target=target, headers=fields)) or b""
        if body:
            out += self.h11.send(h11.Data(data=body)) or b""
        out += self.h11.send(h11.EndOfMessage()) or b""
        return out

    def write(self, data: bytes) -> None:
        """Into the socket now (asyncio sends at once when nothing is buffered)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise NotSent("the connection closed before the request was written")
        self.transport.write(data)

    def reusable(self) -> bool:
        if self.closed or self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
            return False
        self.h11.start_next_cycle()
        self.response = None
        self.idle_since = time.monotonic()
        return True

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class WireRequest(BaseRequest):
    """PTB transport for the outgoing queue (see the module docstring)."""

    __slots__ = ("_idle", "_slots", "_pool_size", "_timeouts", "_idle_for", "_ssl", "_open")

    def __init__(
        self,
        *,
        connection_pool_size: int = 32,
        read_timeout: float | None = 10.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 5.0,
        idle_for: float = 15.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._timeouts = {"read": read_timeout, "connect": connect_timeout, "pool": pool_timeout}
        self._idle_for = idle_for
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._slots: asyncio.Semaphore | None = None
        self._ssl: ssl.SSLContext | None = None

    @staticmethod
    def usable_for(url: str) -> bool:
        """False when an HTTP(S) proxy from the environment applies to ``url`` (not supported)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host == "localhost":
            return True
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_loopback:
                return True
        proxies = urllib.request.getproxies()
        return not (proxies.get(parts.scheme) or proxies.get("all")) or bool(urllib.request.proxy_bypass(host))

    @property
    def read_timeout(self) -> float | None:
        return self._timeouts["read"]

    async def initialize(self) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._pool_size)

    async def shutdown(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        self._slots = None

    def _pick(self, value: Any, name: str) -> float | None:
        return self._timeouts[name] if isinstance(value, DefaultValue) else value

    async def _connection(self, key: tuple[str, str, int], connect_timeout: float | None) -> _Connection:
        idle = self._idle.setdefault(key, [])
        while idle:
            conn = idle.pop()
            if conn.usable(self._idle_for):
                return conn
            conn.close()
            self._open.discard(conn)
        scheme, host, port = key
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port, ssl=context, server_hostname=host if context else None),
                connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise NetworkError(f"cannot connect to the Bot API: {exc!r}") from NotSent(str(exc))
        self._open.add(conn)
        return conn

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
        if self._slots is None:
            raise RuntimeError("This WireRequest is not initialized!")
        if request_data is not None and request_data.multipart_data:
            raise NetworkError("the outgoing queue's transport sends JSON only") from NotSent("multipart")
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        host = parts.netloc.rpartition("@")[2]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = None
        headers = {"User-Agent": self.USER_AGENT}
        if request_data is not None and request_data.parameters:
            body = request_data.json_payload
            headers.update(JSON_HEADERS)
        guard: Guard | None = getattr(request_data, "guard", None)
        pool = self._pick(pool_timeout, "pool")
        try:
            await asyncio.wait_for(self._slots.acquire(), pool) if self._slots.locked() else await self._slots.acquire()
        except TimeoutError as exc:
            raise TimedOut("Pool timeout: all connections are busy; the request was *not* sent to Telegram.") from exc
        conn: _Connection | None = None
        try:
            conn = await self._connection(key, self._pick(connect_timeout, "connect"))
            data = conn.prepare(method, host, target, body, headers)
            response = conn.response
            assert response is not None
            try:
                if guard is None:
                    conn.write(data)
                else:
                    await guard(lambda: conn.write(data))  # type: ignore[union-attr]
            except NotSent as exc:
                raise NetworkError(f"not sent: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - the guard (the database) failed: nothing was written
                raise NetworkError(f"not sent: {exc!r}") from NotSent(repr(exc))
            # from here on the request may have reached Telegram
            try:
                status, payload = await asyncio.wait_for(asyncio.shield(response), self._pick(read_timeout, "read"))
            except TimeoutError as exc:
                raise TimedOut("no answer from the Bot API in time (the request may have arrived)") from exc
            if conn.reusable():
                self._idle.setdefault(key, []).append(conn)
                conn = None
            return status, payload
        finally:
            if conn is not None:
                conn.close()
                self._open.discard(conn)
            self._slots.release()
