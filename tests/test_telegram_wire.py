"""The outgoing queue's own HTTP/1.1 transport (``bot.tg.wire``) against a scripted server on
127.0.0.1: how answers are framed (Content-Length, chunked, until the close), when a connection
is used again, and which failures mean "not sent" (safe to send again) and which "it may have
arrived" (never sent again blindly)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from telegram.error import BadRequest, NetworkError, TimedOut

from bot.tg.http import JSONRequestData, never_reached_server
from bot.tg.wire import MAX_ANSWER, GuardedRequestData, WireRequest


def ok(result: object, *extra_headers: str) -> bytes:
    body = json.dumps({"ok": True, "result": result}).encode()
    head = "".join(f"{h}\r\n" for h in extra_headers)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body


def chunked(result: object) -> bytes:
    body = json.dumps({"ok": True, "result": result}).encode()
    first, rest = body[:7], body[7:]
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(first), first, len(rest), rest)
    )


@dataclass
class Answer:
    data: bytes = b""
    close: bool = False  # the server closes the connection after writing ``data``
    hang: bool = False  # no answer at all


@dataclass
class Script:
    """A stand-in for the Bot API that gives each request the next scripted answer."""

    answers: list[Answer]
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    connections: int = 0
    closes: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
                body = await reader.readexactly(int(match[1])) if match else b""
                self.requests.append((head, body))
                answer = self.answers.pop(0)
                if answer.hang:
                    await reader.read()  # until the client gives up and closes
                    return
                writer.write(answer.data)
                await writer.drain()
                if answer.close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            async with self.changed:
                self.closes += 1
                self.changed.notify_all()

    async def closed(self, n: int) -> None:
        """Until the server has closed ``n`` connections."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.closes >= n)


@pytest.fixture
async def serve() -> AsyncIterator[object]:
    servers: list[asyncio.Server] = []

    async def start(*answers: Answer) -> tuple[Script, str]:
        script = Script(list(answers))
        server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return script, f"http://127.0.0.1:{port}/botTOKEN"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def wire() -> AsyncIterator[WireRequest]:
    w = WireRequest(read_timeout=2.0, connect_timeout=2.0)
    await w.initialize()
    yield w
    await w.shutdown()


async def test_a_request_is_plain_json_with_its_length_and_keep_alive(serve, wire: WireRequest) -> None:
    script, base = await serve(Answer(ok({"message_id": 7})))
    result = await wire.post(f"{base}/sendMessage", JSONRequestData({"chat_id": 5, "text": "hé <b>x</b>", "reply_markup": None}))
    assert result == {"message_id": 7}
    [(head, body)] = script.requests
    assert head.startswith(b"POST /botTOKEN/sendMessage HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in head and b"\r\nConnection: keep-alive\r\n" in head
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert json.loads(body) == {"chat_id": 5, "text": "hé <b>x</b>"}
    assert f"Content-Length: {len(body)}\r\n".encode() in head


async def test_chunked_and_length_answers_are_read_and_the_connection_is_used_again(serve, wire: WireRequest) -> None:
    script, base = await serve(Answer(chunked({"message_id": 1})), Answer(ok({"message_id": 2})), Answer(chunked(True)))
    assert await wire.post(f"{base}/sendMessage", JSONRequestData({"chat_id": 1, "text": "a"})) == {"message_id": 1}
    assert await wire.post(f"{base}/sendMessage", JSONRequestData({"chat_id": 1, "text": "b"})) == {"message_id": 2}
    assert await wire.post(f"{base}/answerCallbackQuery", JSONRequestData({"callback_query_id": "q"})) is True
    assert script.connections == 1, "keep-alive: one connection for the three requests"


async def test_an_answer_whose_body_ends_with_the_close_is_read_and_not_reused(serve, wire: WireRequest) -> None:
    body = json.dumps({"ok": True, "result": {"message_id": 3}}).encode()
    script, base = await serve(Answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body, close=True), Answer(ok(True)))
    assert await wire.post(f"{base}/sendMessage", JSONRequestData({"chat_id": 1, "text": "a"})) == {"message_id": 3}
    assert await wire.post(f"{base}/sendChatAction", JSONRequestData({"chat_id": 1, "action": "typing"})) is True
    assert script.connections == 2


async def test_after_connection_close_or_a_server_close_the_next_request_opens_a_new_connection(serve, wire: WireRequest) -> None:
    script, base = await serve(
        Answer(ok(1, "Connection: close")),  # says so; this server keeps the socket open (ignored)
        Answer(ok(2), close=True),  # says nothing, closes right after answering
        Answer(ok(3)),
    )
    assert await wire.post(f"{base}/getMe", JSONRequestData({})) == 1
    assert await wire.post(f"{base}/getMe", JSONRequestData({})) == 2
    await script.closed(2)  # the server has closed the idle connection: its FIN is readable
    assert await wire.post(f"{base}/getMe", JSONRequestData({})) == 3, "not written into the closed connection"
    assert script.connections == 3


async def test_unasked_bytes_after_an_answer_never_answer_the_next_request(serve, wire: WireRequest) -> None:
    stale = ok({"message_id": 666})
    script, base = await serve(Answer(ok({"message_id": 1}) + stale), Answer(ok({"message_id": 2})))
    assert await wire.post(f"{base}/sendMessage", JSONRequestData({"chat_id": 1, "text": "a"})) == {"message_id": 1}
    assert await wire.post(f"{base}/sendMessage", JSONRequestData({"chat_id": 1, "text": "b"})) == {"message_id": 2}
    assert script.connections == 2, "the connection with stray bytes was dropped"


async def test_status_codes_still_become_ptbs_exceptions(serve, wire: WireRequest) -> None:
    body = json.dumps({"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}).encode()
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    script, base = await serve(Answer(answer), Answer(ok(True)))
    with pytest.raises(BadRequest, match="(?i)chat not found"):
        await wire.post(f"{base}/sendMessage", JSONRequestData({"chat_id": 1, "text": "a"}))
    assert await wire.post(f"{base}/getMe", JSONRequestData({})) is True
    assert script.connections == 1


async def test_a_read_timeout_means_it_may_have_arrived() -> None:
    script = Script([Answer(hang=True)])
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    wire = WireRequest(read_timeout=0.2)
    await wire.initialize()
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/botTOKEN/sendMessage"
        with pytest.raises(TimedOut) as caught:
            await wire.post(url, JSONRequestData({"chat_id": 1, "text": "a"}))
        assert not never_reached_server(caught.value)
        assert len(script.requests) == 1
    finally:
        await wire.shutdown()
        server.close()
        await server.wait_closed()


async def test_a_close_before_the_answer_means_it_may_have_arrived(serve, wire: WireRequest) -> None:
    script, base = await serve(Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"ok\"", close=True))
    with pytest.raises(NetworkError) as caught:
        await wire.post(f"{base}/sendMessage", JSONRequestData({"chat_id": 1, "text": "a"}))
    assert not never_reached_server(caught.value)
    assert len(script.requests) == 1


async def test_a_malformed_or_oversized_answer_fails_and_drops_the_connection(serve, wire: WireRequest) -> None:
    huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
    chunks = huge + (b"100000\r\n" + b"x" * 0x100000 + b"\r\n") * (MAX_ANSWER // 0x100000) + b"0\r\n\r\n"
    script, base = await serve(Answer(b"HTTP/1.1 twohundred OK\r\n\r\n"), Answer(chunks), Answer(ok(True)))
    with pytest.raises(NetworkError, match="bad HTTP answer") as caught:
        await wire.post(f"{base}/sendMessage", JSONRequestData({"chat_id": 1, "text": "a"}))
    assert not never_reached_server(caught.value)
    with pytest.raises(NetworkError, match="larger than") as caught:
        await wire.post(f"{base}/sendMessage", JSONRequestData({"chat_id": 1, "text": "b"}))
    assert not never_reached_server(caught.value)
    assert await wire.post(f"{base}/getMe", JSONRequestData({})) is True
    assert script.connections == 3


async def test_no_connection_means_not_sent(wire: WireRequest) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens there any more
    with pytest.raises(NetworkError) as caught:
        await wire.post(f"http://127.0.0.1:{port}/botTOKEN/sendMessage", JSONRequestData({"chat_id": 1, "text": "a"}))
    assert never_reached_server(caught.value)


@pytest.mark.parametrize("path", ["/botTOKEN/sendMessage\r\nX-Evil: 1", "/botTO KEN/sendMessage", "/botTOKEN/send\nMessage"])
async def test_a_url_that_would_inject_a_header_is_refused_before_anything_is_written(serve, wire: WireRequest, path: str) -> None:
    script, base = await serve(Answer(ok(True)))
    url = base.rsplit("/", 1)[0] + path
    with pytest.raises(NetworkError, match="refused") as caught:
        await wire.post(url, JSONRequestData({"chat_id": 1, "text": "a"}))
    assert never_reached_server(caught.value)
    assert script.connections == 0 and script.requests == []


async def test_the_guard_runs_right_before_the_write_and_a_failing_guard_sends_nothing(serve, wire: WireRequest) -> None:
    script, base = await serve(Answer(ok({"message_id": 9})))
    seen: list[int] = []

    async def mark_then(write) -> None:  # type: ignore[no-untyped-def]
        seen.append(len(script.requests))
        write()

    async def broken(write) -> None:  # type: ignore[no-untyped-def]
        raise OSError("database is locked")

    with pytest.raises(NetworkError) as caught:
        await wire.post(f"{base}/sendMessage", GuardedRequestData({"chat_id": 1, "text": "a"}, broken))
    assert never_reached_server(caught.value)
    assert await wire.post(f"{base}/sendMessage", GuardedRequestData({"chat_id": 1, "text": "b"}, mark_then)) == {"message_id": 9}
    assert seen == [0] and [json.loads(b)["text"] for _, b in script.requests] == ["b"]
