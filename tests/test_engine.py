"""Engine behaviour a user would notice: buttons, stale presses, commands, bad input,
secrets, persistence across a restart — through the real content and flows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bot.core.engine import Engine
from bot.core.messages import Attachment, EventKind, Inbound
from bot.runtime import Knowledge
from bot.store import SQLiteStore
from tests.support.chat import ChatDriver
from tests.support.postgres import both_stores

ROOT = Path(__file__).resolve().parents[1]


async def test_start_greets_and_shows_menu(chat: ChatDriver) -> None:
    await chat.command("/start")
    assert "engine.greeting" in chat.keys
    assert len(chat.last_buttons) >= 4
    assert (await chat.state()).ref == "main_menu.start"


async def test_deep_link_opens_flow_directly(chat: ChatDriver) -> None:
    await chat.command("/start storage_full")
    assert (await chat.state()).flow == "storage_full"


async def test_unknown_deep_link_falls_back_to_greeting(chat: ChatDriver) -> None:
    await chat.command("/start no_such_thing")
    assert "engine.greeting" in chat.keys
    assert (await chat.state()).ref == "main_menu.start"


async def test_stale_button_gets_earlier_step_answer_not_a_transition(chat: ChatDriver) -> None:
    await chat.command("/start backup_failed")
    first = chat.buttons
    # walk one step on
    await chat.press(chat.button_ids[-1])
    before = await chat.state()
    await chat.press_payload(first[0].id)  # a button from the earlier message
    after = await chat.state()
    assert "engine.stale_button" in chat.keys
    assert chat.replies[0].notice  # doors answer the callback with this
    assert (after.flow, after.step) == (before.flow, before.step)
    assert chat.last_buttons  # the current step is shown again


async def test_garbage_payload_is_stale_not_a_crash(chat: ChatDriver) -> None:
    await chat.command("/start")
    for payload in ("", "x", "99999999999:yes", "1:" + "a" * 60, "abc:def", "-1:no"):
        await chat.press_payload(payload)
        assert "engine.stale_button" in chat.keys


async def test_typed_label_counts_as_press(chat: ChatDriver) -> None:
    await chat.command("/start backup_failed")
    step_before = (await chat.state()).step
    label = chat.buttons[-1].label
    await chat.say(label.upper())
    assert (await chat.state()).step != step_before


async def test_typed_no_moves_to_next_step(chat: ChatDriver, knowledge: Knowledge) -> None:
    await chat.command("/start network_issue")
    # find the first yes/no step
    for _ in range(5):
        if "no" in chat.button_ids:
            break
        await chat.press(chat.button_ids[0])
    assert "no" in chat.button_ids
    before = await chat.state()
    await chat.say("nope still broken")
    after = await chat.state()
    assert after.step != before.step


async def test_commands_back_cancel_restart_help(chat: ChatDriver) -> None:
    await chat.command("/start storage_full")
    await chat.say("5gb")
    s1 = await chat.state()
    await chat.command("/back")
    s2 = await chat.state()
    assert s2.step != s1.step and s2.flow == "storage_full"
    await chat.command("/help")
    assert "engine.help" in chat.keys
    await chat.command("/cancel")
    assert "engine.cancelled" in chat.keys
    assert (await chat.state()).ref == "main_menu.start"
    await chat.command("/restart")
    assert "engine.restarted" in chat.keys
    await chat.command("/back")
    assert "engine.back_none" in chat.keys
    await chat.command("/frobnicate")
    assert "engine.unknown_command" in chat.keys


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "x" * 10_000,
        "😭😭😭🙏",
        "مرحبا النسخ الاحتياطي لا يعمل",
        "iCloud бэкап не работает 备份失败",
        "\x00\x07\x1b[31mred\x1b[0m\u202e",
        "'; DROP TABLE conversations; --",
        "<b>bold</b> & <script>alert(1)</script>",
    ],
)
async def test_bad_input_gets_an_answer_not_a_crash(chat: ChatDriver, text: str) -> None:
    await chat.command("/start")
    await chat.say(text)
    assert chat.replies, "every message gets an answer"
    assert all(r.text.strip() for r in chat.replies)
    # the conversation still works afterwards
    await chat.command("/start")
    assert "engine.greeting" in chat.keys


async def test_long_message_is_read_with_a_note(chat: ChatDriver) -> None:
    await chat.command("/start")
    await chat.say("my icloud backup failed " * 200)
    assert "engine.truncated" in chat.keys


async def test_media_outside_a_photo_step_asks_for_text(chat: ChatDriver) -> None:
    await chat.command("/start")
    await chat.send(Inbound(chat.conversation_id, EventKind.MEDIA,
                            attachments=(Attachment("voice", "f1", 1000),)))
    assert "engine.media_only_text" in chat.keys


@both_stores
async def test_password_is_never_stored_and_user_is_warned(chat: ChatDriver, store: SQLiteStore) -> None:
    await chat.command("/start")
    await chat.say("my apple id password is Tr0ub4dor&3 and it says verification failed")
    assert "engine.password_warning" in chat.keys
    await chat.say("my passcode is 482913")
    rows = await store.messages(chat.conversation_id)
    dump = " ".join(r.text for r in rows)
    assert "Tr0ub4dor&3" not in dump and "482913" not in dump
    assert "[redacted]" in dump
    rows = await store.database.fetchall("SELECT text FROM unmatched UNION ALL SELECT state_json FROM conversations")
    other = " ".join(r[0] for r in rows)
    assert "Tr0ub4dor&3" not in other and "482913" not in other


@both_stores
async def test_transcript_records_intent_and_score(chat: ChatDriver, store: SQLiteStore) -> None:
    await chat.command("/start")
    await chat.say("icloud storage is full so my iphone wont back up")
    rows = await store.messages(chat.conversation_id)
    inbound = [r for r in rows if r.direction == "in" and r.kind == "text"]
    assert inbound[-1].intent == "storage_full" and inbound[-1].score and inbound[-1].decision == "accept"
    assert any(r.direction == "out" for r in rows)


async def test_conversation_survives_a_restart(knowledge: Knowledge, tmp_path: Path) -> None:
    db = tmp_path / "persist.db"
    s1 = await SQLiteStore.open(db)
    c1 = ChatDriver(Engine(knowledge.content, knowledge.flows, knowledge.matcher, s1))
    await c1.command("/start storage_full")
    await c1.say("50 GB")
    where = await c1.state()
    buttons = c1.buttons
    await s1.close()

    s2 = await SQLiteStore.open(db)
    e2 = Engine(knowledge.content, knowledge.flows, knowledge.matcher, s2)
    c2 = ChatDriver(e2, buttons=buttons)
    assert (await c2.state()).ref == where.ref
    assert (await c2.state()).values.get("total_gb") == "50"
    await c2.say("120gb")  # the next question is answered where we left off
    assert (await c2.state()).values.get("needed_gb") == "120"
    await s2.close()


@both_stores
async def test_two_quick_messages_are_handled_in_order(engine: Engine, store: SQLiteStore) -> None:
    import asyncio

    cid = "test:order"
    await engine.handle(Inbound(cid, EventKind.COMMAND, text="start", arg="storage_full"))
    r1, r2 = await asyncio.gather(
        engine.handle(Inbound(cid, EventKind.TEXT, text="50gb")),
        engine.handle(Inbound(cid, EventKind.TEXT, text="120gb")),
    )
    state = await engine.state_of(cid)
    assert state is not None
    assert state.values.get("total_gb") == "50" and state.values.get("needed_gb") == "120"


async def test_off_topic_is_rejected_honestly_with_menu(chat: ChatDriver) -> None:
    await chat.command("/start")
    await chat.say("what's the weather like in paris tomorrow")
    assert "engine.not_understood" in chat.keys
    assert (await chat.state()).ref == "main_menu.start"


async def test_switch_offer_mid_flow(chat: ChatDriver) -> None:
    await chat.command("/start network_issue")
    await chat.say("my phone fell in the pool and wont turn on, i need my photos")
    assert chat.last_buttons[0] == "switch:device_damaged"
    await chat.press("switch:device_damaged")
    assert (await chat.state()).flow == "device_damaged"


def test_core_imports_nothing_from_doors_or_store() -> None:
    forbidden = ("telegram", "bot.tg", "bot.store", "aiosqlite", "bot.escalation", "bot.agents")
    for path in (ROOT / "bot" / "core").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"


async def test_direct_question_gets_direct_answer(chat: ChatDriver) -> None:
    await chat.command("/start")
    await chat.say("how much is the 200 GB plan?")
    assert "$2.99" in chat.text
    await chat.say("what does data recovery cost for a water damaged iphone")
    assert "$400 - $1,000" in chat.text and "3 - 7 days" in chat.text


async def test_old_message_does_not_answer_a_later_plan_question(chat: ChatDriver) -> None:
    await chat.command("/start")
    await chat.say("how much is the 50 gb plan")
    assert "$0.99" in chat.text
    await chat.command("/cancel")
    await chat.command("/start storage_plans")  # opened by a link: no question asked
    assert "$59.99" in chat.text  # the whole table, not the 50 GB answer again


async def test_yes_no_words_in_short_sentences(chat: ChatDriver) -> None:
    await chat.command("/start network_issue")
    while "yes" not in chat.button_ids:
        await chat.press(chat.button_ids[0])
    before = (await chat.state()).step
    await chat.say("Yes!! it works now")
    assert (await chat.state()).step != before
    assert "common.resolved" in chat.keys
