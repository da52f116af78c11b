"""Nothing lost, nothing doubled, within Telegram's budget (issues 10 and 14), through the real
PTB Application and the real door against the fake Bot API on 127.0.0.1.

Durable intake and replies (kill -9, restarts, a stop mid-send), one message per turn, one
edit per press, the toast only for a stale press, answers before housekeeping, the typing
indicator, a deaf bot that exits, hostile updates skipped, hostile file paths refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from telegram import Bot
from telegram.request import HTTPXRequest

from bot.config import Settings
from bot.core.messages import EventKind, Inbound, Reply
from bot.runtime import Knowledge, Runtime
from bot.tg.features import TelegramFileFetcher
from bot.tg.ratelimit import RateLimits
from bot.tg.render import visible
from bot.tg.wire import WireRequest
from bot.testing.fakeapi import TotalRateLimit
from tests.support.fake_botapi import FakeBotAPI, RateLimitPolicy, is_group_chat, running_bot
from tests.test_telegram_door import _runtime, runtime, tg_knowledge  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]


def text_of(knowledge: Knowledge, key: str) -> str:
    return visible(knowledge.content.text(key)).strip("\n")


# -- one message per turn, one edit per press -------------------------------------------------------
async def test_a_turn_with_an_explanation_and_a_question_is_one_message(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        await bot.command(2001, "start")
        replies = await runtime.engine.handle(
            Inbound("tg:reference", EventKind.TEXT, text="my icloud storage is full and it wont back up anymore")
        )
        assert len([r for r in replies if r.text.strip()]) >= 2, "the engine says more than one thing here"
        before = len(bot.fake.calls_of("sendMessage", chat_id=2001))
        new = await bot.say(2001, "my icloud storage is full and it wont back up anymore")
        assert len(new) == 1 and new[0].labels, "the explanation and the question in one message"
        assert len(bot.fake.calls_of("sendMessage", chat_id=2001)) == before + 1


async def test_a_press_is_one_edit_plus_the_next_message(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        await bot.command(2002, "start")
        menu = bot.fake.last_keyboard(2002)
        mark = len(bot.fake.calls)
        new = await bot.press(2002, index=0)
        await bot.settled()
        methods = [c.method for c in bot.fake.calls[mark:] if c.method != "getUpdates"]
        assert sorted(methods) == ["answerCallbackQuery", "editMessageText", "sendMessage"]
        assert len(new) == 1 and menu.keyboard is None and "» " in menu.text


async def test_a_double_tap_gets_the_toast_only(runtime: Runtime, tg_knowledge: Knowledge) -> None:
    async with running_bot(runtime) as bot:
        await bot.command(2003, "start")
        menu = bot.fake.last_keyboard(2003)
        first = bot.fake.press(2003, message_id=menu.message_id, index=0)
        data = first["callback_query"]["data"]
        second = bot.fake.press(2003, message_id=menu.message_id, data=data)  # the same button again
        await bot.wait_handled(first)
        await bot.wait_handled(second)
        await bot.settled()
        state = await runtime.engine.state_of("tg:2003")
        assert len(bot.fake.sent(2003)) == 2, "the menu and one answer: no repeated reply"
        toasts = [c.params.get("text") for c in bot.fake.calls_of("answerCallbackQuery")]
        assert toasts[-1] == tg_knowledge.content.raw("engine.stale_button")[:200]
        assert menu.text.count("» ") == 1, "the pressed message shows one choice"
        assert await runtime.engine.state_of("tg:2003") == state


async def test_a_multi_select_step_edits_its_keyboard_in_place(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        chat = 2004
        await bot.command(chat, "quote")
        for _ in range(10):
            state = await runtime.engine.state_of(f"tg:{chat}")
            assert state is not None
            if state.step == "ask_data":
                break
            if state.step == "ask_device":
                await bot.say(chat, "its an iphone 12 pro")
            else:
                await bot.press(chat, index=0)
        assert state.step == "ask_data"
        picker = bot.fake.last_keyboard(chat)
        sent_before = len(bot.fake.sent(chat))
        for i in range(3):
            new = await bot.press(chat, message_id=picker.message_id, index=i)
            assert new == [], "no new copy of the question per tap"
        assert len(bot.fake.sent(chat)) == sent_before
        assert sum("✓" in label for label in picker.labels) == 3, "the same message shows the three picks"


async def test_a_captioned_screenshot_is_read_like_the_same_text(runtime: Runtime, tg_knowledge: Knowledge, tmp_path: Path) -> None:
    reference = await _runtime(tg_knowledge, tmp_path / "reference.db")
    caption = "icloud storage full, it won't back up"
    try:
        expected = await reference.engine.handle(Inbound("tg:2011", EventKind.TEXT, text=caption, user_name="User2011"))
        async with running_bot(runtime) as bot:
            new = await bot.media(2011, "photo", caption=caption)
            assert len(new) == 1
            assert new[0].labels == [b.label for b in expected[-1].buttons]
            state = await runtime.engine.state_of("tg:2011")
            assert state is not None and state.flow == (await reference.engine.state_of("tg:2011")).flow  # type: ignore[union-attr]
    finally:
        await reference.close()


# -- durable replies ---------------------------------------------------------------------------------
async def test_502s_delay_the_answer_but_never_replace_it_with_an_apology(runtime: Runtime, tg_knowledge: Knowledge) -> None:
    async with running_bot(runtime) as bot:
        bot.fake.fail("sendMessage", status=502, times=3)
        new = await bot._push(2005, lambda: bot.fake.command(2005, "start"), timeout=15)
        assert len(new) == 1 and new[0].labels, "the menu arrived, late"
        apology = text_of(tg_knowledge, "engine.internal_error")
        assert all(apology not in m.text for m in bot.fake.sent(2005))


async def test_after_an_answer_finally_fails_the_user_gets_the_current_step_again(
    runtime: Runtime, tg_knowledge: Knowledge
) -> None:
    async with running_bot(runtime) as bot:
        bot.door.sender.retry_delay = 0.01  # the back-off between attempts, shortened
        await bot.command(2010, "start")
        bot.fake.fail("sendMessage", status=502, times=100)  # Telegram fails every attempt
        update = bot.fake.send_text(2010, "my icloud storage is full and it wont back up anymore")
        await bot.wait_handled(update, timeout=15)  # handled: its answer was given up
        tries = bot.fake.calls_of("sendMessage", chat_id=2010)[1:]
        assert len(tries) >= 2 and all(c.status == 502 for c in tries), "the answer never arrived"
        missed = tries[-1].params
        before = await runtime.engine.state_of("tg:2010")
        bot.fake.faults.clear()  # Telegram is back; the user, puzzled, writes again
        new = await bot.say(2010, "hello?? did u get my message, is my backup fixable or not")
        assert len(new) == 1, "one message"
        assert new[0].text.startswith(text_of(tg_knowledge, "telegram.missed_answer"))
        question = visible(missed["text"]).strip().split("\n\n")[-1]
        assert question in new[0].text, "the step the user never saw, shown again"
        assert new[0].labels == [b["text"] for row in missed["reply_markup"]["inline_keyboard"] for b in row]
        after = await runtime.engine.state_of("tg:2010")
        assert before is not None and after is not None and (after.flow, after.step) == (before.flow, before.step), (
            "'hello??' was not read as an answer to a step the user never saw"
        )


async def test_replies_queued_at_a_stop_go_out_after_the_restart(runtime: Runtime) -> None:
    fake = FakeBotAPI()
    async with fake:
        slow = RateLimits(overall=None, private=(1, 60.0), group=None)  # a second message waits a minute
        async with running_bot(runtime, fake=fake, limits=slow) as bot:
            await bot.command(2006, "start")
            update = fake.send_text(2006, "my backup is stuck at 30 percent for two days")
            await fake.wait_for(lambda: runtime_has_out(bot, update), what="the turn committed")
        assert len(fake.sent(2006)) == 1, "stopped before the answer could go out"
        async with running_bot(runtime, fake=fake) as bot:
            await bot.settled()
            assert len(fake.sent(2006)) == 2, "the queued answer went out after the restart"


def runtime_has_out(bot: Any, update: dict[str, Any]) -> bool:
    return bot.door.sender.pending(update["message"]["chat"]["id"]) > 0


async def test_after_a_restart_the_previous_keyboard_is_retired(runtime: Runtime) -> None:
    fake = FakeBotAPI()
    async with fake:
        async with running_bot(runtime, fake=fake) as bot:
            await bot.command(2007, "start")
        menu = fake.last_keyboard(2007)
        async with running_bot(runtime, fake=fake) as bot:
            new = await bot.say(2007, "my icloud storage is full")
            assert new[-1].keyboard
            await fake.wait_for(lambda: menu.keyboard is None, what="the old menu retired")


# -- the budget ----------------------------------------------------------------------------------------
async def test_the_agents_mirror_under_load_never_delays_a_users_answer(runtime: Runtime) -> None:
    limits = RateLimits(overall=(20, 1.0), private=(3, 2.0), group=None)
    async with running_bot(runtime, limits=limits) as bot:
        bot.fake.policies.append(TotalRateLimit(20, 1.0))  # Telegram's side enforces it too
        bot.fake.policies.append(RateLimitPolicy(3, 2.0, chats=lambda c: not is_group_chat(c)))
        await bot.command(2007, "start")
        # the agents' gateway mirrors many topics at once, straight through PTB: 3 s of budget
        mirror = asyncio.gather(*(bot.door.bot.send_message(-100555, f"mirror line {i}") for i in range(60)))
        await bot.fake.wait_for(lambda: bot.fake.calls_of("sendMessage", chat_id=-100555), what="mirror started")
        await bot.command(2008, "start")
        calls = [c for c in bot.fake.calls if c.method == "sendMessage"]
        answer = next(i for i, c in enumerate(calls) if c.params["chat_id"] == 2008)
        before = sum(c.params["chat_id"] == -100555 for c in calls[:answer])
        assert before < 30, f"the answer went out behind {before} of 60 mirror messages"
        await mirror
        assert len(bot.fake.texts(-100555)) == 60, "housekeeping slowed, not starved or dropped"


async def test_the_typing_indicator_shows_while_an_answer_waits(runtime: Runtime) -> None:
    async with running_bot(runtime, typing_after=0.3) as bot:
        bot.fake.stall("sendMessage", seconds=1.0)  # Telegram is slow to take the answer
        await bot.command(2009, "start")
        (typing,) = bot.fake.calls_of("sendChatAction", chat_id=2009)
        assert typing.params["action"] == "typing"
        quick = len(bot.fake.calls_of("sendChatAction"))
        await bot.command(2010, "start")
        assert len(bot.fake.calls_of("sendChatAction")) == quick, "no indicator for a quick answer"


@pytest.mark.parametrize("proxy", [False, True])
async def test_toasts_and_typing_take_the_queues_lean_transport_or_the_bots_behind_a_proxy(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, proxy: bool
) -> None:
    """A press's toast and the typing indicator are plain JSON requests on the outgoing queue's
    transport (no PTB objects, no second HTTP client); behind a proxy, which that transport does
    not speak, they still arrive, through the bot's own."""
    on_wire: list[str] = []
    do_request = WireRequest.do_request

    async def recorded(self: WireRequest, url: str, *args: Any, **kw: Any) -> tuple[int, bytes]:
        on_wire.append(url.rsplit("/", 1)[1])
        return await do_request(self, url, *args, **kw)

    monkeypatch.setattr(WireRequest, "do_request", recorded)
    if proxy:
        monkeypatch.setattr(WireRequest, "usable_for", staticmethod(lambda url: False))
    async with running_bot(runtime, typing_after=0.3) as bot:
        bot.fake.stall("sendMessage", seconds=1.0)
        await bot.command(2011, "start")
        menu = bot.fake.last_keyboard(2011)
        await bot.wait_handled(bot.fake.press(2011, message_id=menu.message_id, index=0))
        await bot.settled()
        (typing,) = bot.fake.calls_of("sendChatAction", chat_id=2011)
        assert typing.ok and typing.params == {"chat_id": 2011, "action": "typing"}
        (toast,) = bot.fake.calls_of("answerCallbackQuery")
        assert toast.ok and "text" not in toast.params, "a plain press: the spinner stops, no toast text"
    if proxy:
        assert on_wire == []
    else:
        assert {"sendChatAction", "answerCallbackQuery"} <= set(on_wire)


# -- intake: hostile updates, a deaf bot, the webhook ------------------------------------------------
MALFORMED: list[dict[str, Any]] = [
    {"message": {}},
    {"message": {"message_id": 5, "chat": {"id": 3001, "type": "private"}, "text": "no date"}},
    {"message": {"message_id": 6, "date": 1, "chat": {"id": 3001, "type": "private"}, "text": "x", "entities": "bold"}},
    {"message": {"message_id": 7, "date": 1, "chat": {"id": 3001, "type": "private"}, "photo": [{"width": 1}]}},
    {"message": {"message_id": 8, "date": 1, "chat": {"id": 3001, "type": "private"}, "sticker": {"file_id": "s"}}},
    {"message": {"message_id": 9, "date": 1, "chat": {"id": 3001, "type": "private"}, "from": {"id": 3001}, "text": "hi"}},
    {"message": {"message_id": 10, "date": "yesterday", "chat": {"id": 3001, "type": "private"}, "text": "my secret words"}},
]


async def test_malformed_updates_are_skipped_once_and_polling_goes_on(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bot(runtime) as bot:
        for body in MALFORMED:
            bot.fake.push(dict(body))
        polls = len(bot.fake.calls_of("getUpdates"))
        new = await bot.command(3002, "start")
        assert len(new) == 1, "the next user is answered"
        assert len(bot.fake.calls_of("getUpdates")) - polls < 10, "no hot loop on a bad update"
        assert bot.service.intake.skipped >= 5
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "my secret words" not in logged, "a skipped update's content never reaches the log"
        assert bot.fake.updates == [] or all(u["update_id"] > 7 for u in bot.fake.updates), "all confirmed"


async def test_broken_presses_are_skipped_once_and_the_next_press_is_answered(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bot(runtime) as bot:
        await bot.command(3004, "start")
        menu = bot.fake.last_keyboard(3004)
        user = {"id": 3004, "is_bot": False, "first_name": "Mia"}
        pressed = {"message_id": menu.message_id, "date": 1, "chat": {"id": 3004, "type": "private"},
                   "text": "my secret words"}
        broken = [
            {**pressed, "reply_markup": {"inline_keyboard": "rows"}},
            {**pressed, "entities": "bold"},
            {**pressed, "reply_markup": {"inline_keyboard": [[{"callback_data": "1:x"}]]}},  # a button without a label
        ]
        skipped = bot.service.intake.skipped
        for i, msg in enumerate(broken):
            query = {"id": f"broken{i}", "from": user, "chat_instance": "c", "data": "1:x", "message": msg}
            bot.fake.push({"callback_query": query})
        no_is_bot = {"id": 3004, "first_name": "Mia"}
        query = {"id": "broken-user", "from": no_is_bot, "chat_instance": "c", "data": "1:x", "message": pressed}
        bot.fake.push({"callback_query": query})
        new = await bot.press(3004, index=0)
        assert len(new) == 1, "the next press is answered"
        assert bot.service.intake.skipped - skipped == 4, "each broken press is skipped once"
        toasts = {c.params.get("callback_query_id") for c in bot.fake.calls_of("answerCallbackQuery")}
        assert not any(str(t).startswith("broken") for t in toasts), "a press that cannot be read is not answered"
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "my secret words" not in logged, "a skipped update's content never reaches the log"


async def test_a_string_update_id_is_read_as_a_number(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        update = bot.fake.command(3003, "start")
        update["update_id"] = str(update["update_id"])  # as a sloppy proxy might send it
        await bot.fake.wait_for(lambda: bot.fake.sent(3003), what="answered")
        assert len(bot.fake.sent(3003)) == 1


async def test_a_revoked_token_while_polling_exits_2(tmp_path: Path) -> None:
    from bot.tg.cli import run

    async with FakeBotAPI() as fake:
        settings = Settings(
            db_path=str(tmp_path / "bot.db"),
            maildir=str(tmp_path / "maildir"),
            telegram_token=fake.token,
            telegram_base_url=fake.base_url,
            telegram_base_file_url=fake.base_file_url,
        )
        polled = asyncio.Event()
        fake.on_call.append(lambda c: polled.set() if c.method == "getUpdates" else None)
        task = asyncio.create_task(run(settings))
        await asyncio.wait_for(polled.wait(), 15)
        fake.token = "0:revoked"  # every later call answers 401
        fake.send_text(3005, "hello")  # ends the parked poll; the next one is refused
        code = await asyncio.wait_for(task, 45)
        assert code == 2


async def test_webhook_secret_with_non_ascii_bytes_is_403(runtime: Runtime) -> None:
    async with running_bot(runtime, mode="webhook") as bot:
        server = bot.service.server
        assert server is not None
        body = json.dumps({"update_id": 1, "message": {}}).encode()
        head = (
            f"POST {server.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        ).encode() + b"X-Telegram-Bot-Api-Secret-Token: caf\xc3\xa9\xff\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head + body)
        await writer.drain()
        status = (await reader.readline()).decode()
        writer.close()
        assert " 403 " in status, status


# -- files ---------------------------------------------------------------------------------------------
async def test_a_file_path_naming_a_local_file_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    async with FakeBotAPI() as fake:

        async def get_file(call: Any) -> dict[str, Any]:
            return {"file_id": "f", "file_unique_id": "u", "file_size": 10, "file_path": str(call.params["file_id"])}

        fake.handlers["getFile"] = get_file
        bot = Bot(
            fake.token,
            base_url=fake.base_url,
            base_file_url=fake.base_file_url,
            request=HTTPXRequest(httpx_kwargs={"trust_env": False}),
        )
        async with bot:
            fetcher = TelegramFileFetcher(bot)
            for path in (str(secret), "../../../../" + str(secret).lstrip("/"), "file:///" + str(secret)):
                assert await fetcher.fetch(path) is None
            fake.files["photos/ok.jpg"] = b"\xff\xd8 jpeg"
            got = await fetcher.fetch("photos/ok.jpg")
            assert got is not None and got[0] == b"\xff\xd8 jpeg"


async def test_a_stop_during_the_polling_back_off_is_quick(runtime: Runtime) -> None:
    async with running_bot(runtime) as bot:
        bot.fake.fail("getUpdates", status=502, times=1000)  # Telegram is down: back-off grows
        await bot.fake.wait_for(
            lambda: len([c for c in bot.fake.calls_of("getUpdates") if c.status == 502]) >= 3, timeout=10, what="backing off"
        )
        await asyncio.wait_for(bot.service.stop(), 10)  # exits within 10 s, not after the back-off


# -- the stop -----------------------------------------------------------------------------------------
async def test_stop_is_bounded_and_leaves_unsent_replies_queued(runtime: Runtime) -> None:
    fake = FakeBotAPI()
    async with fake:
        settings = Settings(stop_drain_seconds=1)
        slow = RateLimits(overall=None, private=(1, 60.0), group=None)
        async with running_bot(runtime, fake=fake, limits=slow, settings=settings) as bot:
            await bot.command(3004, "start")
            for i in range(3):
                fake.send_text(3004, f"hello?? message {i}")
            await fake.wait_for(lambda: bot.door.sender.pending(3004) >= 1, what="answers queued")
            started = time.monotonic()
        assert time.monotonic() - started < 10, "stopped within 10 s"
        async with running_bot(runtime, fake=fake) as bot:
            await bot.fake.wait_for(lambda: len(fake.sent(3004)) == 4, timeout=10, what="every answer out")
            await bot.settled()
        assert len(fake.sent(3004)) == 4, "each answer exactly once"


# -- kill -9 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_kill_9_loses_and_doubles_nothing(tmp_path: Path, mode: str) -> None:
    from bot.testing.kill_telegram import kill_run

    result = await kill_run(mode=mode, users=30, messages=3, kills=3, seed=11, workdir=tmp_path, answer_timeout=30)
    assert result["kills"] == 3
    assert result["integrity"] == "ok" and result["stop_exit"] == 0, result
    assert result["lost_turns"] == 0 and result["turns_twice"] == 0, result
    # every reply exactly once: a reply marked "sending" is not sent again after the kill (the Bot
    # API has no idempotency key), and it is marked in the same moment its request is written
    assert result["replies_twice"] == 0 and result["lost_replies"] == 0, result



async def test_a_kill_at_the_first_moment_after_a_message_is_marked_sending_does_not_lose_it(tmp_path: Path) -> None:
    """The gap a kill -9 can lose a message in: between its "sending" mark (after a kill it is not
    sent again) and its request in the socket. The bot below dies at the first event-loop turn
    after the mark; by then the request must be on its way."""
    import signal
    import sqlite3
    import sys

    from bot.testing.kill_telegram import bot_command

    chat = 3101
    async with FakeBotAPI() as fake:
        db = tmp_path / "bot.db"
        env, args = bot_command(fake, db, tmp_path)
        with open(tmp_path / "bot.log", "ab") as log:
            dying = [sys.executable, str(ROOT / "tests" / "support" / "die_after_mark.py")]
            proc = await asyncio.create_subprocess_exec(*dying, cwd=tmp_path, env=env, stdout=log, stderr=log)
            await fake.wait_calls("getUpdates", answered=False, timeout=60)
            fake.send_text(chat, "hi my iphone backup keeps failing since the update, what do i do??")
            assert await asyncio.wait_for(proc.wait(), 60) == -signal.SIGKILL
            mark = len(fake.calls)
            proc = await asyncio.create_subprocess_exec(*args, cwd=tmp_path, env=env, stdout=log, stderr=log)
            try:
                await fake.wait_for(lambda: any(c.method == "getUpdates" for c in fake.calls[mark:]), 60, "restarted")
                fake.send_text(chat, "hello? anyone there")
                await fake.wait_calls("sendMessage", 2, chat_id=chat, answered=False, timeout=60)
            finally:
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert len(fake.calls_of("sendMessage", chat_id=chat)) == 2, "each answer exactly once"
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT COUNT(*) FROM tg_outbox WHERE status = 'unsure'").fetchone()[0] == 1
    finally:
        con.close()


async def test_after_a_kill_a_reply_refused_with_a_5xx_goes_out_and_one_caught_mid_send_does_not(
    tmp_path: Path,
) -> None:
    from bot.store.sqlite import SQLiteStore
    from bot.tg.store import ANSWER, JobSpec, SQLiteTelegramStore

    path = tmp_path / "bot.db"
    first = await SQLiteStore.open(path)
    before = SQLiteTelegramStore(first.database)
    await before.open()
    [refused] = await before.finish(None, [JobSpec(3201, "send", ANSWER, {"html": "your backup needs 12 GB more"})])
    [on_wire] = await before.finish(None, [JobSpec(3202, "send", ANSWER, {"html": "which iPhone model is it?"})])
    written: list[int] = []
    await before.mark_then([refused.id], lambda: written.append(refused.id))
    await before.settle([(refused, "pending", None, "502 Bad Gateway")])  # Telegram refused it: to send again
    await before.mark_then([on_wire.id], lambda: written.append(on_wire.id))
    assert written == [refused.id, on_wire.id]
    # the process is killed here: nothing more is recorded; the next start reads the same files
    second = await SQLiteStore.open(path)
    after = SQLiteTelegramStore(second.database)
    try:
        await after.open()
        jobs, unsure = await after.recover()
        assert [j.body["html"] for j in jobs] == ["your backup needs 12 GB more"], "the refused one goes out again"
        assert unsure == 1, "the one that may have arrived is not sent again"
    finally:
        await after.close()
        await second.close()
        await before.close()
        await first.close()


# -- the database away for a moment -----------------------------------------------------------------
async def test_a_turn_whose_database_fails_for_a_moment_is_run_again_and_answered(
    runtime: Runtime, tg_knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    import sqlite3

    real = runtime.engine.handle
    failures = {"left": 2}

    async def flaky(inbound: Inbound) -> tuple[Reply, ...]:  # the connection drops twice, then is back
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return await real(inbound)

    monkeypatch.setattr(runtime.engine, "handle", flaky)
    async with running_bot(runtime) as bot:
        new = await bot._push(2101, lambda: bot.fake.send_text(
            2101, "hey my iphone says backup failed, last one was in march??"), timeout=15)
        assert len(new) == 1 and "backup" in new[0].text.lower()
        assert failures["left"] == 0
        apology = text_of(tg_knowledge, "engine.internal_error")
        assert all(apology not in m.text for m in bot.fake.sent(2101))
        assert await runtime.store.database.fetchone(
            "SELECT COUNT(*) FROM messages WHERE conversation_id = 'tg:2101' AND direction = 'in'") == (1,)


async def test_when_the_database_stays_away_the_user_is_told_to_try_again(
    runtime: Runtime, tg_knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    import sqlite3

    import bot.tg.door as door_module

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(door_module, "STORE_RETRIES", (0.05, 0.05))
    monkeypatch.setattr(runtime.engine, "handle", down)
    async with running_bot(runtime) as bot:
        monkeypatch.setattr(bot.door.tg_store, "finish", down)
        bot.fake.send_text(2102, "is anyone there, my backup is stuck at 3%")
        notice = text_of(tg_knowledge, "telegram.database_away")
        await bot.fake.wait_for(lambda: any(m.text == notice for m in bot.fake.sent(2102)), 10, "the notice")
        assert [m.text for m in bot.fake.sent(2102) if m.from_bot] == [notice]
