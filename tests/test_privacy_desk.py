"""Privacy at the agents' desk: /forget leaves no trace in the database or the group, who may
erase (administrators, with a confirmation naming the case), /forget during a takeover, the
retention purge of active conversations and of quote requests, /privacy as configured."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.agents import reports
from bot.agents.desk import AgentCallback, DeskOptions
from bot.agents.feature import Agents
from bot.agents.limiter import GroupLimiter
from bot.agents.memory import MemoryGateway, Msg
from bot.agents.ports import ManualClock, SystemClock
from bot.config import Settings
from bot.escalation import Escalation
from bot.runtime import Knowledge, Ports, open_runtime
from tests.support.chat import ChatDriver
from tests.support.postgres import both_stores
from tests.support.scan import byte_hits, table_hits
from tests.test_agents_desk import AGENT, GROUP, ROOT, Rig, _rows_mentioning, agent_knowledge, open_agents, rig  # noqa: F401
from tests.test_quote_form import fill

pytestmark = both_stores  # every test on SQLite and on PostgreSQL (tests/support/postgres.py)

ADMIN = 42
DAY = 86400


def confirm_of(msgs: list[Msg]) -> Msg:
    return next(m for m in reversed(msgs) if any(data.startswith("ag:f") for _, data in m.buttons))


def press(rig: Rig, msg: Msg, choice: str, user_id: int, chat_id: int = GROUP) -> None:  # noqa: F811
    data = next(d for _, d in msg.buttons if d.startswith(f"ag:{choice}:"))
    rig.desk.submit(AgentCallback(f"cb{msg.message_id}{user_id}", chat_id, msg.message_id, msg.thread_id,
                                  user_id, "Maria", data))


async def _counts(rig: Rig) -> tuple[int, int]:  # noqa: F811
    m = await rig.store.fetchone("SELECT COUNT(*) FROM messages")
    c = await rig.store.fetchone("SELECT COUNT(*) FROM conversations")
    return int(m[0]), int(c[0])


# -- the /forget scan --------------------------------------------------------------------------------


@pytest.fixture
async def busy_rig(agent_knowledge: Knowledge, db_target: str | Path) -> AsyncIterator[tuple[Rig, ManualClock]]:  # noqa: F811
    """A desk whose writer waits for ``advance`` (so two users' lines meet in one Live-feed
    message) and that uses the feed as soon as two conversations wait."""
    slots = ManualClock(start=time.time())
    limiter = GroupLimiter(10_000, 1.0, clock=slots, spread=False)
    gw = MemoryGateway()
    clock = ManualClock()
    runtime, agents = await open_agents(agent_knowledge, db_target, gw, admin_ids=(ADMIN,),
                                        options=DeskOptions(pause_seconds=600, digest_threshold=1),
                                        clock=clock, limiter=limiter)
    try:
        yield Rig(runtime.engine, runtime.store, agents, gw, clock), slots
    finally:
        await runtime.close()


async def test_forget_leaves_no_trace_in_the_database_or_the_group(busy_rig: tuple[Rig, ManualClock]) -> None:
    rig, slots = busy_rig  # noqa: F811
    zed, berta = 731955, 731966
    rig.desk.limiter.block(60)  # the group is busy: both users' first lines wait for the same slot
    await rig.say(zed, "hi, my iphone backup to icloud keeps failing since tuesday, zephyrmark in the title",
                  name="Zoltan")
    await rig.say(berta, "my icloud storage is full and the backup wont run?? bertamark", name="Berta")
    await rig.desk.wait_until(lambda: rig.desk.backlog()["records"] == 0 and not rig.desk.st.busy)
    await slots.advance(120)
    await rig.settle()
    shared = [m for m in rig.gw.group.values() if "zephyrmark" in m.text and "bertamark" in m.text]
    assert shared, "precondition: one Live-feed message holds both users' lines"
    await rig.say(zed, "can i talk to a real person please, this is my late dads phone")
    await rig.say(berta, "I want to talk to a human")
    chat = ChatDriver(rig.engine, f"tg:{zed}")
    await fill(chat, device="iPhone 12 zephyrdevice", name="Zoltan Quirke", email="zoltan.quirke@example.org",
               phone="+49 170 5551234")
    await chat.press("send")
    await rig.settle()
    ref = rig.topic(zed).ref
    rig.agent_command(None, "find", "zephyrmark", user_id=ADMIN)  # in General
    rig.agent_command(None, "transcript", f"#{ref}", user_id=ADMIN)  # in General
    rig.agent_command(None, "transcript", f"#{ref}", private=True, user_id=ADMIN)
    rig.agent_command(None, "unmatched", private=True, user_id=ADMIN)
    await rig.settle()
    needles = ["zephyrmark", "Zoltan", "Quirke", "zoltan.quirke@example.org", "5551234", "zephyrdevice",
               f"tg:{zed}", str(zed)]
    seen = "\n".join(rig.gw.visible())
    assert all(n in seen for n in ("zephyrmark", "Zoltan", "zephyrdevice")), "precondition: the group shows Zoltan"
    assert any("Quirke" in m for m in rig.gw.private[ADMIN]) or "Quirke" in seen
    since = time.time() - 3600
    figures = await reports.stats(rig.store.db, since)

    replies = await rig.command(zed, "forget")
    assert replies[0].key == "agents.forgotten"
    await rig.agents.wait_cleanups()
    await rig.settle()

    left = [t for t in rig.gw.visible() if any(n in t for n in needles)]
    assert left == []
    assert table_hits(rig.store.path, needles) == [] and byte_hits(rig.store.path, needles) == []
    assert await reports.stats(rig.store.db, since) == figures  # the team's figures stay
    # a shared message keeps the other user's lines: Zoltan's are edited out, not the message deleted
    kept = [rig.gw.group.get(m.message_id) for m in shared]
    assert all(m is not None and "bertamark" in m.text and "zephyrmark" not in m.text for m in kept)
    assert "bertamark" in "\n".join(rig.gw.visible()) and table_hits(rig.store.path, ["bertamark"])


async def test_an_answer_read_before_the_erasure_and_sent_after_it_is_removed(
    busy_rig: tuple[Rig, ManualClock],
) -> None:
    rig, slots = busy_rig
    await rig.say(733001, "backup fails with an error i cant read, latemark", name="Ines")
    await rig.settle()
    rig.desk.limiter.block(60)  # the group is busy: the answer waits for a slot
    rig.agent_command(None, "find", "latemark", user_id=ADMIN)
    await rig.desk.wait_until(lambda: bool(rig.desk.st.urgent), what="the /find answer queued")
    await rig.command(733001, "forget")
    await rig.agents.wait_cleanups()
    await slots.advance(120)
    await rig.settle()
    assert "deleteMessages" in [method for _, method in rig.gw.calls]  # sent, then deleted
    assert not any("latemark" in text for text in rig.gw.visible())
    assert table_hits(rig.store.path, ["latemark", "733001"]) == []


# -- who may erase ----------------------------------------------------------------------------------


async def test_a_plain_member_cannot_erase_and_an_admin_confirms_naming_the_case(rig: Rig) -> None:  # noqa: F811
    await rig.say(51, "my icloud backup failed again, plainmark, pls help", name="Olga")
    await rig.settle()
    t = rig.topic(51)
    before = await _counts(rig)
    rig.agent_command(51, "forget")  # a plain member of the group
    await rig.settle()
    assert "Only the bot's administrators" in rig.gw.topic_text(t.thread_id)
    assert not any(m.buttons for m in rig.gw.in_topic(t.thread_id) if "Erase" in m.text)
    assert await _counts(rig) == before and t.thread_id in rig.gw.topics

    rig.agent_command(51, "forget", user_id=ADMIN)
    await rig.settle()
    confirm = confirm_of(rig.gw.in_topic(t.thread_id))
    assert f"#{t.ref}" in confirm.text and "Olga" in confirm.text
    assert all(f"#{t.ref}" in label for label, _ in confirm.buttons[:2])
    assert await _counts(rig) == before  # nothing yet: it waits for the button

    press(rig, confirm, "ft", user_id=AGENT)  # a plain member presses the admin's button
    await rig.settle()
    assert any("Only the bot's administrators" in text for _, text in rig.gw.callbacks)
    assert await _counts(rig) == before and t.thread_id in rig.gw.topics

    press(rig, confirm, "ft", user_id=ADMIN)
    await rig.settle()
    assert await _rows_mentioning(rig.store, "plainmark") == [] and await _rows_mentioning(rig.store, "tg:51") == []
    assert t.thread_id not in rig.gw.topics
    told = rig.gw.user_texts(51)[-1]
    assert "Our support team has deleted" in told and "As you asked" not in told
    assert f"#{t.ref}" in rig.gw.topic_text(None) and "Olga" not in rig.gw.topic_text(None)


async def test_erasing_on_the_users_request_says_so_and_cancel_keeps_the_case(rig: Rig) -> None:  # noqa: F811
    await rig.say(52, "please delete all my data, i dont want it stored. askmark", name="Pia")
    await rig.settle()
    t = rig.topic(52)
    rig.agent_command(52, "forget", user_id=ADMIN)
    await rig.settle()
    first = confirm_of(rig.gw.in_topic(t.thread_id))
    press(rig, first, "fx", user_id=ADMIN)
    await rig.settle()
    assert await _rows_mentioning(rig.store, "askmark") != [] and t.thread_id in rig.gw.topics
    assert "Not erased" in rig.gw.group[first.message_id].text and not rig.gw.group[first.message_id].buttons
    rig.agent_command(52, "forget", user_id=ADMIN)
    await rig.settle()
    press(rig, confirm_of(rig.gw.in_topic(t.thread_id)), "fu", user_id=ADMIN)
    await rig.settle()
    assert await _rows_mentioning(rig.store, "askmark") == []
    assert rig.gw.user_texts(52)[-1].startswith("As you asked")


async def test_private_forget_takes_a_case_number_and_never_the_agents_own_chat(rig: Rig) -> None:  # noqa: F811
    await rig.say(ADMIN, "hi its me testing the bot from my own phone, adminmark", name="Ada")
    await rig.say(61, "my icloud backup failed, casemark", name="Nils")
    await rig.settle()
    ref = rig.topic(61).ref
    # "/forget 3" reaching the engine in the admin's own chat erases nothing
    replies = await rig.command(ADMIN, "forget", str(ref))
    assert replies[0].key == "agents.forget_with_arg"
    for arg in ("", f"{ref} {ref + 1}", "nils", f"{ref}x", "#999"):
        rig.agent_command(None, "forget", arg, private=True, user_id=ADMIN)
    await rig.settle()
    assert len(rig.gw.private[ADMIN]) == 5 and all("Name one case" in h for h in rig.gw.private[ADMIN])
    assert await _rows_mentioning(rig.store, "casemark") and await _rows_mentioning(rig.store, "adminmark")

    rig.agent_command(None, "forget", f"#{ref}", private=True, user_id=ADMIN)
    await rig.settle()
    confirm = confirm_of(list(rig.gw.private_msgs[ADMIN].values()))
    assert f"#{ref}" in confirm.text and "Nils" in confirm.text
    press(rig, confirm, "ft", user_id=ADMIN, chat_id=ADMIN)
    await rig.settle()
    assert await _rows_mentioning(rig.store, "casemark") == []
    assert await _rows_mentioning(rig.store, "adminmark") != []  # the admin's own chat is untouched
    assert confirm.message_id not in rig.gw.private_msgs[ADMIN]  # it named the user: deleted too
    assert not any("Nils" in m.text for m in rig.gw.private_msgs[ADMIN].values())


async def test_group_administrators_may_erase_when_the_setting_says_so(
    agent_knowledge: Knowledge, tmp_path: Path  # noqa: F811
) -> None:
    gw = MemoryGateway(admins={AGENT})
    limiter = GroupLimiter(10_000, 1.0, clock=SystemClock(), spread=False)
    for allowed in (False, True):
        runtime, agents = await open_agents(
            agent_knowledge, tmp_path / f"a{allowed}.db", gw, clock=ManualClock(), limiter=limiter,
            options=DeskOptions(digest_threshold=4, forget_by_group_admins=allowed),
        )
        try:
            rig = Rig(runtime.engine, runtime.store, agents, gw, ManualClock())
            await rig.say(53, "backup failed on my ipad, groupadminmark")
            await rig.settle()
            rig.agent_command(53, "forget")
            await rig.settle()
            card = rig.topic(53).card_message_id
            offered = [m for m in gw.in_topic(rig.topic(53).thread_id) if m.buttons and m.message_id != card]
            assert bool(offered) is allowed
        finally:
            await runtime.close()


# -- /forget during a takeover ------------------------------------------------------------------------


async def test_forget_during_a_takeover_erases_answers_and_ends_the_pause(rig: Rig) -> None:  # noqa: F811
    await rig.say(71, "my icloud backup failed and i am panicking a bit, pausemark", name="Greta")
    await rig.say(71, "I want to talk to a human")
    await rig.settle()
    t = rig.topic(71)
    await rig.take_over(71, "Hi Greta, Maria from support here", message_id=9901)
    state = await rig.engine.state_of("tg:71")
    assert state is not None and state.paused
    replies = await rig.command(71, "forget")
    assert [r.key for r in replies] == ["agents.forgotten"]
    await rig.agents.wait_cleanups()
    await rig.settle()
    assert await _rows_mentioning(rig.store, "tg:71") == [] and await _rows_mentioning(rig.store, "pausemark") == []
    assert t.thread_id not in rig.gw.topics
    general = rig.gw.topic_text(None)
    assert f"#{t.ref}" in general and "erased their conversation" in general
    assert "pausemark" not in general and "Greta" not in general
    replies = await rig.say(71, "hello? is anyone there")
    assert replies  # the bot answers: no pause left
    state = await rig.engine.state_of("tg:71")
    assert state is not None and not state.paused
    await rig.settle()
    assert rig.topic(71).paused_until is None and rig.topic(71).thread_id != t.thread_id


# -- retention ----------------------------------------------------------------------------------------


async def test_retention_takes_expired_words_out_of_an_active_conversation(rig: Rig) -> None:  # noqa: F811
    await rig.say(81, "my iphone backup keeps failing every night, oldwordsmark", name="Hugo")
    await rig.settle(full=True)
    assert "oldwordsmark" in "\n".join(rig.gw.visible())
    await rig.store.database.execute("UPDATE messages SET ts = ts - 100 * 86400 WHERE conversation_id = 'tg:81'")
    await rig.store.database.execute("UPDATE agent_posts SET ts = ts - 100 * 86400")
    await rig.say(81, "its still failing today btw, newwordsmark")
    await rig.settle(full=True)
    assert await rig.desk.purge(now=time.time()) == 0  # active: not erased
    await rig.settle(full=True)
    assert table_hits(rig.store.path, ["oldwordsmark"]) == []  # state_json, card_html, lines
    assert byte_hits(rig.store.path, ["oldwordsmark"]) == []
    assert not any("oldwordsmark" in text for text in rig.gw.visible())
    card = rig.gw.group[rig.topic(81).card_message_id or 0]
    assert "newwordsmark" in card.text  # the card is drawn again from what is left
    assert "newwordsmark" in "\n".join(rig.gw.visible())


async def test_quote_requests_have_their_own_retention(rig: Rig) -> None:  # noqa: F811
    from bot.agents.privacy import purge

    chat = ChatDriver(rig.engine, "tg:91")
    await chat.say("hi, how much would it cost to get the photos of my kids back from my old phone")
    await fill(chat, device="iPhone 11", name="Quentin Keepme", email="quentin@example.com", phone=None)
    await chat.press("send")
    await rig.settle()
    db = rig.store.db
    for sql in ("UPDATE messages SET ts = ts - 100 * 86400", "UPDATE unmatched SET ts = ts - 100 * 86400",
                "UPDATE conversations SET updated_at = updated_at - 100 * 86400",
                "UPDATE quotes SET created_at = created_at - 100 * 86400"):
        await db.execute(sql)
    done = await purge(db, 90, quote_retention_days=365, lock=rig.store.tx_lock)
    assert done.conversations == 1 and done.quotes == 0
    hits = table_hits(rig.store.path, ["tg:91", "Quentin Keepme"])
    assert hits and {h.partition(".")[0] for h in hits} <= {"quotes", "outbox", "attachments"}, hits  # for the lab
    await db.execute("UPDATE quotes SET created_at = created_at - 300 * 86400")
    done = await purge(db, 90, quote_retention_days=365, lock=rig.store.tx_lock)
    assert done.quotes == 1
    assert table_hits(rig.store.path, ["Quentin Keepme", "tg:91"]) == []
    assert (await rig.store.fetchone("SELECT COUNT(*) FROM outbox"))[0] == 0


# -- /privacy follows the settings ---------------------------------------------------------------------


async def test_privacy_text_follows_the_settings(rig: Rig, agent_knowledge: Knowledge, tmp_path: Path) -> None:  # noqa: F811
    text = (await rig.command(16, "privacy"))[0].text
    assert "90 days" in text and "365 days" in text and "support team can read" in text
    assert "/forget" in text and "already delivered to the lab" in text

    settings = Settings(retention_days=30, quote_retention_days=400)
    features = [Escalation(settings, deliver=False), Agents(settings)]
    runtime = await open_runtime(tmp_path / "t.db", ROOT / "content", ROOT / "flows", features=features,
                                 knowledge=agent_knowledge)
    await runtime.start(Ports())  # the terminal: no agents' group
    try:
        chat = ChatDriver(runtime.engine, "t:1")
        await chat.say("hi there, what do you keep about me?")
        text = (await chat.command("/privacy"))[0].text
    finally:
        await runtime.close()
    assert "30 days" in text and "400 days" in text and "90 days" not in text
    assert "support team can read" not in text and "Nobody reads" in text


# -- the terminal ---------------------------------------------------------------------------------------


def test_forget_as_the_terminal_chats_last_line_erases_without_a_traceback(tmp_path: Path) -> None:
    from tests.test_store_and_cli import run_bot

    db = tmp_path / "term.db"
    out = run_bot("chat", "--db", str(db), stdin="my icloud backup failed, lastlinemark\n/forget\n",
                  env={"LOG_LEVEL": "ERROR", "MAILDIR": str(tmp_path / "md")})
    assert "deleted this conversation" in out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    assert table_hits(db, ["lastlinemark"]) == [] and byte_hits(db, ["lastlinemark"]) == []


def test_privacy_settings_are_read_and_bad_values_fail_at_start() -> None:
    from bot.config import ConfigError

    s = Settings.from_env({"QUOTE_RETENTION_DAYS": "730", "FORGET_BY_GROUP_ADMINS": "1"})
    assert s.quote_retention_days == 730 and s.forget_by_group_admins
    assert Agents(s).options.quote_retention_days == 730 and Agents(s).options.forget_by_group_admins
    for env in ({"FORGET_BY_GROUP_ADMINS": "yes"}, {"QUOTE_RETENTION_DAYS": "0"}, {"QUOTE_RETENTION_DAYS": "a year"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            Settings.from_env(env)
