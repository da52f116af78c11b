"""The bot on PostgreSQL when the database goes away — a real server, its sessions ended with
``pg_terminate_backend`` (what a fail-over, a restarted server or a cut idle connection does),
never a mock:

* a connection cut in the middle of a turn (the turn is waiting for a row another session
  holds): the turn is rolled back and runs again; the user gets one answer, stored once;
* the database refusing every connection (a fail-over in progress) when a message arrives:
  ``/healthz`` says 503 naming the database, the webhook refuses the update (Telegram delivers
  it again), and once the database is back the message is answered, once;
* the database lost during a turn for longer than the door's retries: the user is told to try
  again in a moment, nothing of that turn is kept, the next message is answered as usual."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.config import Settings
from bot.features import standard_features
from bot.runtime import Knowledge, Runtime, open_runtime
from tests.conftest import ROOT
from tests.support.fake_botapi import running_bot
from tests.support.postgres import PostgresServer


@pytest.fixture
async def pg_runtime(pg_migrated_dsn: str, knowledge: Knowledge) -> AsyncIterator[Runtime]:
    features = standard_features(Settings(), desk=False, deliver=False)
    runtime = await open_runtime(pg_migrated_dsn, ROOT / "content", ROOT / "flows", features=(features.quotes,),
                                 knowledge=knowledge)
    yield runtime
    await runtime.close()


async def _health(port: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(trust_env=False) as http, http.get(
            f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as r:
        return r.status, await r.json()


async def _waiting_session(admin: asyncpg.Connection, timeout: float = 30.0) -> int:
    """The pid of the session that waits for a lock the admin holds (the bot's turn, blocked on the
    conversation's row).

    Asked of ``pg_locks`` and ``pg_blocking_pids``, which read the lock manager afresh on every
    call. Not of ``pg_stat_activity``: inside the admin's transaction that view lists the backends
    of a snapshot taken at its first read, so a turn on a connection the bot's pool opened after
    that (the pool grows when two of its users overlap) never shows up in it, however long one
    waits. The deadline only bounds a turn that never reaches the row."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid() "
            "AND pg_backend_pid() = ANY(pg_blocking_pids(pid)) LIMIT 1")
        if pid is not None:
            return int(pid)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no turn waited for the locked row within {timeout:g} s")
        await asyncio.sleep(0.05)


async def test_a_connection_cut_in_the_middle_of_a_turn_runs_the_turn_again(pg_runtime: Runtime,
                                                                            pg_migrated_dsn: str) -> None:
    async with running_bot(pg_runtime, mode="webhook") as bot:
        assert await bot.say(3401, "hi, my iphone backup failed last night")
        admin = await asyncpg.connect(pg_migrated_dsn)
        try:
            hold = admin.transaction()
            await hold.start()  # another session holds the conversation's row: the next turn waits on it
            await admin.execute("SELECT 1 FROM conversations WHERE id = 'tg:3401' FOR UPDATE")
            before = {m.message_id for m in bot.fake.sent(3401)}
            update = bot.fake.send_text(3401, "it says not enough icloud storage?? i have 5gb only, whats that")
            victim = await _waiting_session(admin)
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim)  # cut mid-turn
            await hold.rollback()
        finally:
            await admin.close()
        await bot.wait_handled(update, 20)
        answers = [m for m in bot.fake.sent(3401) if m.message_id not in before]
        assert len(answers) == 1 and "try again" not in answers[0].text.lower(), [m.text for m in answers]
        lines = await pg_runtime.store.database.fetchall(
            "SELECT text FROM messages WHERE conversation_id = 'tg:3401' AND direction = 'in' ORDER BY id")
        assert [r[0] for r in lines] == ["hi, my iphone backup failed last night",
                                         "it says not enough icloud storage?? i have 5gb only, whats that"]


async def _back(port: int) -> dict[str, Any]:
    for _ in range(100):  # the pool reconnects on its next use
        status, body = await _health(port)
        if status == 200:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/healthz still says {status}: {body}")


async def test_a_message_that_arrives_while_the_database_is_away_is_answered_once_it_is_back(
    pg_runtime: Runtime, pg_migrated_dsn: str, pg_server: PostgresServer
) -> None:
    name = pg_migrated_dsn.rsplit("/", 1)[1]
    async with running_bot(pg_runtime, mode="webhook") as bot:
        port = bot.service.settings.webhook_port
        assert await bot.say(3501, "backup failed again, third night in a row")
        status, body = await _health(port)
        assert status == 200 and body["db"] == "ok", body
        # the database refuses every connection and ends the ones it has (a fail-over in progress)
        pg_server.psql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            pg_server.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            status, body = await _health(port)
            assert status == 503 and body["ok"] is False and body["db"] not in ("ok", ""), body
            before = {m.message_id for m in bot.fake.sent(3501)}
            update = bot.fake.send_text(3501, "hello?? are you there, it still says backup failed")
        finally:
            pg_server.psql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert (await _back(port))["db"] == "ok"
        await bot.wait_handled(update, 30)
        answers = [m for m in bot.fake.sent(3501) if m.message_id not in before]
        assert len(answers) == 1 and "try again" not in answers[0].text.lower(), [m.text for m in answers]


async def test_a_database_lost_during_a_turn_for_longer_tells_the_user_to_try_again(
    pg_runtime: Runtime, pg_migrated_dsn: str, pg_server: PostgresServer
) -> None:
    name = pg_migrated_dsn.rsplit("/", 1)[1]
    async with running_bot(pg_runtime, mode="webhook") as bot:
        port = bot.service.settings.webhook_port
        assert await bot.say(3601, "my icloud backup failed")
        admin = await asyncpg.connect(pg_migrated_dsn)
        hold = admin.transaction()
        await hold.start()
        await admin.execute("SELECT 1 FROM conversations WHERE id = 'tg:3601' FOR UPDATE")
        before = {m.message_id for m in bot.fake.sent(3601)}
        bot.fake.send_text(3601, "it says the last backup could not be completed, why")
        await _waiting_session(admin)  # the message is stored, its turn under way
        pg_server.psql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            pg_server.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            away = await bot.fake.wait_for(
                lambda: next((m for m in bot.fake.sent(3601) if "try again in a moment" in m.text), None), 30,
                "the user told to try again")
        finally:
            pg_server.psql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.terminate()
        assert "couldn't answer" in away.text
        assert (await _back(port))["db"] == "ok"
        # nothing of the failed turn was kept; the user's next message is answered as usual
        # (and only it: the failed one is not answered behind the apology's back)
        lines = await pg_runtime.store.database.fetchall(
            "SELECT text FROM messages WHERE conversation_id = 'tg:3601' AND direction = 'in'")
        assert [r[0] for r in lines] == ["my icloud backup failed"]
        again = await bot.say(3601, "sorry, again: it says the last backup could not be completed")
        assert len(again) == 1 and "try again" not in again[0].text.lower()
        new = [m.text for m in bot.fake.sent(3601) if m.message_id not in before]
        assert new == [away.text, again[0].text], new
