"""Delivery of quote requests to a REAL SMTP server (aiosmtpd on 127.0.0.1, a free port):
headers, both bodies, attachments, Reply-To, Message-ID; outages, 4xx, 5xx, the
accept-then-drop case; header injection; the Maildir default; the lab chat; alerts."""

from __future__ import annotations

import asyncio
import json
import logging
import mailbox
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from bot.config import Settings
from bot.core.content import Content
from bot.core.engine import Engine
from bot.escalation.ports import FileTooLarge, QuoteFields, QuoteRecord
from bot.escalation.render import SMTP_POLICY, build_email, header_text
from bot.escalation.store import QuoteStore
from bot.escalation.transport import DeliveryError, MaildirTransport, SMTPTransport
from bot.escalation.worker import OutboxWorker, RetryPolicy
from bot.features import Features
from bot.runtime import Knowledge
from bot.store import SQLiteStore
from bot.testing.smtpd import LocalInbox
from tests.support.chat import ChatDriver
from tests.support.postgres import both_stores

pytestmark = both_stores  # every test that opens the store on SQLite and on PostgreSQL

FAST = RetryPolicy(base=0.01, cap=0.05, server_base=0.01, server_cap=0.05, max_attempts=4)
LABS = ("lab@example.com", "intake@example.com")
JPEG = b"\xff\xd8\xff\xe0" + b"photo-bytes" * 100


async def eventually(pred: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait for a condition (polling the database or the inbox), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def fields(**kw: object) -> QuoteFields:
    base: dict[str, object] = dict(
        device="iPhone 13 Pro",
        damage="water",
        passcode="no",
        passcode_go_on=True,
        data=("photos", "messages"),
        backup="none",
        name="Anna Smith",
        email="anna@example.com",
        phone="+447700900123",
        photos=(),
        consent_at=time.time(),
    )
    base.update(kw)
    return QuoteFields(**base)  # type: ignore[arg-type]


class FakeFetcher:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def fetch(self, file_id: str) -> tuple[bytes, str] | None:
        self.calls.append(file_id)
        if file_id == "huge":
            raise FileTooLarge(file_id)
        if file_id == "gone":
            return None
        return JPEG, "image/jpeg"


class FakeChat:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def alert(self, text: str) -> None:
        self.texts.append(text)

    async def notify(self, text: str) -> None:
        self.texts.append(text)


@pytest.fixture
async def inbox() -> LocalInbox:
    box = LocalInbox()
    await box.start()
    yield box  # type: ignore[misc]
    await box.stop()


@pytest.fixture
async def quotes(store: SQLiteStore) -> QuoteStore:
    qs = await QuoteStore.open(store.path)
    yield qs  # type: ignore[misc]
    await qs.close()


def worker_for(quotes: QuoteStore, content: Content, port: int, **kw: object) -> OutboxWorker:
    opts: dict[str, object] = dict(
        mail_from="bot@example.org", lab_emails=LABS, policy=FAST, poll=0.05
    )
    opts.update(kw)
    return OutboxWorker(
        quotes, SMTPTransport("127.0.0.1", port, "none", timeout=5), content, **opts
    )  # type: ignore[arg-type]


async def add_transcript(store: SQLiteStore, conversation: str) -> None:
    await store.database.executemany(
        "INSERT INTO messages (conversation_id, ts, direction, kind, text) VALUES (?, ?, ?, ?, ?)",
        [
            (conversation, time.time(), "in", "text", "my iPhone fell in the <b>pool</b>"),
            (conversation, time.time(), "out", "reply", "Sorry to hear that.\nLet's see."),
            (conversation, time.time(), "in", "text", "password is [redacted]"),
        ],
    )


def parts(msg: EmailMessage) -> dict[str, object]:
    out: dict[str, object] = {"attachments": []}
    for part in msg.walk():
        ctype = part.get_content_type()
        if part.get_filename():
            out["attachments"].append((part.get_filename(), ctype, part.get_content()))  # type: ignore[union-attr]
        elif ctype == "text/plain":
            out["text"] = part.get_content()
        elif ctype == "text/html":
            out["html"] = part.get_content()
    return out


# -- the message itself --------------------------------------------------------------------
async def test_delivered_message_is_complete(
    store: SQLiteStore, quotes: QuoteStore, inbox: LocalInbox, knowledge: Knowledge
) -> None:
    await add_transcript(store, "tg:42")
    ref, _ = await quotes.create_quote(
        "tg:42", fields(device="<script>alert(1)</script> 13 Pro", photos=("p1", "huge", "gone"))
    )
    worker = worker_for(quotes, knowledge.content, inbox.port, fetcher=FakeFetcher())
    worker.start()
    try:
        got = await inbox.wait_for(1)
    finally:
        await worker.stop()
    assert len(got) == 1
    env = got[0]
    assert env.mail_from == "bot@example.org" and set(env.rcpt_tos) == set(LABS)
    msg = env.message()
    row = (await quotes.outbox(ref=ref))[0]
    assert row.status == "delivered" and row.accepted.startswith("250")
    # headers
    assert msg["Message-ID"] == row.message_id and ref in row.message_id
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@example.org>")
    assert msg["X-Quote-Reference"] == ref
    assert msg["Reply-To"].addresses[0].addr_spec == "anna@example.com"
    assert msg["Reply-To"].addresses[0].display_name == "Anna Smith"
    assert msg["From"].addresses[0].addr_spec == "bot@example.org"
    assert {a.addr_spec for a in msg["To"].addresses} == set(LABS)
    subject = str(msg["Subject"])
    assert ref in subject and "Water damage" in subject and "13 Pro" in subject
    assert msg["Date"] is not None
    # both bodies: every field, the price band, the terms, the redacted transcript
    p = parts(msg)
    text, html = str(p["text"]), str(p["html"])
    for body in (text, html):
        for expected in (
            "Anna Smith",
            "anna@example.com",
            "+447700900123",
            "Water damage",
            "No backup",
            "Photos and videos, Messages",
            "$400 - $1,000",
            "3 - 7 days",
            "no data, no fee",
            "diagnosis first",
            "extremely difficult",
            "[redacted]",
            ref,
        ):
            assert expected in body, expected
    assert "<script>alert(1)</script>" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "&lt;b&gt;pool&lt;/b&gt;" in html
    assert "photo 1: attached" in text and "20 MB" in text and "could not be downloaded" in text
    # attachments: the structured request and the one photo that could be fetched
    names = {a[0]: a for a in p["attachments"]}  # type: ignore[union-attr]
    data = json.loads(names[f"quote-{ref}.json"][2])
    assert data["reference"] == ref and data["damage"]["id"] == "water"
    assert data["price_band"] == {
        "label": "Water damage",
        "price": "$400 - $1,000",
        "duration": "3 - 7 days",
    }
    assert data["email"] == "anna@example.com" and data["passcode_known"] == "no"
    assert data["terms"] == {"no_data_no_fee": True, "diagnosis_first": True}
    assert [t["text"] for t in data["transcript"]][0] == "my iPhone fell in the <b>pool</b>"
    assert names[f"{ref}-photo-1.jpg"][1] == "image/jpeg" and names[f"{ref}-photo-1.jpg"][2] == JPEG
    assert len(names) == 2
    # photo outcomes are kept: a re-send carries the same photos without fetching again
    assert [a[2] for a in await quotes.attachments(ref)] == ["fetched", "too_big", "unavailable"]


def test_header_injection_is_impossible(knowledge: Knowledge) -> None:
    rec = QuoteRecord(
        "Q-ABCDE",
        "tg:1",
        time.time(),
        fields(
            name="Eve\r\nBcc: victim@example.com",
            device="x\r\nX-Evil: 1\u2028X-Evil2: 2",
            email="eve@example.com\r\nBcc: victim@example.com",
        ),
        (),
    )
    msg = build_email(
        rec,
        knowledge.content,
        message_id="<id\r\nX-Evil3: 3@example.org>",
        mail_from="bot@example.org",
        to=LABS,
    )
    raw = msg.as_bytes(policy=SMTP_POLICY)
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    for bad in ("\nBcc:", "\nX-Evil:", "\nX-Evil2:", "\nX-Evil3:"):
        assert bad not in head
    assert msg["Reply-To"] is None  # an e-mail that is not one plain address is not used
    assert "\n" not in str(msg["Subject"])
    # the policy itself refuses a raw newline in a header
    probe = EmailMessage(policy=SMTP_POLICY)
    with pytest.raises(ValueError):
        probe["Subject"] = "a\r\nBcc: x@example.com"
    assert header_text("a\r\nb\x00c\u2028d\te") == "a b c d e"
    # a display name with quotes and commas stays one address
    rec2 = QuoteRecord("Q-ABCDE", "tg:1", time.time(), fields(name='Eve", <v@example.com>, "x'), ())
    msg2 = build_email(
        rec2, knowledge.content, message_id="<a@b>", mail_from="bot@example.org", to=LABS
    )
    assert [a.addr_spec for a in msg2["Reply-To"].addresses] == ["anna@example.com"]


def test_emoji_only_name_is_encoded_in_reply_to(knowledge: Knowledge) -> None:
    rec = QuoteRecord("Q-ABCDE", "tg:1", time.time(), fields(name="🦊🌸"), ())
    msg = build_email(
        rec, knowledge.content, message_id="<a@b>", mail_from="bot@example.org", to=LABS
    )
    raw = msg.as_bytes(policy=SMTP_POLICY)
    assert all(b < 128 for b in raw)  # 7-bit clean: any server takes it
    import email as email_pkg
    from email import policy

    again = email_pkg.message_from_bytes(raw, policy=policy.default)
    assert again["Reply-To"].addresses[0].display_name == "🦊🌸"


def test_long_answers_do_not_break_the_subject(knowledge: Knowledge) -> None:
    rec = QuoteRecord("Q-ABCDE", "tg:1", time.time(), fields(device="D" * 1000), ())
    msg = build_email(
        rec, knowledge.content, message_id="<a@b>", mail_from="bot@example.org", to=LABS
    )
    assert len(str(msg["Subject"])) <= 200
    assert "D" * 1000 in str(parts(msg)["text"])


# -- faults ----------------------------------------------------------------------------------
async def test_server_down_then_up_delivers_once(quotes: QuoteStore, knowledge: Knowledge) -> None:
    box = LocalInbox()  # not started: the lab's server is down
    ref, _ = await quotes.create_quote("tg:1", fields())
    worker = worker_for(quotes, knowledge.content, box.port)
    worker.start()
    try:

        async def noticed_down() -> bool:
            # between passes (not while a pass has the row 'sending'): pending, no attempt counted
            row = (await quotes.outbox(ref=ref))[0]
            return (worker.server_down and worker.passes >= 3 and row.status == "pending"
                    and row.attempts == 0 and row.error_kind == "server")

        await eventually(noticed_down)
        await box.start()
        await box.wait_for(1)

        async def recorded() -> bool:
            return (await quotes.outbox(ref=ref))[0].status == "delivered"

        await eventually(recorded)
    finally:
        await worker.stop()
        await box.stop()
    assert len(box.received) == 1 and not worker.server_down


async def test_temporary_refusal_is_retried(
    quotes: QuoteStore, inbox: LocalInbox, knowledge: Knowledge
) -> None:
    inbox.tempfail = 2
    ref, _ = await quotes.create_quote("tg:1", fields())
    worker = worker_for(quotes, knowledge.content, inbox.port)
    worker.start()
    try:
        await inbox.wait_for(1)

        async def recorded() -> bool:
            return (await quotes.outbox(ref=ref))[0].status == "delivered"

        await eventually(recorded)
    finally:
        await worker.stop()
    row = (await quotes.outbox(ref=ref))[0]
    assert row.attempts == 3 and len(inbox.received) == 1


async def test_accept_then_drop_gives_at_most_a_copy_with_the_same_message_id(
    quotes: QuoteStore, inbox: LocalInbox, knowledge: Knowledge
) -> None:
    """The server keeps the message but the connection dies before its "250": we cannot know,
    so we send again. The lab may get two copies — always with the same Message-ID, which mail
    clients and ticket systems de-duplicate (docs/quotes.md). Never zero copies."""
    inbox.drop_after_accept = 1
    ref, _ = await quotes.create_quote("tg:1", fields())
    worker = worker_for(quotes, knowledge.content, inbox.port)
    worker.start()
    try:
        await inbox.wait_for(2)

        async def recorded() -> bool:
            return (await quotes.outbox(ref=ref))[0].status == "delivered"

        await eventually(recorded)
    finally:
        await worker.stop()
    ids = inbox.message_ids()
    assert len(ids) == 2 and len(set(ids)) == 1
    first, second = (r.message() for r in inbox.received)
    assert str(first["Subject"]) == str(second["Subject"]) and first["Date"] == second["Date"]
    assert (await quotes.outbox(ref=ref))[0].attempts == 2


async def test_permanent_refusal_keeps_the_request_and_alerts_a_person(
    chat: ChatDriver,
    engine: Engine,
    store: SQLiteStore,
    inbox: LocalInbox,
    knowledge: Knowledge,
    tmp_path: Path,
    features: Features,
) -> None:
    inbox.permfail = True
    agents = FakeChat()
    hub = features.quotes
    settings = Settings(
        mail_from="bot@example.org",
        lab_emails=LABS,
        maildir=str(tmp_path / "md"),
        agent_chat_id=-100,
    )
    await hub.start_worker(
        settings,
        knowledge.content,
        alerter=agents,
        policy=FAST,
        transport=SMTPTransport("127.0.0.1", inbox.port, "none", timeout=5),
    )
    try:
        from tests.test_quote_form import fill

        await fill(chat)
        await chat.press("send")
        ref = (await chat.state()).values["q_ref"]

        async def alerted() -> bool:
            async with hub.quotes() as qs:
                rows = await qs.outbox(ref=ref)
            return rows[0].status == "failed" and rows[0].alert_state == "sent"

        await eventually(alerted)
        assert any(ref in t and "outbox retry" in t for t in agents.texts)
        await chat.command("/status")
        assert "quote.status_failed_alerted" in chat.keys and "alerted" in chat.text
        async with hub.quotes() as qs:
            assert await qs.quote(ref) is not None  # kept
    finally:
        await hub.close()
    assert inbox.received == []


async def test_too_many_attempts_mark_failed(
    quotes: QuoteStore, inbox: LocalInbox, knowledge: Knowledge, caplog: pytest.LogCaptureFixture
) -> None:
    inbox.tempfail = 1000
    ref, _ = await quotes.create_quote("tg:1", fields())
    worker = worker_for(
        quotes,
        knowledge.content,
        inbox.port,
        policy=RetryPolicy(base=0.01, cap=0.02, server_base=0.01, max_attempts=3),
    )
    worker.start()
    try:

        async def failed() -> bool:
            row = (await quotes.outbox(ref=ref))[0]
            return row.status == "failed" and row.alert_state == "logged"

        with caplog.at_level(logging.WARNING):
            await eventually(failed)
    finally:
        await worker.stop()
    row = (await quotes.outbox(ref=ref))[0]
    assert row.attempts == 3 and "451" in row.last_error and "gave up" in row.last_error
    assert any("ALERT" in r.getMessage() and ref in r.getMessage() for r in caplog.records)
    statuses = await quotes.statuses_for("tg:1")
    assert statuses[0].status == "failed" and not statuses[0].alerted


async def test_smtp_password_is_never_logged(
    quotes: QuoteStore, inbox: LocalInbox, knowledge: Knowledge, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-Pa55word"
    transport = SMTPTransport("127.0.0.1", inbox.port, "none", "user", secret, timeout=5)
    assert secret not in repr(transport)
    with pytest.raises(DeliveryError) as err:
        await transport.open()  # the test server offers no AUTH: a server-level failure
    assert err.value.kind == "server" and secret not in str(err.value)
    await quotes.create_quote("tg:1", fields())
    worker = OutboxWorker(
        quotes,
        transport,
        knowledge.content,
        mail_from="bot@example.org",
        lab_emails=LABS,
        policy=FAST,
    )
    with caplog.at_level(logging.DEBUG):
        await worker.run_once()
    assert worker.server_down
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)


# -- the Maildir default, the lab chat, the runtime hook ----------------------------------------
async def test_maildir_default_and_no_duplicate_file(
    chat: ChatDriver, store: SQLiteStore, knowledge: Knowledge, tmp_path: Path, features: Features
) -> None:
    maildir = tmp_path / "lab-maildir"
    settings = Settings(maildir=str(maildir))  # no SMTP_HOST: the embedded default
    hub = features.quotes
    await hub.start_worker(settings, knowledge.content, policy=FAST)
    try:
        from tests.test_quote_form import fill

        await fill(chat)
        await chat.press("send")
        assert str(maildir) not in chat.text and "tmp" not in chat.text  # no server paths to users
        ref = (await chat.state()).values["q_ref"]

        async def delivered() -> bool:
            async with hub.quotes() as qs:
                return (await qs.outbox(ref=ref))[0].status == "delivered"

        await eventually(delivered)
    finally:
        await hub.close()
    box = mailbox.Maildir(str(maildir), create=False)
    msgs = list(box)
    assert len(msgs) == 1 and msgs[0]["X-Quote-Reference"] == ref
    # delivering the same request again (a crash before the commit) writes no second file
    transport = MaildirTransport(maildir)
    rec_msg = EmailMessage(policy=SMTP_POLICY)
    rec_msg["Subject"] = "again"
    result = await transport.send(rec_msg, "bot@example.org", LABS, key=ref)
    assert result.startswith("already in")
    assert len(list(mailbox.Maildir(str(maildir), create=False))) == 1


async def test_lab_chat_gets_a_summary(
    chat: ChatDriver, store: SQLiteStore, inbox: LocalInbox, knowledge: Knowledge, tmp_path: Path, features: Features
) -> None:
    lab = FakeChat()
    settings = Settings(mail_from="bot@example.org", lab_emails=LABS, lab_chat_id=-2002)
    hub = features.quotes
    await hub.start_worker(
        settings,
        knowledge.content,
        lab_notifier=lab,
        policy=FAST,
        transport=SMTPTransport("127.0.0.1", inbox.port, "none", timeout=5),
    )
    try:
        from tests.test_quote_form import fill

        await fill(chat)
        await chat.press("send")
        ref = (await chat.state()).values["q_ref"]
        await inbox.wait_for(1)

        async def both() -> bool:
            async with hub.quotes() as qs:
                return {r.channel: r.status for r in await qs.outbox(ref=ref)} == {
                    "email": "delivered",
                    "lab_chat": "delivered",
                }

        await eventually(both)
    finally:
        await hub.close()
    assert len(lab.texts) == 1 and ref in lab.texts[0] and "$400 - $1,000" in lab.texts[0]


async def test_runtime_hook_starts_and_stops_the_worker(tmp_path: Path) -> None:
    from bot.escalation import Escalation
    from bot.runtime import open_runtime

    root = Path(__file__).resolve().parents[1]
    settings = Settings(maildir=str(tmp_path / "md"))
    hub = Escalation(settings, policy=FAST)
    runtime = await open_runtime(str(tmp_path / "rt.db"), root / "content", root / "flows", features=[hub])
    await runtime.start()
    assert hub.worker is not None and "Maildir" in hub.delivery_note()
    chat = ChatDriver(runtime.engine, conversation_id="term:local")
    from tests.test_quote_form import fill

    await fill(chat)
    await chat.press("send")
    ref = (await chat.state()).values["q_ref"]

    async def delivered() -> bool:
        return bool(list((tmp_path / "md" / "new").glob(f"{ref}*")))

    await eventually(delivered)
    await runtime.close()
    assert hub.worker is None
