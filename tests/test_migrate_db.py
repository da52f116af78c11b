"""``python -m bot migrate-db --to postgresql://…``: an installation moves from its SQLite file
to PostgreSQL with everything it holds, twice without doubling, and says when counts differ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


async def test_counts_that_differ_name_the_table(knowledge: Knowledge, tmp_path: Path,
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
    assert out.returncode == 1
    assert "learned_examples" in out.stderr.splitlines()[-1]
