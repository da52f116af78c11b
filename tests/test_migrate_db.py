"""``python -m bot migrate-db --to postgresql://…``: an installation moves from its SQLite file
to PostgreSQL with everything it holds, twice without doubling, and says when counts differ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.core.ports import State
from bot.escalation.store import QuoteStore
from bot.runtime import Knowledge
from bot.store import SQLiteStore
from bot.store.pgstore import PostgresStore
from tests.support.chat import ChatDriver
from tests.support.postgres import PostgresServer
from tests.test_mail_delivery import fields

ROOT = Path(__file__).resolve().parents[1]


def _migrate(db: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", "migrate-db", "--to", url, "--db", str(db)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ}, timeout=300)


async def test_a_sqlite_installation_moves_to_postgres_once(knowledge: Knowledge, tmp_path: Path,
                                                            pg_server: PostgresServer) -> None:
    from bot.core.engine import Engine

    db = tmp_path / "bot.db"
    store = await SQLiteStore.open(db)
    chat = ChatDriver(Engine(knowledge.content, knowledge.flows, knowledge.matcher, store))
    await chat.command("/start storage_full")
    await chat.say("50 GB, and it keeps saying not enough storage")
    last = await chat.state()
    await store.close()
    qs = await QuoteStore.open(db)
    ref, _ = await qs.create_quote(chat.conversation_id, fields(name="Jo Example"))
    await qs.close()

    url = pg_server.create_database()
    first = _migrate(db, url)
    assert first.returncode == 0, first.stderr
    assert "every table's row count matches" in first.stdout
    assert "messages" in first.stderr and "#" in first.stderr  # the progress bars
    again = _migrate(db, url)
    assert again.returncode == 0, again.stderr
    assert "(0 copied now)" in again.stdout and "(1 copied now)" not in again.stdout

    pg = await PostgresStore.open(url)
    try:
        state = await pg.load_state(chat.conversation_id)
        assert state is not None and state.ref == last.ref and state.values == last.values
        pq = QuoteStore.sharing(pg)
        rec = await pq.quote(ref)
        assert rec is not None and rec.fields.name == "Jo Example"
        # the next transcript line gets a new id, after the copied ones
        before = await pg.last_message_id()
        chat2 = ChatDriver(Engine(knowledge.content, knowledge.flows, knowledge.matcher, pg))
        await chat2.say("hello again")
        assert await pg.last_message_id() > before
    finally:
        await pg.close()


async def _installation(knowledge: Knowledge, db: Path, user: str, *lines: str) -> State:
    """A SQLite installation in ``db`` where ``user`` said ``lines``; the user's state after
    (the store closed)."""
    from bot.core.engine import Engine

    store = await SQLiteStore.open(db)
    chat = ChatDriver(Engine(knowledge.content, knowledge.flows, knowledge.matcher, store), user)
    for line in lines:
        await chat.say(line)
    state = await chat.state()
    await store.close()
    return state


async def _pg_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    pg = await PostgresStore.open(url)
    try:
        return [tuple(r) for r in await pg.database.fetchall(sql)]
    finally:
        await pg.close()


async def test_a_second_copy_brings_the_target_up_to_date(knowledge: Knowledge, tmp_path: Path,
                                                          pg_server: PostgresServer) -> None:
    """The lab copies, tests PostgreSQL, keeps the SQLite bot running a while, erases a user,
    then copies again before the switch: the target ends up equal to the source."""
    db = tmp_path / "bot.db"
    await _installation(knowledge, db, "tg:1", "my backup failed last night, iphone 12, any idea?")
    await _installation(knowledge, db, "tg:2", "hi, icloud storage full again :(")
    url = pg_server.create_database()
    assert _migrate(db, url).returncode == 0
    # the SQLite bot went on: tg:1 said more, tg:2 was erased
    last = await _installation(knowledge, db, "tg:1", "ok it says not enough storage now")
    store = await SQLiteStore.open(db)
    from bot.agents.privacy import forget_conversation

    await forget_conversation(store.db, "tg:2")
    await store.close()
    again = _migrate(db, url)
    assert again.returncode == 0, again.stderr
    assert "every table's row count matches" in again.stdout
    lines = await _pg_rows(url, "SELECT conversation_id, text FROM messages WHERE direction = 'in' ORDER BY id")
    assert ("tg:1", "ok it says not enough storage now") in lines
    assert not [r for r in lines if r[0] == "tg:2"]  # the erasure reached the copy too
    pg = await PostgresStore.open(url)
    try:
        state = await pg.load_state("tg:1")
        assert state is not None and state.ref == last.ref  # the newer state, not the first copy's
        assert await pg.load_state("tg:2") is None
    finally:
        await pg.close()


async def test_an_interrupted_copy_is_finished_by_the_next_run(knowledge: Knowledge, tmp_path: Path,
                                                               pg_server: PostgresServer) -> None:
    db = tmp_path / "bot.db"
    await _installation(knowledge, db, "tg:7", "backup stuck at 20% since yesterday", "still stuck",
                        "is icloud down??", "thanks anyway")
    url = pg_server.create_database()
    assert _migrate(db, url).returncode == 0
    total = (await _pg_rows(url, "SELECT COUNT(*) FROM messages"))[0][0]
    # as if the run had died after its first batches: the newest rows never arrived
    pg = await PostgresStore.open(url)
    await pg.database.execute("DELETE FROM messages WHERE id > 3")
    await pg.database.execute("DELETE FROM conversations")
    await pg.close()
    out = _migrate(db, url)
    assert out.returncode == 0, out.stderr
    assert f"messages: {total} rows in SQLite, {total} in PostgreSQL ({total - 3} copied now)" in out.stdout


async def test_another_installations_database_is_refused(knowledge: Knowledge, tmp_path: Path,
                                                         pg_server: PostgresServer) -> None:
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    await _installation(knowledge, theirs, "tg:50", "hello, the other lab's bot here", "backup failed")
    await _installation(knowledge, ours, "tg:60", "my iphone wont back up, storage full it says")
    url = pg_server.create_database()
    assert _migrate(theirs, url).returncode == 0
    out = _migrate(ours, url)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "another installation's transcript" in out.stderr and "messages" in out.stderr
    rows = await _pg_rows(url, "SELECT conversation_id FROM messages")
    assert {r[0] for r in rows} == {"tg:50"}  # not a row of ours went in


async def test_a_target_a_bot_has_written_to_since_the_copy_is_refused(knowledge: Knowledge, tmp_path: Path,
                                                                       pg_server: PostgresServer) -> None:
    from bot.core.engine import Engine

    db = tmp_path / "bot.db"
    await _installation(knowledge, db, "tg:8", "my backup failed")
    url = pg_server.create_database()
    assert _migrate(db, url).returncode == 0
    pg = await PostgresStore.open(url)  # the lab switched: the bot runs on PostgreSQL now
    await ChatDriver(Engine(knowledge.content, knowledge.flows, knowledge.matcher, pg), "tg:9").say("hi")
    await pg.close()
    out = _migrate(db, url)
    assert out.returncode == 2 and "a bot has written to it since the last copy" in out.stderr
    assert "messages.id" in out.stderr
    assert ("tg:9",) in await _pg_rows(url, "SELECT conversation_id FROM messages")  # its work is kept


async def test_a_target_that_holds_data_no_copy_put_there_is_refused(knowledge: Knowledge, tmp_path: Path,
                                                                     pg_server: PostgresServer) -> None:
    db = tmp_path / "bot.db"
    store = await SQLiteStore.open(db)
    await store.database.execute("INSERT INTO learned_examples (text, intent, created_at) VALUES ('x', 'y', 1)")
    await store.close()
    url = pg_server.create_database()
    pg = await PostgresStore.open(url)
    # the target was used already: a bot wrote there before the copy
    await pg.database.execute("INSERT INTO learned_examples (text, intent, created_at) VALUES ('other', 'y', 1), "
                              "('more', 'y', 2)")
    await pg.close()
    out = _migrate(db, url)
    assert out.returncode == 2
    assert "learned_examples: 2 rows" in out.stderr and "empty database" in out.stderr
    assert len(await _pg_rows(url, "SELECT * FROM learned_examples")) == 2  # untouched


_KILLED_MID_SEND = """
import asyncio, os, sys
from bot.store.sqlite import SQLiteStore
from bot.tg.store import ANSWER, JobSpec, SQLiteTelegramStore

async def main(path):
    store = await SQLiteStore.open(path)
    tg = SQLiteTelegramStore(store.database)
    await tg.open()
    [waiting] = await tg.finish(None, [JobSpec(4401, "send", ANSWER, {"html": "tap the button below when ready"})])
    [on_wire] = await tg.finish(None, [JobSpec(4402, "send", ANSWER, {"html": "which iPhone model is it?"})])
    await tg.mark_then([on_wire.id], lambda: None)  # its request is leaving...
    os._exit(9)  # ...when the bot is killed: nothing more is recorded

asyncio.run(main(sys.argv[1]))
"""


async def test_a_message_a_kill_caught_mid_send_is_not_sent_again_from_the_copy(tmp_path: Path,
                                                                                 pg_server: PostgresServer) -> None:
    """The bot was killed while a reply was leaving and the installation moves to PostgreSQL
    straight away: the copy must not hold that reply as still to send (it may have arrived),
    while the one that never left is still to send."""
    db = tmp_path / "bot.db"
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_SEND, str(db)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    url = pg_server.create_database()
    out = _migrate(db, url)
    assert out.returncode == 0, out.stderr
    assert "1 message(s) were being sent when the bot last stopped" in out.stdout
    rows = await _pg_rows(url, "SELECT chat_id, status FROM tg_outbox ORDER BY id")
    assert [(r[0], r[1]) for r in rows] == [(4401, "pending"), (4402, "unsure")]
