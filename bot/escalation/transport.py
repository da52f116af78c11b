"""Where the lab's e-mail goes: an SMTP server (aiosmtplib) or, by default, a local Maildir.

Behind the outbox worker, far from the engine. Every failure is classified so the worker
can decide what to do with it:

* ``server``     — the server could not be reached or refused the session (connect, TLS,
                   greeting, login). Not the message's fault: the worker keeps the rows and
                   retries the server with its own backoff.
* ``temporary``  — a 4xx answer to this message: retried with backoff.
* ``permanent``  — a 5xx answer to this message: the request is marked failed.
* ``ambiguous``  — the connection died after the message data went out: the server may
                   have taken it. Retried (same Message-ID), so the lab may see a duplicate
                   with the same Message-ID, never a lost request (docs/quotes.md).

The SMTP password is never logged or put into an error text.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
import os
import re
import socket
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import aiosmtplib

from bot.config import ConfigError, Settings

from .render import SMTP_POLICY

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # server | temporary | permanent | ambiguous


class Session(Protocol):
    async def send(
        self, msg: EmailMessage, sender: str, recipients: Sequence[str], key: str
    ) -> str:
        """Deliver one message; return what the server answered. Raises DeliveryError."""
        ...

    async def close(self) -> None: ...


class Transport(Protocol):
    description: str
    is_maildir: bool

    async def open(self) -> Session:
        """A session that may deliver several messages. Raises DeliveryError('server')."""
        ...


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


# -- SMTP ------------------------------------------------------------------------------------
class SMTPSession:
    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client

    async def send(
        self, msg: EmailMessage, sender: str, recipients: Sequence[str], key: str
    ) -> str:
        client = self.client
        # MAIL and RCPT: nothing has been handed over yet, a failure here is never a duplicate.
        try:
            await client.mail(sender)
            refused: list[str] = []
            codes: list[int] = []
            for rcpt in recipients:
                try:
                    await client.rcpt(rcpt)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused.append(f"{rcpt}: {exc.code} {exc.message}")
                    codes.append(exc.code)
            if len(refused) == len(recipients):
                await self._rset()
                kind = "temporary" if any(400 <= c < 500 for c in codes) else "permanent"
                raise DeliveryError(kind, "all recipients refused: " + "; ".join(refused))
        except aiosmtplib.SMTPResponseException as exc:
            await self._rset()
            if exc.code == 421:
                raise DeliveryError("server", f"{exc.code} {exc.message}") from exc
            kind = "permanent" if exc.code >= 500 else "temporary"
            raise DeliveryError(kind, f"{exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            raise DeliveryError("server", _describe(exc)) from exc
        # DATA: from here on the server may have the message even if we hear nothing back.
        try:
            response = await client.data(msg.as_bytes(policy=SMTP_POLICY))
        except aiosmtplib.SMTPResponseException as exc:
            await self._rset()
            kind = "permanent" if exc.code >= 500 else "temporary"
            raise DeliveryError(kind, f"{exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            raise DeliveryError("ambiguous", _describe(exc)) from exc
        accepted = f"{response.code} {response.message}"
        if refused:
            accepted += " (refused: " + "; ".join(refused) + ")"
            log.warning(
                "quote mail %s: some lab addresses were refused: %s", key, "; ".join(refused)
            )
        return accepted

    async def _rset(self) -> None:
        try:
            await self.client.rset()
        except (aiosmtplib.SMTPException, OSError):
            pass

    async def close(self) -> None:
        try:
            if self.client.is_connected:
                await self.client.quit()
        except (aiosmtplib.SMTPException, OSError):
            self.client.close()


class SMTPTransport:
    is_maildir = False

    def __init__(
        self,
        host: str,
        port: int,
        tls: str = "starttls",
        username: str = "",
        password: str = "",
        *,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if tls not in ("starttls", "ssl", "none"):
            raise ConfigError(f"SMTP_TLS must be starttls, ssl or none, got {tls!r}")
        self.host, self.port, self.tls = host, port, tls
        self.username = username
        self._password = password
        self.timeout = timeout
        self.tls_context = tls_context
        self.description = f"SMTP {host}:{port} ({tls})"

    def __repr__(self) -> str:  # the password never shows
        return f"SMTPTransport({self.host!r}, {self.port}, {self.tls!r}, user={self.username!r})"

    async def open(self) -> SMTPSession:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.tls == "ssl",
            start_tls=(self.tls == "starttls"),
            tls_context=self.tls_context,
            local_hostname=_local_name(),
        )
        try:
            await client.connect()
            if self.username:
                await client.login(self.username, self._password)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise DeliveryError("server", f"{self.description}: {_describe(exc)}") from exc
        return SMTPSession(client)


def _local_name() -> str:
    name = re.sub(r"[^A-Za-z0-9.-]", "", socket.gethostname())
    return name or "localhost"


# -- Maildir ------------------------------------------------------------------------------
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class MaildirTransport:
    """Writes each message into ``path`` (a Maildir any mail client opens).

    The file name is derived from the message key (the reference), and a message already in
    new/ or cur/ is not written again: re-delivery after a crash cannot duplicate it here.
    """

    is_maildir = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.description = f"Maildir {self.path}"

    async def open(self) -> MaildirTransport:
        try:
            await asyncio.to_thread(mailbox.Maildir, str(self.path), None, True)
        except OSError as exc:
            raise DeliveryError("server", f"{self.description}: {_describe(exc)}") from exc
        return self

    async def send(
        self, msg: EmailMessage, sender: str, recipients: Sequence[str], key: str
    ) -> str:
        try:
            return await asyncio.to_thread(self._write, msg, key)
        except OSError as exc:
            raise DeliveryError("server", f"{self.description}: {_describe(exc)}") from exc

    def _write(self, msg: EmailMessage, key: str) -> str:
        base = _SAFE_NAME.sub("_", key)[:120] + ".backup-bot"
        new, cur, tmp = self.path / "new", self.path / "cur", self.path / "tmp"
        if (new / base).exists() or any(p.name.split(":")[0] == base for p in cur.glob(base + "*")):
            return f"already in {new / base}"
        data = msg.as_bytes(policy=SMTP_POLICY.clone(linesep="\n"))
        tmp_file = tmp / f"{base}.{os.getpid()}"
        with open(tmp_file, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_file, new / base)
        return f"stored {new / base}"

    async def close(self) -> None:
        return None


def build_transport(settings: Settings) -> SMTPTransport | MaildirTransport:
    """SMTP when SMTP_HOST is set (then LAB_EMAIL is required), else the Maildir default."""
    if settings.smtp_host:
        if not settings.lab_emails:
            raise ConfigError("LAB_EMAIL must name at least one address when SMTP_HOST is set")
        return SMTPTransport(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_tls,
            settings.smtp_username,
            settings.smtp_password,
        )
    return MaildirTransport(settings.maildir)


def recipients(settings: Settings) -> tuple[str, ...]:
    return settings.lab_emails or ("lab@localhost",)
