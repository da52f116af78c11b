"""End to end: a user types secrets everywhere they can, and none of them is found anywhere.

The real PTB door and the agents' desk against the fake Bot API (agents mirroring on), the
quote outbox delivering to a real SMTP server (aiosmtpd on 127.0.0.1), every logger at DEBUG
through the bot's log filter. Afterwards each secret is searched in every SQLite table, the
raw database and WAL bytes, the delivered mail (raw and decoded), every request the bot made
to the Bot API, and the log.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from bot import logsafe
from bot.config import Settings
from bot.escalation.service import Escalation
from bot.runtime import Knowledge
from bot.testing.smtpd import LocalInbox
from tests.support.scan import byte_hits, table_hits
from tests.test_agents_telegram import running_agents
from tests.test_mail_delivery import FAST

USER = 3131
SECRETS = {
    "hi, my iphone backup to icloud fails every night, the apple id password is Tulpe2023! and it says "
    "verification failed": "Tulpe2023",
    "mein Entsperrcode ist 8 1 7 2 6 5, vielleicht hilft das": "8 1 7 2 6 5",
    "sorry I meant pw: Krokus#77": "Krokus#77",  # sent as an edit
    "screenshot of the error, passcode 592604": "592604",  # a photo's caption
    "my pin is 739104 btw": "739104",  # a command's argument
    "iPhone 13, code 480517": "480517",  # the quote form's device field
}
LOGGERS = ("", "telegram", "httpx", "httpcore", "aiohttp", "bot")


@contextmanager
def debug_log(secrets: tuple[str, ...], user_text: bool) -> Iterator[io.StringIO]:
    """Every logger at DEBUG into a buffer, through the bot's filter."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    root.addHandler(handler)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    flt = logsafe.install(secrets, user_text=user_text)
    try:
        yield buf
    finally:
        logsafe.remove(flt)
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def mail_texts(raw: bytes) -> str:
    import email
    from email import policy

    msg = email.message_from_bytes(raw, policy=policy.default)
    parts = [str(msg["Subject"]), raw.decode("utf-8", "replace")]
    for part in msg.walk():
        if part.is_multipart():
            continue
        content = part.get_content()
        parts.append(content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content))
    return "\n".join(parts)


@pytest.mark.parametrize("user_text", [True, False], ids=["LOG_USER_TEXT=1", "LOG_USER_TEXT=0"])
async def test_secrets_typed_everywhere_are_found_nowhere(
    knowledge: Knowledge, tmp_path: Path, user_text: bool
) -> None:
    inbox = LocalInbox()
    await inbox.start()
    texts = list(SECRETS)
    async with running_agents(knowledge, tmp_path / "agents-e2e.db") as agents:
        settings = replace(Settings(), smtp_host="127.0.0.1", smtp_port=inbox.port, smtp_tls="none",
                           smtp_password="smtp-Pa55word-xyz", mail_from="bot@example.org",
                           lab_emails=("lab@example.com",))
        with debug_log((agents.fake.token, settings.smtp_password), user_text) as log:
            hub = next(f for f in agents.runtime.features if isinstance(f, Escalation))
            await hub.start_worker(settings, agents.runtime.knowledge.content, policy=FAST)
            try:
                first = await agents.user_says(USER, texts[0], first_name="Greta")
                assert any("took out" in m.text for m in first)  # told, once
                again = await agents.user_says(USER, texts[1])
                assert not any("took out" in m.text for m in again)
                mine = [m for m in agents.fake.messages[USER].values() if not m.from_bot]
                edit = agents.fake.edit_text(USER, mine[0].message_id, texts[2])
                await agents._handled(edit)
                photo = agents.fake.send_media(USER, "photo", caption=texts[3])
                await agents._handled(photo)
                await agents.user_command(USER, "help", texts[4])
                # the quote form, the device answer with a code in it
                await agents.user_command(USER, "quote")
                await agents.user_says(USER, texts[5])
                for index in (2, 0, 0, 8, 2):  # water, passcode known, photos, done, no backup
                    await agents.user_presses(USER, index=index)
                await agents.user_says(USER, "Greta Gartner")
                await agents.user_says(USER, "greta.g@example.com")
                for _ in range(4):  # no phone, no photos, consent, send
                    await agents.user_presses(USER, index=0)
                assert any("Sent!" in m.text for m in agents.fake.sent(USER))
                received = await inbox.wait_for(1)
                await agents.settle()
            finally:
                await hub.close()
        store = agents.runtime.store
        secrets = list(SECRETS.values())
        mail = mail_texts(received[0].data)
        assert "iPhone 13" in mail and "Greta Gartner" in mail  # the mail is there, with the answers
        topic = agents.topic_text(agents.thread_of(USER))
        assert "[redacted]" in topic  # mirrored, without the secrets
        calls = "\n".join(json.dumps(c.params, ensure_ascii=False) for c in agents.fake.calls)
        bot_messages = "\n".join(m.source + m.text for chat in agents.fake.messages.values()
                                 for m in chat.values() if m.from_bot)
        logged = log.getvalue()
        assert "telegram.ext.ExtBot" in logged  # the libraries logged at DEBUG
        said = ("Greta", "vielleicht hilft das", "verification failed")  # what the user wrote, no secret
        if user_text:  # shown, down to every SQL statement
            assert all(s in logged for s in said) and "aiosqlite" in logged
        else:
            assert [s for s in said if s in logged] == [], [ln[:300] for ln in logged.splitlines() if "Greta" in ln]
        leaks = {
            "tables": table_hits(store.path, secrets),
            "raw bytes": byte_hits(store.path, secrets),
            "mail": [s for s in secrets if s in mail],
            "Bot API requests": [s for s in secrets if s in calls],
            "bot messages": [s for s in secrets if s in bot_messages],
            "log": [s for s in [*secrets, agents.fake.token, settings.smtp_password] if s in logged],
        }
        shown = [ln[:300] for ln in logged.splitlines() if any(s in ln for s in secrets)]
        assert leaks == {k: [] for k in leaks}, shown
    await inbox.stop()
