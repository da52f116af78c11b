"""A real SMTP server (aiosmtpd) on 127.0.0.1 for tests and the benchmark: the "lab inbox".

Not used by the running bot. It runs in the caller's event loop, can be stopped and started
again on the same port (the lab's server going down and coming back), and can misbehave on
purpose: answer 4xx or 5xx to DATA, or take a message and drop the connection before its
"250" reaches the client (the ambiguous case of docs/quotes.md).
"""

from __future__ import annotations

import asyncio
import email
import logging
import socket
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP

logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes

    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    @property
    def message_id(self) -> str:
        return str(self.message()["Message-ID"] or "")


@dataclass
class _Handler:
    inbox: LocalInbox

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        box = self.inbox
        if box.tempfail > 0:
            box.tempfail -= 1
            return "451 4.3.0 try again later"
        if box.permfail:
            return "554 5.7.1 message refused"
        box._record(
            Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), bytes(envelope.content))
        )
        if box.drop_after_accept > 0:
            box.drop_after_accept -= 1
            server.transport.close()  # the message is ours, the client never hears "250"
            return "250 OK (never sent)"
        return "250 2.0.0 OK queued"


@dataclass
class LocalInbox:
    host: str = "127.0.0.1"
    port: int = 0
    tempfail: int = 0  # answer this many DATA commands with 451
    permfail: bool = False  # answer DATA with 554
    drop_after_accept: int = 0  # keep this many messages but drop the connection before "250"
    received: list[Received] = field(default_factory=list)
    _server: asyncio.base_events.Server | None = None
    _changed: asyncio.Condition | None = None

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port(self.host)

    def _record(self, item: Received) -> None:
        self.received.append(item)
        if self._changed is not None:
            cond = self._changed

            async def notify() -> None:
                async with cond:
                    cond.notify_all()

            asyncio.get_running_loop().create_task(notify())

    async def start(self) -> None:
        if self._server is not None:
            return
        self._changed = self._changed or asyncio.Condition()
        loop = asyncio.get_running_loop()
        handler = _Handler(self)
        self._server = await loop.create_server(
            lambda: SMTP(handler, hostname="lab.test", ident="lab inbox", loop=loop),
            self.host,
            self.port,
            reuse_address=True,
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    @property
    def running(self) -> bool:
        return self._server is not None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` messages arrived (a condition, not a sleep)."""
        self._changed = self._changed or asyncio.Condition()
        cond = self._changed

        async def until() -> None:
            async with cond:
                await cond.wait_for(lambda: len(self.received) >= count)

        await asyncio.wait_for(until(), timeout)
        return list(self.received)

    def message_ids(self) -> list[str]:
        return [r.message_id for r in self.received]
