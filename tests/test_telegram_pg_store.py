"""The Telegram door's store on a real PostgreSQL server, shared by two instances: an update
stored once wherever it lands, taken over from a dead instance in order, a turn finished at
most once, a message a dead instance was sending never sent twice, per-chat order kept."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bot.store.postgres import PostgresDatabase
from bot.store.schema import BY_DIALECT, OWNER
from bot.tg.store import ANSWER, JobSpec
from bot.tg.store_pg import PostgresTelegramStore, chat_of


def update(uid: int, chat: int, text: str) -> tuple[int, str]:
    raw = {"update_id": uid, "message": {"message_id": uid, "date": 0, "text": text,
                                         "chat": {"id": chat, "type": "private"}, "from": {"id": chat}}}
    return uid, json.dumps(raw)


@pytest.fixture
async def two(pg_dsn: str) -> Any:
    dbs = [await PostgresDatabase.open(pg_dsn, pool_size=4) for _ in range(2)]
    await dbs[0].migrate(OWNER, BY_DIALECT)
    stores = [PostgresTelegramStore(db) for db in dbs]
    for s in stores:
        await s.open()
    yield stores
    for s in stores:
        await s.close()
    for db in dbs:
        await db.close()


async def test_an_update_is_stored_once_whichever_instance_gets_it(two: Any) -> None:
    a, b = two
    assert await a.add_updates([update(1, 501, "my backup is stuck at 80% since last night")]) == [1]
    assert await b.add_updates([update(1, 501, "my backup is stuck at 80% since last night")]) == []  # a repeat
    assert await b.add_updates([update(2, 502, "icloud full again lol")]) == [2]
    assert await a.last_update_id() == 2


async def test_a_dead_instances_updates_and_messages_are_taken_over_in_order(two: Any) -> None:
    a, b = two
    assert await a.add_updates([update(10, 601, "hi"), update(11, 602, "backup failed")]) == [10, 11]
    await a.finish(10, [JobSpec(601, "send", ANSWER, {"html": "first answer"})])
    [job] = await a.finish(None, [JobSpec(601, "send", ANSWER, {"html": "second"})])
    await a.mark_then([job.id], lambda: None)  # on the wire when the instance dies
    assert await b.adopt() == ([], [])  # a is alive: nothing to take
    await a.close()  # its session ends: the lock is gone (as when the process is killed)
    updates, jobs = await b.adopt()
    assert [u for u, _ in updates] == [11]
    assert [j.body["html"] for j in jobs] == ["first answer"]  # the one on the wire is not sent again
    assert (await b.counts()).get("unsure") == 1
    assert await b.adopt() == ([], [])  # taken once


async def test_a_turn_finished_elsewhere_is_not_finished_again(two: Any) -> None:
    a, b = two
    await a.add_updates([update(20, 701, "how much is 200gb")])
    assert await a.finish(20, [JobSpec(701, "send", ANSWER, {"html": "the plans"})])
    assert await b.finish(20, [JobSpec(701, "send", ANSWER, {"html": "the plans again"})]) == []
    assert (await a.counts()) == {"pending": 1}


async def test_a_chats_next_update_goes_where_its_earlier_one_waits(two: Any) -> None:
    a, b = two
    assert await a.add_updates([update(30, 801, "phone fell in the pool")]) == [30]
    # the same user again, through the other instance, before the first is handled
    assert await b.add_updates([update(31, 801, "it was only for a second")]) == []
    updates, _ = await a.adopt()
    assert [u for u, _ in updates] == [31]  # the first instance has it, behind update 30
    # a reply of a chat whose earlier reply waits at the other instance goes there too
    [first] = await a.finish(30, [JobSpec(801, "send", ANSWER, {"html": "one"})])
    assert await b.finish(31, [JobSpec(801, "send", ANSWER, {"html": "two"})]) == []
    _, jobs = await a.adopt()
    assert [j.body["html"] for j in jobs] == ["two"] and jobs[0].id > first.id


def test_chat_of_reads_messages_and_presses() -> None:
    assert chat_of({"message": {"chat": {"id": 5}}}) == 5
    assert chat_of({"callback_query": {"from": {"id": 9}, "message": {"chat": {"id": 9}}}}) == 9
    assert chat_of({"update_id": 3}) is None


async def test_a_lost_database_connection_costs_the_user_nothing(pg_dsn: str, knowledge: Any) -> None:
    """Every connection of the bot is cut (a fail-over, a restarted server) between two
    messages: the next message is answered once, and the instance holds its lock again at once
    (else another instance would take its work over while it is still doing it)."""
    import asyncpg

    from bot.config import Settings
    from bot.features import standard_features
    from bot.runtime import open_runtime
    from tests.conftest import ROOT
    from tests.support.fake_botapi import running_bot

    features = standard_features(Settings(), desk=False, deliver=False)
    runtime = await open_runtime(pg_dsn, ROOT / "content", ROOT / "flows", features=(features.quotes,),
                                 knowledge=knowledge)
    try:
        async with running_bot(runtime, mode="webhook") as bot:
            assert await bot.say(3301, "hi, my iphone backup failed last night")
            store = bot.door.tg_store
            session_before = store._lock_conn
            admin = await asyncpg.connect(pg_dsn)
            try:
                cut = await admin.fetchval(
                    "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            finally:
                await admin.close()
            assert cut >= 1
            new = await bot._push(3301, lambda: bot.fake.send_text(
                3301, "it says not enough icloud storage?? i have 5gb only"), timeout=20)
            assert len(new) == 1
            rows = await runtime.store.database.fetchall(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = 'tg:3301' AND direction = 'in'")
            assert rows[0][0] == 2  # each message handled once
            for _ in range(50):  # the take-over loop notices within a second
                if store._lock_conn is not session_before and await store.alive():
                    break
                await asyncio.sleep(0.1)
            assert store._lock_conn is not session_before and await store.alive()  # a new session holds it
    finally:
        await runtime.close()
