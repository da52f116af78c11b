"""The database seam on PostgreSQL (bot/store/postgres.py) against a real server the tests
start (tests/support/postgres.py): the same behaviour as SQLite where the protocol promises
it, and what only several processes on one database need (advisory locks per owner and per
conversation)."""

from __future__ import annotations

import asyncio

import pytest

from bot.store import StoreError
from bot.store.postgres import PostgresDatabase, redact_url, translate
from tests.support.postgres import PostgresServer


def test_placeholders_become_numbered_outside_literals() -> None:
    assert translate("SELECT ? , '?', \"a?\" FROM t WHERE x IN (?, ?)") == (
        "SELECT $1 , '?', \"a?\" FROM t WHERE x IN ($2, $3)"
    )


def test_the_password_never_shows_in_a_url_we_print() -> None:
    shown = redact_url("postgresql://bot:s3cret-Pa55@db.internal:5432/bot")
    assert "s3cret" not in shown and shown == "postgresql://bot:***@db.internal:5432/bot"


async def test_a_failed_transaction_leaves_nothing(pg_dsn: str) -> None:
    database = await PostgresDatabase.open(pg_dsn)
    try:
        await database.execute("CREATE TABLE t (x INTEGER)")
        with pytest.raises(ZeroDivisionError):
            async with database.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (?)", (1,))
                raise ZeroDivisionError
        async with database.transaction() as tx:
            assert await tx.execute("INSERT INTO t VALUES (?), (?)", (2, 3)) == 2
        assert [r[0] for r in await database.fetchall("SELECT x FROM t ORDER BY x")] == [2, 3]
        assert await database.execute("UPDATE t SET x = x + 1 WHERE x > ?", (0,)) == 2
    finally:
        await database.close()


async def test_migrations_run_once_each_even_when_two_instances_start_together(pg_dsn: str) -> None:
    steps = {
        "sqlite": ["CREATE TABLE a (x INTEGER)", "ALTER TABLE a ADD COLUMN y INTEGER"],
        "postgresql": ["CREATE TABLE a (x INTEGER)", "ALTER TABLE a ADD COLUMN y INTEGER"],
    }
    one, two = await PostgresDatabase.open(pg_dsn), await PostgresDatabase.open(pg_dsn)
    try:
        assert await asyncio.gather(one.migrate("demo", steps), two.migrate("demo", steps)) == [2, 2]
        assert await one.fetchall("SELECT owner, version FROM schema_versions") == [("demo", 2)]
        await one.execute("UPDATE schema_versions SET version = 7")
        with pytest.raises(StoreError, match=r"demo schema version 7.*upgrade the bot"):
            await two.migrate("demo", steps)
    finally:
        await one.close()
        await two.close()


async def test_a_feature_without_a_postgres_schema_is_refused_by_name(pg_dsn: str) -> None:
    database = await PostgresDatabase.open(pg_dsn)
    try:
        with pytest.raises(StoreError, match="agents feature has no postgresql schema"):
            await database.migrate("agents", ["CREATE TABLE x (y INTEGER)"])
    finally:
        await database.close()


async def test_one_conversation_turn_at_a_time_across_instances(pg_dsn: str) -> None:
    """Two instances (two pools) on one conversation: the second turn starts only after the
    first has committed, and sees what it wrote; another conversation is not held up."""
    one, two = await PostgresDatabase.open(pg_dsn), await PostgresDatabase.open(pg_dsn)
    try:
        await one.execute("CREATE TABLE c (id TEXT PRIMARY KEY, n INTEGER)")
        await one.execute("INSERT INTO c VALUES ('tg:1', 0)")
        inside, release = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with one.turn("tg:1") as tx:
                await tx.execute("UPDATE c SET n = n + 1 WHERE id = ?", ("tg:1",))
                inside.set()
                await release.wait()

        async def second() -> int:
            await inside.wait()
            async with two.turn("tg:1"):
                row = await two.fetchone("SELECT n FROM c WHERE id = ?", ("tg:1",))
                return int(row[0])

        async def other() -> str:
            await inside.wait()
            async with two.turn("tg:2"):
                return "not held up"

        t1 = asyncio.create_task(first())
        t2 = asyncio.create_task(second())
        assert await asyncio.wait_for(other(), 5) == "not held up"
        assert not t2.done()
        release.set()
        await t1
        assert await asyncio.wait_for(t2, 5) == 1
    finally:
        await one.close()
        await two.close()


async def test_an_unreachable_server_is_named_without_its_password(unused_tcp_port: int) -> None:
    url = f"postgresql://bot:hunter2-secret@127.0.0.1:{unused_tcp_port}/bot"
    with pytest.raises(StoreError) as err:
        await PostgresDatabase.open(url, connect_timeout=2)
    assert "DATABASE_URL" in str(err.value) and "hunter2" not in str(err.value)


async def test_a_read_survives_a_lost_connection(pg_server: PostgresServer) -> None:
    """The server ends the pool's connections (a restart, a fail-over, an idle cut): the next
    read is answered on a new connection, not turned into an error for the user."""
    dsn = pg_server.create_database()
    database = await PostgresDatabase.open(dsn, pool_size=2)
    try:
        assert await database.fetchone("SELECT 1") == (1,)
        name = dsn.rsplit("/", 1)[1]
        pg_server.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        assert await database.fetchone("SELECT 2") == (2,)
    finally:
        await database.close()


async def test_a_full_pool_is_an_error_naming_the_setting_not_a_hang(pg_dsn: str) -> None:
    database = await PostgresDatabase.open(pg_dsn, pool_size=2, connect_timeout=1)
    try:
        async with database.transaction(), database.transaction():
            with pytest.raises(StoreError, match="DB_POOL_SIZE"):
                await database.fetchone("SELECT 1")
    finally:
        await database.close()


async def test_a_turn_starts_on_a_new_connection_when_the_old_one_was_cut(pg_server: PostgresServer) -> None:
    dsn = pg_server.create_database()
    database = await PostgresDatabase.open(dsn, pool_size=2)
    try:
        await database.execute("CREATE TABLE c (id TEXT PRIMARY KEY)")
        name = dsn.rsplit("/", 1)[1]
        pg_server.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        async with database.turn("tg:1") as tx:
            await tx.execute("INSERT INTO c VALUES (?)", ("tg:1",))
        assert await database.fetchall("SELECT id FROM c") == [("tg:1",)]
    finally:
        await database.close()
