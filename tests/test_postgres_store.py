"""The bot on PostgreSQL: several instances on one database (two stores, two engines, as two
processes would have), the settings that choose it, and SQLite files from before the one
migration runner."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings
from bot.core.engine import Engine
from bot.core.messages import EventKind, Inbound
from bot.runtime import Knowledge
from bot.store import SQLiteStore, StoreError, open_store
from bot.store import schema as conversation_schema
from bot.store.pgstore import PostgresStore
from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]


async def test_two_instances_keep_one_conversations_turns_in_order(knowledge: Knowledge, pg_dsn: str) -> None:
    """Messages of one user reach two instances at once: each turn starts from what the one
    before it saved (nothing lost), and the transcript has every turn in one piece."""
    one, two = await PostgresStore.open(pg_dsn), await PostgresStore.open(pg_dsn)
    try:
        engines = [Engine(knowledge.content, knowledge.flows, knowledge.matcher, s) for s in (one, two)]
        cid = "tg:4711"
        await engines[0].handle(Inbound(cid, EventKind.COMMAND, text="start", arg="storage_full"))
        await asyncio.gather(
            engines[0].handle(Inbound(cid, EventKind.TEXT, text="i have the 50gb plan")),
            engines[1].handle(Inbound(cid, EventKind.TEXT, text="and the backup says it needs 120 gb")),
        )
        state = await engines[1].state_of(cid)
        assert state is not None
        # the lock decides which message is read first (either may be the plan's size), but
        # the second turn starts from what the first saved: both answers are kept
        assert {state.values.get("total_gb"), state.values.get("needed_gb")} == {"50", "120"}
        rows = await two.messages(cid)
        ins = [i for i, r in enumerate(rows) if r.direction == "in"]
        # each user line is followed by its own replies before the next user line
        assert len(ins) == 3
        assert all(rows[i + 1].direction == "out" for i in ins)
    finally:
        await one.close()
        await two.close()


async def test_a_conversation_continues_on_another_instance(knowledge: Knowledge, pg_dsn: str) -> None:
    one = await PostgresStore.open(pg_dsn)
    e1 = Engine(knowledge.content, knowledge.flows, knowledge.matcher, one)
    await e1.handle(Inbound("tg:9", EventKind.COMMAND, text="start", arg="storage_full"))
    await e1.handle(Inbound("tg:9", EventKind.TEXT, text="50 GB"))
    await one.close()  # the first instance goes away
    two = await PostgresStore.open(pg_dsn)
    try:
        e2 = Engine(knowledge.content, knowledge.flows, knowledge.matcher, two)
        await e2.handle(Inbound("tg:9", EventKind.TEXT, text="120gb"))
        state = await e2.state_of("tg:9")
        assert state is not None and state.values.get("needed_gb") == "120" and state.values.get("total_gb") == "50"
        counts = dict(await two.database.fetchall("SELECT name, n FROM counters WHERE name = 'conversations'"))
        assert counts == {"conversations": 1}
    finally:
        await two.close()


async def test_a_sqlite_file_from_user_version_days_is_taken_over_once(tmp_path: Path) -> None:
    """A file whose conversation tables were counted in PRAGMA user_version: opened by this
    bot, nothing runs twice, its rows stay, and the count moves to schema_versions."""
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    for step in conversation_schema.MIGRATIONS:
        con.executescript(step)
    con.execute(f"PRAGMA user_version = {len(conversation_schema.MIGRATIONS)}")
    con.execute("INSERT INTO conversations (id, created_at, updated_at, flow, step) "
                "VALUES ('tg:1', 1, 1, 'storage_full', 'ask_total')")
    con.commit()
    con.close()
    store = await SQLiteStore.open(db)
    try:
        assert (await store.load_state("tg:1")).step == "ask_total"  # type: ignore[union-attr]
        versions = dict(await store.database.fetchall("SELECT owner, version FROM schema_versions"))
        assert versions == {"conversations": len(conversation_schema.MIGRATIONS)}
    finally:
        await store.close()


def test_both_engines_have_the_same_numbered_steps() -> None:
    from bot.agents import schema as agents_schema
    from bot.escalation import schema as quote_schema

    for schema in (conversation_schema, quote_schema, agents_schema):
        assert len(schema.MIGRATIONS) == len(schema.POSTGRES_MIGRATIONS), schema.__name__


def test_database_settings_are_checked_at_start() -> None:
    s = Settings.from_env({"DATABASE_URL": "postgresql://bot:pw@db:5432/bot", "DB_POOL_SIZE": "4"})
    assert s.database == "postgresql://bot:pw@db:5432/bot" and s.db_pool_size == 4
    assert "pw" not in repr(s)
    with pytest.raises(ConfigError, match="DATABASE_URL") as err:
        Settings.from_env({"DATABASE_URL": "mysql://bot:topsecret@db/bot"})
    assert "topsecret" not in str(err.value)
    with pytest.raises(ConfigError, match="DB_POOL_SIZE"):
        Settings.from_env({"DB_POOL_SIZE": "0"})
    assert Settings.from_env({}).database == Settings().db_path  # SQLite stays the default


async def test_open_store_picks_the_engine_from_the_target(tmp_path: Path, pg_dsn: str) -> None:
    lite = await open_store(tmp_path / "x.db")
    pg = await open_store(pg_dsn)
    try:
        assert (lite.database.dialect, pg.database.dialect) == ("sqlite", "postgresql")
    finally:
        await lite.close()
        await pg.close()


async def test_a_user_without_rights_is_refused_at_start_by_name(pg_server: PostgresServer) -> None:
    pg_server.psql("DO $$ BEGIN CREATE ROLE visitor LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    url = pg_server.create_database().replace("postgres@", "visitor@")
    with pytest.raises(StoreError, match="cannot set up the schema"):
        await open_store(url)


def test_run_on_an_unreachable_database_exits_2_naming_the_setting(unused_tcp_port: int) -> None:
    env = {"DATABASE_URL": f"postgresql://bot:s3cr3t@127.0.0.1:{unused_tcp_port}/bot", "DB_CONNECT_TIMEOUT": "2",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "bot", "chat"], input="hi\n", capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "DATABASE_URL" in out.stderr and "s3cr3t" not in out.stderr + out.stdout
