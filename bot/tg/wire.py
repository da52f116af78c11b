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
with the mark just before the request (the wider gap). Nor is a connection reused after an answer
that says ``Connection: close``, one whose body ended with the connection, or bytes nobody asked
for (before the request was written, after its answer).

HTTP/1.1: the request is built here (``request_head``: request line, Host, User-Agent,
Connection, Content-Type, Content-Length — all from config and code, and a CR, LF, space or
control character in the method, host or target is refused, so no header can be injected);
answers are parsed by ``httptools`` (llhttp, in C): Content-Length, chunked, or read until the
server closes; an answer over ``MAX_ANSWER`` bytes or malformed fails the request ("may have
arrived") and drops the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import select
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httptools
from telegram._utils.defaultvalue import DefaultValue
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

from .http import JSONRequestData, NotSent

#: ``guard(write)``: commit what must hold before the request leaves, then call ``write()``
#: with no ``await`` in between; if it raises, ``write`` was not called (or raised ``NotSent``)
Guard = Callable[[Callable[[], None]], Awaitable[None]]

MAX_ANSWER = 8 * 1024 * 1024  # bytes of an answer's headers and body (the Bot API's are a few KB)
_TOKEN = re.compile(r"[!-~]+")  # printable ASCII, no space: a method, host or request target
_TEXT = re.compile(r"[ -~]*")  # printable ASCII: a header's value


class GuardedRequestData(JSONRequestData):
    """A JSON request body with the guard that must run right before its bytes leave."""

    def __init__(self, payload: dict[str, Any], guard: Guard) -> None:
        super().__init__(payload)
        self.guard = guard


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time. ``httptools`` (llhttp, C)
    parses the answers: a Content-Length or chunked body, or one that ends with the connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.refused = ""  # why the answer was refused midway
        self.framed = False  # the answer has a Content-Length or is chunked
        self.until_close = False  # ...or not: its body ends when the server closes
        self.written = False  # the request is in the socket
        self.complete = False  # its answer is in
        self.keep_alive = False
        self.closed = False
        self.idle_since = time.monotonic()

    # -- asyncio callbacks --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.written or self.complete:  # unasked bytes: the connection is not used again
            self.closed = True
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # a callback's exception comes wrapped in one
            self._fail(NetworkError(self.refused or f"bad HTTP answer from the Bot API: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        if self.until_close and self.written and not self.complete:  # the close ends the body
            self.on_message_complete()
        self._fail(NetworkError("the Bot API closed the connection before answering"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.eof_received()
        self._fail(NetworkError(f"connection to the Bot API lost: {exc or 'closed'}"))

    # -- httptools' callbacks --
    def on_message_begin(self) -> None:
        if self.complete:  # a second answer in the same read: unasked
            self.closed = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        name = name.lower()
        if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        # llhttp reads an unframed body until the close, which httptools cannot tell it: we do
        self.until_close = status >= 200 and status not in (204, 304) and not self.framed
        self.framed = False

    def on_body(self, body: bytes) -> None:
        self._count(len(body))
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.complete or self.response is None:
            return
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue and the like: the answer follows
            self.body, self.size = [], 0
            return
        self.complete = True
        self.keep_alive = not self.until_close and self.parser.should_keep_alive()
        if not self.response.done():
            self.response.set_result((status, b"".join(self.body)))

    def _count(self, n: int) -> None:
        self.size += n
        if self.size > MAX_ANSWER:  # stops the parser
            self.refused = f"the Bot API's answer is larger than {MAX_ANSWER} bytes"
            raise ValueError(self.refused)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.response is not None and self.written and not self.response.done():
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

    def prepare(self) -> asyncio.Future[tuple[int, bytes]]:
        """A fresh exchange; its answer will be this future."""
        self.body, self.size, self.framed, self.until_close = [], 0, False, False
        self.written = self.complete = self.keep_alive = False
        self.response = asyncio.get_running_loop().create_future()
        return self.response

    def write(self, data: bytes) -> None:
        """Into the socket now (asyncio sends at once when nothing is buffered)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise NotSent("the connection closed before the request was written")
        self.written = True
        self.transport.write(data)

    def reusable(self) -> bool:
        if self.closed or not self.complete or not self.keep_alive:
            return False
        self.response = None
        self.written = self.complete = False
        self.idle_since = time.monotonic()
        return True

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _too_late(response: asyncio.Future[tuple[int, bytes]]) -> None:
    if not response.done():
        response.set_exception(TimeoutError())


def request_head(method: str, host: str, target: str, user_agent: str, body_length: int) -> bytes:
    """The request line and headers; ``ValueError`` for a method, host or target that would
    break them (CR, LF, spaces, control or non-ASCII characters: no header injection)."""
    for part in (method, host, target):
        if not _TOKEN.fullmatch(part):
            raise ValueError(f"refused: {part!r} does not fit in an HTTP request line")
    if not _TEXT.fullmatch(user_agent):
        raise ValueError(f"refused: {user_agent!r} does not fit in an HTTP header")
    return (
        f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nConnection: keep-alive\r\n"
        f"Content-Type: application/json\r\nContent-Length: {body_length}\r\n\r\n"
    ).encode("ascii")


class WireRequest(BaseRequest):
    """PTB transport for the outgoing queue (see the module docstring)."""

    __slots__ = ("_idle", "_slots", "_pool_size", "_timeouts", "_idle_for", "_ssl", "_open", "_urls")

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
        self._urls: dict[str, tuple[tuple[str, str, int], str, str]] = {}

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

    def _split(self, url: str) -> tuple[tuple[str, str, int], str, str]:
        """(scheme, host, port), the Host header and the request target of ``url``; ``ValueError``
        for a URL with a space, CR, LF or any other control or non-ASCII character."""
        split = self._urls.get(url)
        if split is None:
            if not _TOKEN.fullmatch(url):  # urlsplit would quietly drop a CR or LF
                raise ValueError(f"refused: {url!r} does not fit in an HTTP request line")
            parts = urlsplit(url)
            key = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            split = key, parts.netloc.rpartition("@")[2], target
            if len(self._urls) >= 256:  # the Bot API's methods: a handful
                self._urls.clear()
            self._urls[url] = split
        return split

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
        body = request_data.json_payload if request_data is not None and request_data.parameters else b""
        try:
            key, host, target = self._split(url)
            head = request_head(method, host, target, self.USER_AGENT, len(body))
        except ValueError as exc:
            raise NetworkError(str(exc)) from NotSent(str(exc))
        data = head + body
        guard: Guard | None = getattr(request_data, "guard", None)
        pool = self._pick(pool_timeout, "pool")
        try:
            await asyncio.wait_for(self._slots.acquire(), pool) if self._slots.locked() else await self._slots.acquire()
        except TimeoutError as exc:
            raise TimedOut("Pool timeout: all connections are busy; the request was *not* sent to Telegram.") from exc
        conn: _Connection | None = None
        try:
            conn = await self._connection(key, self._pick(connect_timeout, "connect"))
            response = conn.prepare()
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
            read = self._pick(read_timeout, "read")
            timer = None if read is None else asyncio.get_running_loop().call_later(read, _too_late, response)
            try:
                status, payload = await response
            except TimeoutError as exc:
                raise TimedOut("no answer from the Bot API in time (the request may have arrived)") from exc
            finally:
                if timer is not None:
                    timer.cancel()
            if conn.reusable():
                self._idle.setdefault(key, []).append(conn)
                conn = None
            return status, payload
        finally:
            if conn is not None:
                conn.close()
                self._open.discard(conn)
            self._slots.release()
