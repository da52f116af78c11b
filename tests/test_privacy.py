"""Privacy: the redaction gate on every path into the engine, told once; scrubbed deletes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from bot.core.engine import Engine
from bot.core.messages import Attachment, EventKind, Inbound
from bot.features import Features
from bot.store import SQLiteStore
from tests.support.chat import ChatDriver
from tests.support.scan import byte_hits, table_hits


async def test_user_is_told_once_per_conversation(chat: ChatDriver) -> None:
    await chat.command("/start")
    await chat.say("icloud keeps asking for my password, the password is Margarita88 btw")
    assert chat.keys[0] == "engine.password_warning"
    assert "took out" in chat.text
    await chat.say("sorry, my passcode is 5 5 6 6 2 1 if you need it for the backup thing")
    assert "engine.password_warning" not in chat.keys
    await chat.command("/restart")
    await chat.say("pw Kitten77 still doesnt work")
    assert "engine.password_warning" not in chat.keys  # a fresh start is the same conversation


async def test_every_way_in_goes_through_the_gate(chat: ChatDriver, store: SQLiteStore) -> None:
    secrets = ["Zebra#2024", "739104", "Gartenzwerg!9", "hunter2x", "Pf3rd!chen"]
    await chat.command("/help my password is Zebra#2024 can u check my account")
    await chat.send(Inbound(chat.conversation_id, EventKind.MEDIA, text="screen shows this, pin is 739104",
                            attachments=(Attachment("photo", "f1", 1000, "screen shows this, pin is 739104"),)))
    await chat.send(Inbound(chat.conversation_id, EventKind.MEDIA,
                            attachments=(Attachment("document", "f2", 2000, "passwort ist Gartenzwerg!9.pdf"),)))
    await chat.press_payload("99:password=hunter2x")  # a forged button payload
    await store.set_flags(chat.conversation_id, paused=True)  # an agent took over
    await chat.say("mein Kennwort lautet Pf3rd!chen, hilft das?")
    assert table_hits(store.path, secrets) == []
    rows = await store.messages(chat.conversation_id)
    assert sum("[redacted]" in r.text for r in rows if r.direction == "in") >= 3


async def test_quote_form_keeps_the_device_drops_the_code(chat: ChatDriver, store: SQLiteStore) -> None:
    await chat.command("/start quote")
    await chat.say("iPhone 13, code 5566")
    state = await chat.state()
    assert state.values["q_device"] == "iPhone 13" and state.step == "ask_damage"
    assert "engine.password_warning" in chat.keys
    assert "5566" not in json.dumps(state.values) and table_hits(store.path, ["5566"]) == []


# -- deleted text is not left in the file ---------------------------------------------------------


async def test_purged_and_forgotten_text_is_gone_from_the_raw_file(engine: Engine, store: SQLiteStore) -> None:
    from bot.agents.privacy import forget_conversation, purge_expired

    def story(i: int) -> str:
        return (f"hi, my iphone {i} backup to icloud keeps failing since the update, trace{i:03d}qz, "
                "it says the last backup could not be completed and I have no idea what to do")

    for i in range(40):
        await engine.handle(Inbound(f"tg:{1000 + i}", EventKind.TEXT, text=story(i), user_name=f"User{i}"))
    old = [f"trace{i:03d}qz" for i in range(30)]
    kept = [f"trace{i:03d}qz" for i in range(30, 40)]
    ids = ",".join(f"'tg:{1000 + i}'" for i in range(29))
    await store.db.execute(f"UPDATE messages SET ts = ts - 100 * 86400 WHERE conversation_id IN ({ids})")
    await store.db.execute(f"UPDATE conversations SET updated_at = updated_at - 100 * 86400 WHERE id IN ({ids})")
    pages_before = (await store.fetchone("PRAGMA page_count"))[0]
    assert await purge_expired(store.db, 90, lock=store.tx_lock) == 29
    await forget_conversation(store.db, "tg:1029", lock=store.tx_lock)
    assert table_hits(store.path, old) == [] and byte_hits(store.path, old) == []
    assert len(table_hits(store.path, kept)) == len(kept) * 2  # messages and unmatched keep the rest
    assert (await store.fetchone("PRAGMA freelist_count"))[0] == 0
    assert (await store.fetchone("PRAGMA page_count"))[0] < pages_before  # the file shrinks


async def test_an_older_file_is_converted_to_incremental_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE leftover (x TEXT)")
    con.commit()
    con.close()
    store = await SQLiteStore.open(path)
    try:
        assert (await store.fetchone("PRAGMA auto_vacuum"))[0] == 2
        assert (await store.fetchone("PRAGMA secure_delete"))[0] == 1
    finally:
        await store.close()


# -- figures that survive an erasure ---------------------------------------------------------------


async def test_stats_are_unchanged_by_forget_and_purge(engine: Engine, store: SQLiteStore) -> None:
    import time

    from bot.agents import reports
    from bot.agents.desk import AgentDesk
    from bot.agents.ports import ManualClock
    from bot.agents.privacy import forget_conversation

    desk = AgentDesk(engine, store, None, chat_id=None, clock=ManualClock())  # records escalations
    await desk.start()
    try:
        a, b = ChatDriver(engine, "tg:501"), ChatDriver(engine, "tg:502")
        await a.say("my icloud backup failed last night, it just says couldnt be completed")
        await a.say("can i talk to a real person please")
        await a.say("its about the backup of my late dads phone, want to be sure nothing gets lost")
        await b.say("icloud storage is full so my iphone wont back up")
        await b.say("qwxz blorp fnord")
        await desk.settle(5)
    finally:
        await desk.close()
    since = time.time() - 3600
    before = await reports.stats(store.db, since)
    assert before.conversations == 2 and before.escalated == 1 and before.matched == 4 and before.rejected == 1
    assert dict(before.top).get("storage_full") == 1
    await forget_conversation(store.db, "tg:501", lock=store.tx_lock)
    await forget_conversation(store.db, "tg:502", lock=store.tx_lock)
    assert await reports.stats(store.db, since) == before
    assert table_hits(store.path, ["tg:501", "tg:502", "blorp"]) == []


# -- logs -------------------------------------------------------------------------------------------


def _logged(user_text: bool) -> str:
    import io
    import logging

    from bot import logsafe

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    token = "123456789:AAHk-tok3n_SECRETpart_xyz"
    flt = logsafe.install((token, "smtp-pa55word!", "hook_secret_0123456789"), user_text=user_text)
    try:
        update = {"update_id": 7, "message": {"from": {"first_name": "Vera"}, "chat": {"id": 5},
                                              "text": "my iphone's backup fails, passwort ist Tulpe2023!"}}
        logging.getLogger("telegram.ext.ExtBot").debug("Call to Bot API endpoint `getUpdates` finished with "
                                                       "return value `%s`", [update])
        logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1/bot%s/getUpdates "200 OK"', token)
        logging.getLogger("aiohttp.access").debug("header X-Telegram-Bot-Api-Secret-Token: hook_secret_0123456789")
        try:
            raise ConnectionError(f"login failed for smtp-pa55word! at /bot{token.replace(':', '%3A')}/x")
        except ConnectionError:
            logging.getLogger("bot.escalation").exception("delivery failed")
    finally:
        logsafe.remove(flt)
        root.removeHandler(handler)
        root.setLevel(old_level)
    return stream.getvalue()


def test_log_lines_never_show_secrets_and_user_text_only_when_asked() -> None:
    quiet = _logged(user_text=False)
    for secret in ("AAHk-tok3n_SECRETpart_xyz", "smtp-pa55word!", "hook_secret_0123456789", "Tulpe2023"):
        assert secret not in quiet
    assert "Vera" not in quiet and "backup fails" not in quiet  # user text masked by default
    assert "getUpdates" in quiet and "delivery failed" in quiet and "ConnectionError" in quiet
    chatty = _logged(user_text=True)
    assert "Vera" in chatty and "backup fails" in chatty  # LOG_USER_TEXT=1
    assert "Tulpe2023" not in chatty and "AAHk-tok3n_SECRETpart_xyz" not in chatty


# -- the quote mail: the current case only ---------------------------------------------------------


async def test_second_quote_transcript_holds_nothing_of_the_first(chat: ChatDriver, features: Features) -> None:
    from tests.test_quote_form import fill

    await chat.say("my phone went swimming in the lake, is the data gone?")
    await fill(chat, device="iPhone 11 firstcase", name="Bert Firstname", email="bert.first@example.com")
    await chat.press("send")
    first = (await chat.state()).values["q_ref"]
    await chat.say("hello again, my daughters ipad now wont turn on after a fall")
    await fill(chat, device="iPad Air secondcase", name="Carla Second", email="carla@example.com", phone=None)
    await chat.press("send")
    second = (await chat.state()).values["q_ref"]
    assert first != second
    async with features.quotes.quotes() as qs:
        rec1, rec2 = await qs.quote(first), await qs.quote(second)
    assert rec1 is not None and rec2 is not None
    text2 = json.dumps([line.text for line in rec2.transcript])
    assert "daughters ipad" in text2 and "Carla Second" in text2
    for earlier in ("swimming", "firstcase", "Bert Firstname", "bert.first@example.com", first):
        assert earlier not in text2
    assert "swimming" in json.dumps([line.text for line in rec1.transcript])


# -- the terminal chat never loses a request silently ---------------------------------------------

QUOTE_LINES = "/quote\niPhone 12\n3\n1\n1\n9\n3\nDora Quoteperson\ndora@example.com\n1\n1\n1\n1\n"


def test_terminal_chat_says_where_an_undelivered_request_waits(tmp_path: Path) -> None:
    from bot.testing.smtpd import free_port
    from tests.test_store_and_cli import run_bot

    db = tmp_path / "chat.db"
    down = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(free_port()), "SMTP_TLS": "none",
            "LAB_EMAIL": "lab@example.com", "LOG_LEVEL": "ERROR"}
    out = run_bot("chat", "--db", str(db), stdin=QUOTE_LINES, env=down)
    assert "Sent!" in out.stdout and "1 quote request(s) not delivered yet: Q-" in out.stderr, out.stderr
    assert str(db) in out.stderr and "python -m bot outbox retry" in out.stderr
    assert table_hits(db, ["Dora Quoteperson"])  # it waits in the file
    # delivered (the Maildir default): nothing to say
    fine = run_bot("chat", "--db", str(tmp_path / "ok.db"), stdin=QUOTE_LINES,
                   env={"MAILDIR": str(tmp_path / "md"), "LOG_LEVEL": "ERROR"})
    assert "Sent!" in fine.stdout and "not delivered" not in fine.stderr, fine.stderr
    assert list((tmp_path / "md" / "new").iterdir())


def test_a_door_that_stores_updates_first_stores_them_gated() -> None:
    from bot.core.redact import redact_payload, screen

    raw = {"update_id": 9, "message": {"text": "pw: Kitten77", "entities": [{"type": "bold"}],
                                       "reply_to_message": {"caption": "pin 739104 on the sticker"}}}
    stored = redact_payload(raw)
    assert "Kitten77" not in str(stored) and "739104" not in str(stored) and stored["update_id"] == 9
    inbound, warned = screen(Inbound("tg:9", EventKind.TEXT, text=stored["message"]["text"]))
    assert warned and inbound.text == "pw: [redacted]"  # the engine still tells the user
