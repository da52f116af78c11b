"""Small parts of the agents feature: the group budget, rendering, generic erasure, the
terminal tools, and the desk without an agents' group."""

from __future__ import annotations

import asyncio
import io
import json
import time
from argparse import Namespace
from dataclasses import replace
from pathlib import Path

import pytest

from bot.agents import cli, privacy, reports
from bot.agents.limiter import GroupLimiter
from bot.agents.ports import ManualClock
from bot.agents.registry import Registry
from bot.agents.render import MAX_VISIBLE, Html, Texts, fit, pack, render_line, tg_len, topic_link, topic_name
from bot.config import Settings
from bot.core.messages import EventKind, Inbound
from bot.core.ports import Direction, Entry, State
from bot.runtime import Knowledge
from bot.store import SQLiteStore
from bot.store.conversations import MessageRow
from tests.support.postgres import both_stores

ROOT = Path(__file__).resolve().parents[1]


# -- the budget ----------------------------------------------------------------------------------


def test_limiter_never_exceeds_the_window_and_spreads_normal_calls() -> None:
    clock = ManualClock(0.0)
    lim = GroupLimiter(20, 60.0, clock=clock, reserve=2)
    assert lim.gap == pytest.approx(60 / 18)
    stamps: list[float] = []
    for _ in range(200):  # a steady stream of normal calls, each as soon as allowed
        clock._now += lim.delay(False)
        lim.started(False)
        lim.finished()
        stamps.append(clock.now())
    for i in range(len(stamps) - 20):
        assert stamps[i + 20] - stamps[i] >= 60.0 - 1e-9
    # normal calls leave the reserve free: an urgent call may go at once
    assert lim.delay(True) == 0.0
    # a 429 blocks everything for its retry_after
    lim.block(30)
    assert lim.delay(True) >= 30 - 1e-9


def test_limiter_urgent_calls_use_the_reserve_but_not_more() -> None:
    clock = ManualClock(0.0)
    lim = GroupLimiter(5, 10.0, clock=clock, reserve=2, spread=False)
    for _ in range(3):
        assert lim.delay(False) == 0
        lim.finished()
    assert lim.delay(False) > 0  # 3 of 5 used: normal calls must wait
    for _ in range(2):
        assert lim.delay(True) == 0
        lim.finished()
    assert lim.delay(True) > 0  # the window is full


# -- rendering -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def texts(knowledge: Knowledge) -> Texts:
    return Texts(knowledge.content)


def test_texts_escape_values_and_bold_across_fields(texts: Texts) -> None:
    h = texts("agents.desk.card_title", name="<Eve & co>", ref="7", conversation="tg:1")
    assert "<b>&lt;Eve &amp; co&gt;</b>" in h.html
    assert h.visible == tg_len("🗂 <Eve & co> · #7 · tg:1")


def test_lines_are_escaped_and_clipped(texts: Texts) -> None:
    line = MessageRow(1, "tg:1", 0.0, "in", "text", "<script>" + "x" * 5000)
    h = render_line(line, texts, in_limit=100)
    assert h.html.startswith("👤 &lt;script&gt;") and h.visible <= 104
    out = render_line(MessageRow(2, "tg:1", 0.0, "out", "reply", "**Bold** step\n\nmore " * 40), texts, out_limit=50)
    assert out.html.startswith("🤖 Bold step more") and "**" not in out.html and out.visible <= 53
    button = render_line(MessageRow(3, "tg:1", 0.0, "in", "button", "✅ Yes"), texts)
    assert button.html == "👤 ▸ [✅ Yes]"


def test_pack_and_fit_keep_messages_under_the_limit() -> None:
    items = [Html.text("x" * 1000) for _ in range(10)]
    n = pack(items)
    assert n == 3 and sum(i.visible for i in items[:n]) + n - 1 <= MAX_VISIBLE
    assert pack([Html.text("y" * 9000)]) == 1
    assert fit(Html.text("y" * 9000)).visible <= MAX_VISIBLE


def test_topic_names_and_links(texts: Texts) -> None:
    assert topic_name("Anna", 12, "iCloud storage is full", texts) == "Anna · #12 · iCloud storage is full"
    assert topic_name("", 3, "", texts) == "User · #3"
    assert len(topic_name("A" * 300, 1, "B" * 300, texts)) <= 128
    assert topic_link(-1001234567890, 55) == "https://t.me/c/1234567890/55"


# -- erasure and retention -----------------------------------------------------------------------


async def test_forget_follows_foreign_keys_and_other_tables(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "f.db")
    try:
        await store.save_turn(State("tg:5", user_name="Vera"), [Entry(Direction.IN, "secret-ish text")])
        await store.save_turn(State("tg:6", user_name="Walt"), [Entry(Direction.IN, "keep me")])
        from bot.agents import schema as agents_schema
        from bot.escalation import schema as quotes_schema

        await store.database.migrate("quotes", quotes_schema.MIGRATIONS)  # what the features bring
        await store.database.migrate("agents", agents_schema.MIGRATIONS)
        db = store.db
        await db.execute(
            "INSERT INTO quotes (ref, conversation_id, created_at, fields_json) VALUES "
            "('Q1', 'tg:5', 1, '{\"name\": \"Vera\"}')"
        )
        await db.execute(
            "INSERT INTO outbox (ref, channel, next_attempt_at, created_at, updated_at) VALUES ('Q1', 'email', 0, 0, 0)"
        )
        await db.execute("INSERT INTO attachments (ref, position, file_id) VALUES ('Q1', 0, 'f')")
        await db.execute(
            "INSERT INTO agent_topics (conversation_id, thread_id, created_at, updated_at) VALUES ('tg:5', 77, 0, 0)"
        )
        await db.execute("CREATE TABLE someone_elses (chat_id INTEGER, note TEXT)")
        await db.execute("INSERT INTO someone_elses VALUES (5, 'Vera was here'), (6, 'Walt')")
        n = await privacy.forget_conversation(db, "tg:5", lock=store.tx_lock)
        assert n >= 6
        for table in ("conversations", "messages", "quotes", "outbox", "attachments", "agent_topics", "someone_elses"):
            async with db.execute(f"SELECT * FROM {table}") as cur:
                rows = await cur.fetchall()
            assert all("Vera" not in str(r) and "tg:5" not in str(r) for r in rows), (table, rows)
        async with db.execute("SELECT thread_id FROM agent_trash") as cur:
            assert [r[0] for r in await cur.fetchall()] == [77]  # its topic is deleted on Telegram
        async with db.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = 'tg:6'") as cur:
            assert (await cur.fetchone())[0] == 1  # others untouched
    finally:
        await store.close()


async def test_message_ids_are_not_reused_after_forget(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "ids.db")
    try:
        await store.save_turn(State("tg:1"), [Entry(Direction.IN, "a")])
        await store.save_turn(State("tg:2"), [Entry(Direction.IN, "b")])
        await privacy.forget_conversation(store.db, "tg:2")
        await store.save_turn(State("tg:3"), [Entry(Direction.IN, "c")])
        rows = await store.messages()
        assert [r.id for r in rows] == [1, 3]  # the mirror's cursors rely on it
    finally:
        await store.close()


async def test_the_store_and_the_desk_read_one_transcript_row(tmp_path: Path) -> None:
    """A transcript line reads the same through the store (``python -m bot`` tools) and the
    desk's registry (the mirror): one row type, the step it was said at included."""
    store = await SQLiteStore.open(tmp_path / "rows.db")
    try:
        line = Entry(Direction.IN, "it says not enuf storage but i have 2tb??", intent="storage_full", score=91.0,
                     decision="accept", flow="backup_failed", step="check_storage")
        await store.save_turn(State("tg:4", flow="backup_failed", step="check_storage"), [line])
        (listed,) = await store.messages("tg:4")
        (mirrored,) = await Registry(store.db).rows_after(0)
        assert type(listed) is type(mirrored) is MessageRow
        assert (listed.flow, listed.step, listed.text) == ("backup_failed", "check_storage", mirrored.text)
        assert (listed.intent, listed.decision) == ("storage_full", "accept")
        assert replace(listed, intent=None, score=None, decision=None) == mirrored
    finally:
        await store.close()


# -- the terminal tools --------------------------------------------------------------------------


@pytest.fixture
async def filled_db(engine, store: SQLiteStore) -> str:  # noqa: ANN001
    for text in ("my icloud backup failed", "qwxz blorp", "flibber flabber"):
        await engine.handle(Inbound("term:ann", EventKind.TEXT, text=text, user_name="Ann"))
    await engine.handle(Inbound("tg:9", EventKind.TEXT, text="backup stuck at 50%", user_name="Bo"))
    return store.path


async def _cli(command: str, db: str, **kw: object) -> str:
    out = io.StringIO()
    defaults: dict[str, object] = {
        "db": db,
        "action": "list",
        "conversation": None,
        "all": False,
        "format": "md",
        "out": None,
        "limit": 30,
        "days": 7.0,
        "weeks": 4,
        "json": False,
    }
    defaults.update(kw)
    code = await cli._run(command, db, Settings(), Namespace(**defaults), out)
    assert code == 0
    return out.getvalue()


@both_stores
async def test_cli_transcripts_stats_unmatched(filled_db: str, tmp_path: Path) -> None:
    listing = await _cli("transcripts", filled_db)
    assert "term:ann" in listing and "tg:9" in listing and "Ann" in listing
    shown = await _cli("transcripts", filled_db, action="show", conversation="term:ann")
    assert "user  my icloud backup failed" in shown and "bot" in shown
    jsonl = await _cli("transcripts", filled_db, action="export", conversation="term:ann", format="jsonl")
    rows = [json.loads(x) for x in jsonl.splitlines()]
    assert rows[0]["who"] == "user" and rows[0]["text"] == "my icloud backup failed"
    md = await _cli("transcripts", filled_db, action="export", conversation="term:ann")
    assert md.startswith("# Conversation with Ann")
    folder = tmp_path / "out"
    await _cli("transcripts", filled_db, action="export", all=True, out=str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["term_ann.md", "tg_9.md"]
    stats = json.loads(await _cli("stats", filled_db, json=True))
    assert stats["today"]["conversations"] == 2 and stats["today"]["rejected"] >= 1
    assert len(stats["weeks"]) == 4 and stats["weeks"][-1]["conversations"] == 2  # week by week, this one last
    table = await _cli("stats", filled_db)
    assert "Week by week" in table and "1st resp" in table and "satisfaction:" in table
    text = await _cli("unmatched", filled_db)
    assert "qwxz blorp" in text
    await _cli("transcripts", filled_db, action="forget", conversation="tg:9")
    assert "tg:9" not in await _cli("transcripts", filled_db)


@both_stores
async def test_cli_watch_follows_new_lines(filled_db: str, engine) -> None:  # noqa: ANN001
    out = io.StringIO()
    stop = asyncio.Event()
    task = asyncio.ensure_future(cli.watch(filled_db, out, stop, tail=2, interval=0.05))
    loop = asyncio.get_running_loop()

    async def shown(what: str) -> None:
        deadline = loop.time() + 5
        while what not in out.getvalue():
            assert loop.time() < deadline, out.getvalue()
            await asyncio.sleep(0.05)  # looking at what a terminal shows, at the watcher's pace

    await shown("tg:9 (Bo)")  # the last lines so far: the watcher is running
    await engine.handle(Inbound("tg:10", EventKind.TEXT, text="a brand new line", user_name="Cy"))
    await shown("a brand new line")
    stop.set()
    printed = await asyncio.wait_for(task, 5)
    assert printed >= 3 and "tg:10 (Cy) user  a brand new line" in out.getvalue()


def test_cli_without_database_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.__main__ import main

    assert main(["stats", "--db", str(tmp_path / "nope.db")]) == 2
    assert "no database" in capsys.readouterr().err


# -- the desk without an agents' group -----------------------------------------------------------


async def test_desk_without_group_records_escalations_for_stats(knowledge: Knowledge, store: SQLiteStore) -> None:
    from bot.agents.feature import Agents
    from bot.runtime import Ports, open_runtime

    agents = Agents(clock=ManualClock())
    runtime = await open_runtime(store, Path("content"), Path("flows"), features=[agents], knowledge=knowledge)
    engine = runtime.engine
    await runtime.start(Ports())  # no agents' group from the door
    desk = agents.desk
    assert desk is not None
    try:
        await engine.handle(Inbound("term:x", EventKind.TEXT, text="I want to talk to a human", user_name="X"))
        await desk.settle(5)
        s = await reports.stats(store.db, time.time() - 3600)
        assert s.escalated == 1
        assert not desk.enabled
    finally:
        await runtime.stop()


def test_content_has_every_text_the_desk_needs(knowledge: Knowledge) -> None:
    from bot.agents.desk import check_content

    assert check_content(knowledge.content) == []
    for key in ("agents.privacy_stored", "agents.privacy_forget", "agents.forgotten", "agents.forgotten_by_agent",
                "agents.handback_resume",
                "agents.handback_menu", "agents.pause_expired", "agents.resume"):
        assert knowledge.content.has(key), key


# -- business hours (BUSINESS_HOURS / BUSINESS_TZ) -----------------------------------------------


def test_business_hours_say_when_the_team_is_back() -> None:
    import datetime as dt

    from bot.agents.hours import BusinessHours
    from bot.config import ConfigError

    s = Settings.from_env({"BUSINESS_HOURS": "Mon-Fri 09:00-17:30; sat 10:00-14:00", "BUSINESS_TZ": "Europe/Berlin"})
    hours = BusinessHours(s.business_hours, s.business_tz)
    berlin = dt.timezone(dt.timedelta(hours=1))  # December: CET
    friday_evening = dt.datetime(2026, 12, 4, 18, 0, tzinfo=berlin).timestamp()
    assert not hours.is_open(friday_evening)
    assert hours.describe_next(friday_evening) == "Saturday 10:00 (Europe/Berlin)"
    saturday_after = dt.datetime(2026, 12, 5, 14, 0, tzinfo=berlin).timestamp()  # the end is exclusive
    assert hours.describe_next(saturday_after) == "Monday 09:00 (Europe/Berlin)"
    assert hours.is_open(dt.datetime(2026, 12, 7, 9, 0, tzinfo=berlin).timestamp())
    assert BusinessHours().is_open(friday_evening) and BusinessHours().describe_next(friday_evening) == ""
    for env, named in (
        ({"BUSINESS_HOURS": "weekdays 9 to 5"}, "BUSINESS_HOURS"),
        ({"BUSINESS_HOURS": "mon 18:00-09:00"}, "BUSINESS_HOURS"),
        ({"BUSINESS_TZ": "Berlin"}, "BUSINESS_TZ"),
    ):
        with pytest.raises(ConfigError, match=named):
            Settings.from_env(env)
