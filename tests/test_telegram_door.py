"""The Telegram door end to end: the real PTB Application talking HTTP to the fake Bot API.

Whole conversations in polling and webhook mode, every update kind, and every fault the
door must survive. Assertions are on what the fake server received. No sleeps: every wait
is on a condition (the fake's ``wait_for``, the door's "update handled" signal).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bot.config import Settings
from bot.core.content import load_content
from bot.core.engine import Engine
from bot.core.messages import Button, EventKind, Hint, Inbound, Reply
from bot.features import standard_features
from bot.runtime import Knowledge, Runtime, load_knowledge, open_runtime
from bot.tg.door import ALLOWED_UPDATES, MENU_COMMANDS
from bot.tg.ratelimit import RateLimits
from bot.tg.render import visible
from tests.support.fake_botapi import (
    WEBHOOK_SECRET,
    FakeBotAPI,
    RateLimitPolicy,
    is_group_chat,
    running_bot,
)

ROOT = Path(__file__).resolve().parents[1]

# Texts the door needs from content/. If content/ lacks them, the tests add them to a
# copy (the report asks for them to be added for real).
DOOR_TEXTS: dict[str, str] = {
    "engine.internal_error": "Sorry, something went wrong on my side. Try again, or send /restart.",
    "telegram.edited_message": "I saw you edited a message. I only read new messages, so please "
    "send the correction as a new one.",
    "telegram.private_only": "I only work in private chats. Write to me directly: {bot}",
    "commands.start": "Start over: the main menu",
    "commands.help": "How this works",
    "commands.restart": "Start over",
    "commands.back": "One step back",
    "commands.cancel": "Stop this topic",
    "commands.quote": "Request a data-recovery quote",
    "commands.status": "Your quote request",
    "commands.privacy": "What I keep about you",
    "commands.forget": "Delete what I keep about you",
}


@pytest.fixture(scope="module")
def tg_knowledge(tmp_path_factory: pytest.TempPathFactory) -> Knowledge:
    content = tmp_path_factory.mktemp("tg") / "content"
    shutil.copytree(ROOT / "content", content)
    existing, _ = load_content(content, "en")
    nested: dict[str, Any] = {}
    for key, text in DOOR_TEXTS.items():
        if existing.has(key):
            continue
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = text
    if nested:
        (content / "en" / "zz_telegram_test.yaml").write_text(
            yaml.safe_dump(nested, allow_unicode=True), encoding="utf-8"
        )
    return load_knowledge(content, ROOT / "flows", "en", standard_features().all)


async def _runtime(knowledge: Knowledge, path: Path) -> Runtime:
    features = standard_features(Settings(), desk=False, deliver=False)
    return await open_runtime(path, ROOT / "content", ROOT / "flows", features=features.all, knowledge=knowledge)


@pytest.fixture
async def runtime(tg_knowledge: Knowledge, tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await _runtime(tg_knowledge, tmp_path / "tg.db")
    yield rt
    await rt.close()


@pytest.fixture(params=["polling", "webhook"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def text_of(knowledge: Knowledge, key: str, **values: str) -> str:
    return visible(knowledge.content.text(key, values or None)).strip("\n")


def user_name(chat_id: int) -> str:
    return f"User{chat_id}"


class Reference:
    """The same conversation through a second engine with its own store, as the terminal
    would have it: what the Telegram user sees must match it turn by turn."""

    def __init__(self, engine: Engine, chat_id: int) -> None:
        self.engine = engine
        self.cid = f"tg:{chat_id}"
        self.name = user_name(chat_id)
        self.buttons: tuple[Button, ...] = ()

    async def send(self, kind: EventKind, **kw: Any) -> tuple[Reply, ...]:
        replies = await self.engine.handle(Inbound(self.cid, kind, user_name=self.name, **kw))
        for r in replies:
            if r.buttons:
                self.buttons = r.buttons
        return replies


def seen(replies: tuple[Reply, ...]) -> list[tuple[str, list[str]]]:
    """What one turn looks like in Telegram: one message, the texts joined, the last keyboard."""
    texts = [visible(r.text).strip("\n") for r in replies if r.text.strip()]
    labels: list[str] = []
    for r in replies:
        if r.buttons:
            labels = [b.label for b in r.buttons]
    return [("\n\n".join(texts), labels)] if texts else []


def got(messages: list[Any]) -> list[tuple[str, list[str]]]:
    return [(m.text, m.labels) for m in messages]


# -- conversations -------------------------------------------------------------------------
async def test_start_sets_up_and_greets(runtime: Runtime, tg_knowledge: Knowledge, mode: str) -> None:
    async with running_bot(runtime, mode=mode) as bot:
        new = await bot.command(101, "start")
        fake = bot.fake
        (menu,) = new  # one turn, one message: the greeting and the menu question together
        assert menu.text.startswith(text_of(tg_knowledge, "engine.greeting"))
        assert menu.labels, "the main menu comes with buttons"
        assert len(fake.calls_of("sendMessage", chat_id=101)) == 1
        assert all(len(b["callback_data"].encode()) <= 64 for b in new[-1].buttons)
        # the command menu: every command the engine knows and content describes
        (cmds_call,) = fake.calls_of("setMyCommands")
        sent = {c["command"]: c["description"] for c in cmds_call.params["commands"]}
        expected = {n for n in MENU_COMMANDS if n in runtime.engine.commands}
        assert set(sent) == expected
        assert sent["help"] == text_of(tg_knowledge, "commands.help")
        assert fake.allowed_updates == list(ALLOWED_UPDATES)
        if mode == "webhook":
            (hook,) = fake.calls_of("setWebhook")
            assert hook.params["secret_token"] == WEBHOOK_SECRET
            assert hook.params["allowed_updates"] == list(ALLOWED_UPDATES)
            assert fake.calls_of("getUpdates") == []
        else:
            assert fake.methods()[:2] == ["getMe", "setMyCommands"]
            first_poll = fake.calls_of("getUpdates")[0]
            assert first_poll.params["allowed_updates"] == list(ALLOWED_UPDATES)


async def test_conversation_matches_the_engine_turn_by_turn(
    runtime: Runtime, tg_knowledge: Knowledge, tmp_path: Path, mode: str
) -> None:
    ref_rt = await _runtime(tg_knowledge, tmp_path / "reference.db")
    chat = 202
    ref = Reference(ref_rt.engine, chat)
    try:
        async with running_bot(runtime, mode=mode) as bot:
            steps: list[tuple[str, Any]] = [
                ("command", "start"),
                ("press", 0),
                ("press", 0),
                ("say", "thanks"),
                ("say", "my backup is stuck at 30% for two days"),
                ("press", -1),
                ("command", "back"),
                ("say", "is icloud down?"),
                ("command", "restart"),
            ]
            for kind, arg in steps:
                if kind == "command":
                    new = await bot.command(chat, arg)
                    replies = await ref.send(EventKind.COMMAND, text=arg)
                elif kind == "press":
                    button = ref.buttons[arg]
                    new = await bot.press(chat, data=button.id)
                    replies = await ref.send(EventKind.BUTTON, payload=button.id)
                else:
                    new = await bot.say(chat, arg)
                    replies = await ref.send(EventKind.TEXT, text=arg)
                assert got(new) == seen(replies), f"after {kind} {arg!r}"
    finally:
        await ref_rt.close()


async def test_press_is_answered_and_its_keyboard_spent(runtime: Runtime, mode: str) -> None:
    async with running_bot(runtime, mode=mode) as bot:
        await bot.command(303, "start")
        menu = bot.fake.last_keyboard(303)
        label = menu.labels[0]
        new = await bot.press(303, index=0)
        assert new, "the press moved the conversation on"
        await bot.settled()  # the pressed message's edit is housekeeping: after the answer
        (answer,) = bot.fake.calls_of("answerCallbackQuery")
        assert answer.ok and all(q["answered"] for q in bot.fake.callback_queries.values())
        # the pressed message: keyboard gone, the choice shown, so it can't be pressed twice
        assert menu.keyboard is None
        assert menu.text.endswith(f"» {label}")
        state = await runtime.engine.state_of("tg:303")
        assert state is not None and state.flow != "main_menu"


async def test_stale_button_gets_earlier_step_answer(runtime: Runtime, tg_knowledge: Knowledge, mode: str) -> None:
    async with running_bot(runtime, mode=mode) as bot:
        await bot.command(404, "start")
        old_menu = bot.fake.last_keyboard(404)
        old_data = old_menu.buttons[1]["callback_data"]
        await bot.press(404, index=0)
        await bot.settled()
        before = await runtime.engine.state_of("tg:404")
        # a press on a keyboard from an earlier step (e.g. an old message's cached buttons)
        bot.fake.messages[404][old_menu.message_id].keyboard = [[{"text": "x", "callback_data": old_data}]]
        calls = len(bot.fake.calls)
        old_text = bot.fake.messages[404][old_menu.message_id].text
        new = await bot.press(404, message_id=old_menu.message_id, data=old_data)
        answer = bot.fake.calls_of("answerCallbackQuery")[-1]
        assert answer.params["text"] == tg_knowledge.content.raw("engine.stale_button")[:200]
        assert new == [], "the toast only: no extra chat message, no repeated step"
        assert [c.method for c in bot.fake.calls[calls:]] == ["getUpdates", "answerCallbackQuery"] or [
            c.method for c in bot.fake.calls[calls:] if c.method != "getUpdates"
        ] == ["answerCallbackQuery"]
        assert bot.fake.messages[404][old_menu.message_id].text == old_text, "never labelled with a wrong choice"
        after = await runtime.engine.state_of("tg:404")
        assert after == before, "a stale press changes nothing"


async def test_typing_retires_the_previous_keyboard(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        await bot.command(505, "start")
        menu = bot.fake.last_keyboard(505)
        new = await bot.say(505, "my icloud storage is full")
        assert any(m.keyboard for m in new)
        # retired lazily, as housekeeping after the answer
        await bot.fake.wait_for(lambda: menu.keyboard is None, what="the old menu retired")


async def test_deep_link_opens_the_flow(runtime: Runtime, tg_knowledge: Knowledge) -> None:
    async with running_bot(runtime) as bot:
        await bot.command(606, "start", "storage_full")
        state = await runtime.engine.state_of("tg:606")
        assert state is not None and state.flow == "storage_full"
        new = await bot.command(607, "start", "no_such_thing")
        assert new[0].text.startswith(text_of(tg_knowledge, "engine.greeting"))
        state = await runtime.engine.state_of("tg:607")
        assert state is not None and state.flow == "main_menu"


async def test_html_is_escaped_and_long_replies_split(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        door = bot.door
        await door.deliver(808, [Reply('<b>x</b> & "q" **Settings > iCloud**')])
        await bot.settled()
        msg = bot.fake.last(808)
        assert msg.text == '<b>x</b> & "q" Settings > iCloud'
        assert [e["type"] for e in msg.entities] == ["bold"]
        para = "word " * 150
        long = "\n\n".join(f"{i} {para}".strip() for i in range(12))  # ~9000 characters
        buttons = (Button("1:a", "A"), Button("1:b", "B"))
        n = await door.deliver(808, [Reply(long, buttons=buttons, hint=Hint.REPLACE_KEYBOARD)])
        await bot.settled()
        parts = bot.fake.sent(808)[-n:]
        assert n >= 3 and all(len(p.text) <= 4096 for p in parts)
        assert [p.keyboard is not None for p in parts] == [False] * (n - 1) + [True]
        assert "\n\n".join(p.text for p in parts) == long
        assert all(p.text.split(" ", 1)[0].isdigit() for p in parts), "split at paragraphs"


# -- every update kind -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind",
    ["photo", "voice", "video", "video_note", "audio", "animation", "sticker", "document", "location", "contact"],
)
async def test_media_gets_text_only_answer(runtime: Runtime, tg_knowledge: Knowledge, kind: str) -> None:
    async with running_bot(runtime) as bot:
        await bot.command(909, "start")
        new = await bot.media(909, kind)
        assert new[0].text.startswith(text_of(tg_knowledge, "engine.media_only_text"))
        rows = await runtime.store.messages("tg:909")
        assert any(r.kind == "media" and f"[{kind}" in r.text for r in rows)


async def test_edited_message_is_answered_with_a_reason(runtime: Runtime, tg_knowledge: Knowledge) -> None:
    async with running_bot(runtime) as bot:
        await bot.command(111, "start")
        before = await runtime.engine.state_of("tg:111")
        upd = bot.fake.edit_text(111, 1, "my backup is stuck")
        await bot.wait_handled(upd)
        assert bot.fake.last(111).text == text_of(tg_knowledge, "telegram.edited_message")
        assert await runtime.engine.state_of("tg:111") == before


async def test_groups_and_channels_get_one_notice_and_are_left(runtime: Runtime, tg_knowledge: Knowledge) -> None:
    settings = Settings(agent_chat_id=-100400)
    async with running_bot(runtime, settings=settings) as bot:
        fake = bot.fake
        notice = text_of(tg_knowledge, "telegram.private_only", bot=f"@{fake.username}")
        await bot.wait_handled(fake.send_text(-100123, "hello bot"))
        await bot.wait_handled(fake.send_text(-100123, "hello again"))
        assert fake.texts(-100123) == [notice]
        assert [c.params["chat_id"] for c in fake.calls_of("leaveChat")] == [-100123]
        # added to another group: the same, once
        await bot.wait_handled(fake.member_status(-100200, "member", old_status="left"))
        assert fake.texts(-100200) == [notice]
        # a channel: just leave
        fake.add_chat(-100300, "channel")
        await bot.wait_handled(fake.member_status(-100300, "administrator", old_status="left"))
        assert fake.texts(-100300) == []
        assert -100300 in fake.left_chats
        # the agents' group belongs to another feature: the door stays out of it
        await bot.wait_handled(fake.send_text(-100400, "agent chatter"))
        assert fake.calls_of("sendMessage", chat_id=-100400) == []
        assert -100400 not in fake.left_chats
        assert await runtime.store.conversations() == []


async def test_block_and_unblock_via_my_chat_member(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        await bot.command(222, "start")
        bot.fake.block(222, notify=True)
        await bot.fake.wait_for(lambda: bot.door.is_blocked(222), what="block seen")
        await bot.fake.wait_for(lambda: bot.handled[bot.fake._next_update_id - 1] >= 1)
        state = await runtime.engine.state_of("tg:222")
        assert state is not None and not state.active
        calls = len(bot.fake.calls)
        assert await bot.door.deliver(222, [Reply("anyone there?")]) == 0
        assert len(bot.fake.calls) == calls, "nothing is sent to a user who blocked the bot"
        bot.fake.unblock(222, notify=True)
        await bot.fake.wait_for(lambda: not bot.door.is_blocked(222), what="unblock seen")
        await bot.fake.wait_for(lambda: bot.handled[bot.fake._next_update_id - 1] >= 1)
        state = await runtime.engine.state_of("tg:222")
        assert state is not None and state.active


async def test_duplicate_update_is_ignored(runtime: Runtime, mode: str) -> None:
    async with running_bot(runtime, mode=mode) as bot:
        fake = bot.fake
        first = fake.command(333, "start")
        fake.push(dict(first))  # delivered again (at least once), same update_id
        await bot.wait_handled(first, times=2)
        assert len(fake.sent(333)) == 1
        assert len(fake.calls_of("sendMessage", chat_id=333)) == 1
        rows = await runtime.store.messages("tg:333")
        assert sum(r.kind == "command" for r in rows) == 1


# -- ordering and concurrency ---------------------------------------------------------------------
async def test_two_quick_messages_are_answered_in_order(runtime: Runtime, tg_knowledge: Knowledge) -> None:
    async with running_bot(runtime) as bot:
        fake = bot.fake
        await bot.command(444, "start")
        # Telegram is slow with the first answer; the second message must still wait its turn
        fake.stall("sendMessage", seconds=0.3)
        first = fake.command(444, "help")
        second = fake.command(444, "cancel")
        await bot.wait_handled(first)
        await bot.wait_handled(second)
        texts = fake.texts(444)[1:]
        help_text = text_of(tg_knowledge, "engine.help")
        cancelled = text_of(tg_knowledge, "engine.cancelled")
        assert len(texts) == 2
        assert texts[0].startswith(help_text) and texts[1].startswith(cancelled)


async def test_many_users_at_once(runtime: Runtime, tg_knowledge: Knowledge) -> None:
    async with running_bot(runtime) as bot:
        chats = list(range(5000, 5040))

        async def user(chat: int) -> list[tuple[str, list[str]]]:
            out = got(await bot.command(chat, "start"))
            out += got(await bot.press(chat, index=0))
            out += got(await bot.say(chat, "thanks"))
            out += got(await bot.say(chat, "my backup is stuck"))
            return out

        results = await asyncio.gather(*(user(c) for c in chats))
        assert all(r == results[0] for r in results), "every user saw the same conversation"
        apology = text_of(tg_knowledge, "engine.internal_error")
        assert all(apology not in m.text for c in chats for m in bot.fake.sent(c))
        assert len(await runtime.store.conversations(limit=100)) == len(chats)


# -- faults ------------------------------------------------------------------------------------------
async def test_429_is_waited_out_and_nothing_dropped(runtime: Runtime, tg_knowledge: Knowledge) -> None:
    async with running_bot(runtime) as bot:
        fake = bot.fake
        fake.fail("sendMessage", status=429, retry_after=1)
        new = await bot.command(555, "start")
        assert new[0].text.startswith(text_of(tg_knowledge, "engine.greeting"))
        assert new[-1].labels
        calls = fake.calls_of("sendMessage", chat_id=555)
        assert [c.status for c in calls] == [429] + [200] * len(new)
        assert calls[1].received_at - calls[0].answered_at >= 0.9, "waited retry_after"
        assert calls[1].params["text"] == calls[0].params["text"], "the same message again"


async def test_403_marks_inactive_without_retry_storm(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        fake = bot.fake
        fake.block(666)  # blocked, but the my_chat_member update hasn't arrived yet
        await bot.command(666, "start")
        calls = fake.calls_of("sendMessage", chat_id=666)
        assert [c.status for c in calls] == [403], "one attempt, no retries, no apology"
        state = await runtime.engine.state_of("tg:666")
        assert state is not None and not state.active
        assert bot.door.is_blocked(666)


async def test_400_on_edits_is_logged_and_ignored(
    runtime: Runtime, tg_knowledge: Knowledge, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bot(runtime) as bot:
        fake = bot.fake
        await bot.command(777, "start")
        fake.fail("editMessageText", status=400, description="Bad Request: message to edit not found")
        new = await bot.press(777, index=0)
        assert new, "the conversation went on"
        assert fake.calls_of("answerCallbackQuery")[-1].ok
        fake.fail(
            "editMessageReplyMarkup",
            status=400,
            description="Bad Request: message is not modified: specified new message "
            "content and reply markup are exactly the same",
        )
        new = await bot.say(777, "is icloud down?")
        assert new
        apology = text_of(tg_knowledge, "engine.internal_error")
        assert all(m.text != apology for m in fake.sent(777))
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_5xx_on_send_is_retried(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        fake = bot.fake
        fake.fail("sendMessage", status=502)
        new = await bot.command(888, "start")
        calls = fake.calls_of("sendMessage", chat_id=888)
        assert [c.status for c in calls] == [502] + [200] * len(new)
        assert len(new) == 1


async def test_polling_recovers_from_5xx(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        fake = bot.fake
        fake.fail("getUpdates", status=502, times=2)
        await fake.wait_for(
            lambda: len([c for c in fake.calls_of("getUpdates") if c.status == 502]) == 2,
            timeout=6,
            what="two failed polls",
        )
        new = await bot._push(990, lambda: fake.command(990, "start"), timeout=10)
        assert len(new) == 1


async def test_polling_recovers_from_a_timeout(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        fake = bot.fake
        stall = fake.stall("getUpdates")  # this poll never answers (until the test ends)
        await asyncio.wait_for(stall.hit.wait(), 5)
        new = await bot._push(991, lambda: fake.command(991, "start"), timeout=10)
        assert len(new) == 1
        stalled = [c for c in fake.calls_of("getUpdates") if c.status == 0]
        assert stalled, "the reply came through a new poll, not the stalled one"
        stall.release()


async def test_engine_failure_is_polite_and_isolated(
    runtime: Runtime, tg_knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    matcher = runtime.engine.matcher
    real_match = matcher.match

    def match(text: str) -> Any:
        if "boom" in text:
            raise RuntimeError("matcher exploded")
        return real_match(text)

    monkeypatch.setattr(matcher, "match", match)
    async with running_bot(runtime) as bot:
        await bot.command(1212, "start")
        before = await runtime.engine.state_of("tg:1212")
        boom = bot.fake.send_text(1212, "boom")
        other = bot.fake.command(1313, "start")  # another user at the same moment
        await bot.wait_handled(boom)
        await bot.wait_handled(other)
        assert bot.fake.last(1212).text == text_of(tg_knowledge, "engine.internal_error")
        assert await runtime.engine.state_of("tg:1212") == before, "state not corrupted"
        assert len(bot.fake.sent(1313)) == 1, "the other user is unaffected"
        failed = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert any(f"update {boom['update_id']} failed" in r.getMessage() for r in failed)
        new = await bot.press(1212, index=0)
        assert new and new[0].text != text_of(tg_knowledge, "engine.internal_error")


async def test_engine_failure_on_a_press_still_answers_it(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(turn: Any, bid: str) -> None:
        raise RuntimeError("flow bug")

    async with running_bot(runtime) as bot:
        await bot.command(1414, "start")
        monkeypatch.setattr(runtime.engine, "_press", broken)
        await bot.press(1414, index=0)
        assert all(q["answered"] for q in bot.fake.callback_queries.values()), "no spinner"


async def test_outgoing_group_limit_is_respected(runtime: Runtime) -> None:
    limits = RateLimits(overall=None, private=None, group=(3, 0.5))
    async with running_bot(runtime, limits=limits) as bot:
        fake = bot.fake
        # Telegram's limit (as the fake enforces it) is a little looser than what the bot
        # keeps to, as with the real one: 3 per 0.4 s there, 3 per 0.5 s here
        policy = RateLimitPolicy(3, 0.4, chats=is_group_chat)
        fake.policies.append(policy)
        started = time.monotonic()
        for i in range(7):
            await bot.door.deliver(-100777, [Reply(f"note {i}")])
        await bot.settled()
        assert fake.texts(-100777) == [f"note {i}" for i in range(7)]
        assert policy.refused == 0, "the door kept within the group limit by itself"
        assert time.monotonic() - started >= 0.9


async def test_group_limit_enforced_by_fake_is_waited_out(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:  # no limits on our side: the fake's 429s decide
        fake = bot.fake
        policy = RateLimitPolicy(2, 1.0, chats=is_group_chat)
        fake.policies.append(policy)
        for i in range(3):
            await bot.door.deliver(-100778, [Reply(f"n{i}")])
        await bot.settled()
        assert fake.texts(-100778) == ["n0", "n1", "n2"]
        assert policy.refused >= 1


# -- the webhook endpoint ----------------------------------------------------------------------------
def _update(update_id: int, chat_id: int, text: str) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "message_id": 1,
        "date": int(time.time()),
        "text": text,
        "chat": {"id": chat_id, "type": "private", "first_name": "Ann"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Ann"},
    }
    if text.startswith("/"):
        msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return {"update_id": update_id, "message": msg}


async def test_webhook_checks_the_secret_and_serves_healthz(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    async with running_bot(runtime, mode="webhook") as bot:
        server = bot.service.server
        assert server is not None
        url = f"http://127.0.0.1:{server.port}{server.path}"
        assert server.path == "/telegram/hook"
        header = "X-Telegram-Bot-Api-Secret-Token"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=_update(9001, 1515, "/start")) as r:
                assert r.status == 403
            async with http.post(url, json=_update(9002, 1515, "/start"), headers={header: "wrong"}) as r:
                assert r.status == 403
            async with http.post(url, data="not json", headers={header: WEBHOOK_SECRET}) as r:
                assert r.status == 400
            assert bot.fake.calls_of("sendMessage") == [], "refused requests were never handled"
            async with http.post(url, json=_update(9003, 1515, "/start"), headers={header: WEBHOOK_SECRET}) as r:
                assert r.status == 200
            await bot.wait_handled({"update_id": 9003})
            assert len(bot.fake.sent(1515)) == 1
            async with http.get(f"http://127.0.0.1:{server.port}/healthz") as r:
                assert r.status == 200
                body = await r.json()
                assert body["ok"] is True and body["mode"] == "webhook" and body["db"] == "ok"
        assert server.refused == 2
        from bot.tg import healthcheck

        ok, detail = await asyncio.to_thread(healthcheck.check, server.port)
        assert ok, detail


async def test_webhook_delivery_retries_until_accepted(runtime: Runtime) -> None:
    fake = FakeBotAPI()
    async with fake:
        fake.push(_update(1, 1616, "/start"))  # queued before the bot even starts
        async with running_bot(runtime, mode="webhook", fake=fake) as bot:
            await bot.wait_handled({"update_id": 1})
            assert len(fake.sent(1616)) == 1
            assert fake.webhook_deliveries[-1] == (1, 200)


async def test_bot_start_with_a_rejected_token_fails_clearly(runtime: Runtime) -> None:
    from telegram.error import InvalidToken

    from bot.tg.service import TelegramService

    async with FakeBotAPI() as fake:
        settings = Settings(
            telegram_token="999:wrong", telegram_base_url=fake.base_url, telegram_base_file_url=fake.base_file_url
        )
        service = TelegramService(settings, runtime, trust_env=False)
        with pytest.raises(InvalidToken):
            async with service:
                pass


async def test_httpx_transport_also_works(runtime: Runtime) -> None:
    async with running_bot(runtime, http="httpx") as bot:
        new = await bot.command(1717, "start")
        assert len(new) == 1
