"""Small pieces of the Telegram door: rendering, update translation, the rate limiter, the
fake Bot API's extras (forum topics, limits, unknown methods), the file fetcher, hooks."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest
from telegram import Bot
from telegram.error import BadRequest, RetryAfter
from telegram.request import HTTPXRequest

from bot.core.messages import Button, EventKind
from bot.testing.fakeapi import ApiError, FakeBotAPI, parse_html
from bot.tg.door import to_inbound
from bot.tg.features import TelegramFileFetcher
from bot.tg.ratelimit import DoorRateLimiter, RateLimits, margin_for
from bot.tg.render import keyboard_rows, split_text, tg_len, to_html, visible


# -- rendering -------------------------------------------------------------------------------------
def test_html_escapes_everything_then_bolds() -> None:
    assert to_html("a < b & **Settings > iCloud**") == "a &lt; b &amp; <b>Settings &gt; iCloud</b>"
    assert to_html("<i>x</i> **<script>**") == "&lt;i&gt;x&lt;/i&gt; <b>&lt;script&gt;</b>"
    assert to_html("2 ** 3 and **a\nb**") == "2 ** 3 and **a\nb**", "no bold across lines"
    assert visible("**Tap** here") == "Tap here"


def test_split_keeps_paragraphs_and_limits() -> None:
    assert split_text("short") == ["short"]
    paras = [f"{i} " + "x" * 1000 for i in range(9)]
    parts = split_text("\n\n".join(paras))
    assert all(tg_len(p) <= 4096 for p in parts)
    assert "\n\n".join(parts) == "\n\n".join(paras)
    assert all(p.split(" ")[0].isdigit() for p in parts)
    # one paragraph of words longer than a message: split at spaces
    words = " ".join(["word"] * 2000)
    parts = split_text(words)
    assert len(parts) == 3 and all(tg_len(p) <= 4096 for p in parts)
    assert " ".join(parts) == words
    # emoji count twice (UTF-16), bold markers don't count
    emoji = "😀" * 2100
    assert all(tg_len(p) <= 4096 for p in split_text(emoji))
    assert split_text("**" + "b" * 4096 + "**") == ["**" + "b" * 4096 + "**"]


def test_keyboard_rows() -> None:
    def bs(*labels: str) -> list[Button]:
        return [Button(f"1:{i}", label) for i, label in enumerate(labels)]

    assert [len(r) for r in keyboard_rows(bs("Yes", "No"))] == [2]
    assert [len(r) for r in keyboard_rows(bs("5 GB", "50 GB", "200 GB", "2 TB"))] == [3, 1]
    assert [len(r) for r in keyboard_rows(bs("iCloud storage is full", "Backup failed"))] == [1, 1]
    assert keyboard_rows([]) == []


# -- update translation -------------------------------------------------------------------------
def _message(text: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "message_id": 5,
        "date": int(time.time()),
        "text": text,
        "chat": {"id": 42, "type": "private"},
        "from": {"id": 42, "is_bot": False, "first_name": "Ann"},
        **extra,
    }
    if text.startswith("/") and text[1:2].isalnum():
        data["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return data


def test_to_inbound_commands_and_text() -> None:
    cmd = to_inbound(_message("/start@Rescue_Bot storage_full"), "rescue_bot")
    assert cmd is not None and (cmd.kind, cmd.text, cmd.arg) == (EventKind.COMMAND, "start", "storage_full")
    assert cmd.conversation_id == "tg:42" and cmd.user_name == "Ann"
    other = to_inbound(_message("/start@other_bot"), "rescue_bot")
    assert other is not None and other.kind is EventKind.TEXT
    text = to_inbound(_message("/ not a command"), "rescue_bot")
    assert text is not None and text.kind is EventKind.TEXT
    photo = {
        "message_id": 6,
        "date": 0,
        "chat": {"id": 42, "type": "private"},
        "caption": "screen",
        "photo": [
            {"file_id": "small", "file_unique_id": "u1", "width": 1, "height": 1},
            {"file_id": "big", "file_unique_id": "u2", "width": 9, "height": 9, "file_size": 99},
        ],
    }
    media = to_inbound(photo, "rescue_bot")
    assert media is not None and media.kind is EventKind.MEDIA and media.text == "screen"
    assert [(a.kind, a.file_id, a.size) for a in media.attachments] == [("photo", "big", 99)]
    service = {
        "message_id": 7,
        "date": 0,
        "chat": {"id": 42, "type": "private"},
        "pinned_message": None,
        "new_chat_title": "x",
    }
    assert to_inbound(service, "rescue_bot") is None


# -- the rate limiter -------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_windows() -> None:
    clock = Clock()
    lim = DoorRateLimiter(RateLimits(overall=(30, 1.0), private=(3, 2.0), group=(20, 60.0)), clock=clock)
    # a burst of 3, then wait (each window keeps a small margin in hand)
    assert [lim._reserve_chat(7) for _ in range(4)] == pytest.approx([0, 0, 0, 2.0 + margin_for(2.0)])
    delays = [lim._reserve_chat(-100) for _ in range(21)]
    assert delays[:20] == [0.0] * 20 and delays[20] == 60.25  # 20 per minute per group
    delays = [lim._reserve_overall() for _ in range(31)]
    assert delays[29] == 0 and delays[30] == pytest.approx(1.0 + margin_for(1.0))  # 30/s overall
    lim.pause(8, 5.0)
    assert lim._reserve_chat(8) == 5.0
    assert DoorRateLimiter(RateLimits.unlimited(), clock=clock)._reserve_chat(7) == 0


async def test_limiter_retries_429_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.tg.ratelimit as rl

    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(rl.asyncio, "sleep", fake_sleep)
    lim = DoorRateLimiter(RateLimits(overall=None, private=None, group=None, max_retries=2))
    calls = 0

    async def flaky() -> bool:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RetryAfter(3)
        return True

    assert await lim.process_request(flaky, (), {}, "sendMessage", {"chat_id": 1}, None) is True
    assert slept == [3.0, 3.0] and lim.waited_429 == 2

    async def always() -> bool:
        raise RetryAfter(1)

    with pytest.raises(RetryAfter):
        await lim.process_request(always, (), {}, "sendMessage", {"chat_id": 1}, None)


# -- the fake server's extras ---------------------------------------------------------------------
def test_parse_html_like_telegram() -> None:
    text, ents = parse_html('a <b>bold 😀</b> &amp; <a href="https://x.y">link</a>')
    assert text == "a bold 😀 & link"
    assert ents == [
        {"type": "bold", "offset": 2, "length": 7},
        {"type": "text_link", "offset": 12, "length": 4, "url": "https://x.y"},
    ]
    for bad in ("<script>x</script>", "<b>open", "a</b>"):
        with pytest.raises(ValueError, match="can't parse entities"):
            parse_html(bad)


async def test_fake_answers_like_telegram() -> None:
    async with FakeBotAPI() as fake, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{fake.port}"
        async with http.post(f"{base}/bot{fake.token}/noSuchMethod") as r:
            assert r.status == 400 and (await r.json())["ok"] is False
        async with http.post(f"{base}/bot{fake.token}/sendChatAction", data={"chat_id": "5", "action": "typing"}) as r:
            assert r.status == 200 and (await r.json())["result"] is True
        async with http.post(f"{base}/botWRONG/getMe") as r:
            assert r.status == 401
        assert [c.method for c in fake.calls] == ["noSuchMethod", "sendChatAction", "getMe"]
        async with http.post(f"{base}/bot{fake.token}/sendMessage", data={"chat_id": "5", "text": "x" * 4097}) as r:
            assert r.status == 400 and "too long" in (await r.json())["description"]


async def test_fake_forum_topics_and_group_limit() -> None:
    async with FakeBotAPI() as fake:
        bot = Bot(fake.token, base_url=fake.base_url, request=HTTPXRequest(httpx_kwargs={"trust_env": False}))
        async with bot:
            fake.make_forum(-1001)
            topic = await bot.create_forum_topic(-1001, "Anna · backup stuck")
            msg = await bot.send_message(-1001, "hello", message_thread_id=topic.message_thread_id)
            assert msg.message_thread_id == topic.message_thread_id
            await bot.pin_chat_message(-1001, msg.message_id)
            await bot.edit_forum_topic(-1001, topic.message_thread_id, name="Anna · solved")
            await bot.delete_forum_topic(-1001, topic.message_thread_id)
            with pytest.raises(BadRequest, match="thread not found"):
                await bot.send_message(-1001, "again", message_thread_id=topic.message_thread_id)
            with pytest.raises(BadRequest, match="not a forum"):
                await bot.create_forum_topic(-1002, "x")
            policy = fake.limit_groups(per_minute=3)
            for i in range(3):
                await bot.send_message(-1003, f"m{i}")
            with pytest.raises(RetryAfter):
                await bot.send_message(-1003, "one too many")
            assert policy.refused == 1
            await bot.send_message(42, "private chats are not limited by it")

        def refuse(fake_: FakeBotAPI, call: Any) -> ApiError | None:
            return ApiError(400, "Bad Request: custom policy") if call.method == "getChat" else None

        fake.policies.append(refuse)
        async with bot:
            with pytest.raises(BadRequest, match="(?i)custom policy"):
                await bot.get_chat(42)


async def test_file_fetcher_downloads_and_refuses_big_files() -> None:
    from bot.escalation.ports import FileTooLarge

    async with FakeBotAPI() as fake:
        fake.files["files/photo-1"] = b"\xff\xd8jpeg bytes"
        bot = Bot(
            fake.token,
            base_url=fake.base_url,
            base_file_url=fake.base_file_url,
            request=HTTPXRequest(httpx_kwargs={"trust_env": False}),
        )
        async with bot:
            fetcher = TelegramFileFetcher(bot, limit=100)
            data, mime = await fetcher.fetch("photo-1")  # type: ignore[misc]
            assert data == b"\xff\xd8jpeg bytes" and mime == "application/octet-stream"
            fake.files["files/huge"] = b"x" * 101
            with pytest.raises(FileTooLarge):
                await fetcher.fetch("huge")
            fake.fail("getFile", status=400, description="Bad Request: file is too big")
            with pytest.raises(FileTooLarge):
                await fetcher.fetch("bigger")
            fake.fail("getFile", status=400, description="Bad Request: wrong file_id")
            assert await fetcher.fetch("gone") is None


async def test_the_unused_processed_updates_table_is_gone_from_the_database(tmp_path: Any) -> None:
    # update ids live in tg_inbox; the old table (migration 1) is dropped by a later one
    from bot.store.sqlite import SQLiteStore

    store = await SQLiteStore.open(tmp_path / "bot.db")
    try:
        tables = {r[0] for r in await store.db.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        await store.close()
    assert "tg_inbox" in tables and "processed_updates" not in tables


# -- the intake's redaction -------------------------------------------------------------------------
def test_a_pressed_message_is_stored_redacted_every_time_and_user_texts_are_never_memoised() -> None:
    from bot.tg.intake import _redact_bots_text, redact_update

    echo = "Here is what you told me:\nDevice: iPhone 12 mini\nNote: my apple id password is Sunsh1ne!! pls help"
    press = {
        "update_id": 1,
        "callback_query": {
            "id": "q1",
            "from": {"id": 7, "is_bot": False, "first_name": "Jo"},
            "chat_instance": "c",
            "data": "1:send",
            "message": {
                "message_id": 3,
                "date": 1,
                "chat": {"id": 7, "type": "private"},
                "text": echo,
                "reply_markup": {"inline_keyboard": [[{"text": "Send it", "callback_data": "1:send"}]]},
            },
        },
    }
    for _ in range(2):  # the second time from the memo
        stored = json.dumps(redact_update(press))
        assert "Sunsh1ne" not in stored and "[redacted]" in stored and "iPhone 12 mini" in stored
    assert press["callback_query"]["message"]["text"] == echo, "the update as it came is left alone"
    before = _redact_bots_text.cache_info().currsize
    typed = {"update_id": 2, "message": {"message_id": 4, "date": 1, "chat": {"id": 7, "type": "private"},
                                         "text": "ok so my passcode is 482913 and backup still fails??"}}
    assert "482913" not in json.dumps(redact_update(typed))
    assert _redact_bots_text.cache_info().currsize == before, "a user's own text is not kept in the memo"
