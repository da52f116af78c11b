"""The Telegram door's store on a real PostgreSQL server, shared by two instances: an update
stored once wherever it lands, taken over from a dead instance in order, a turn finished at
most once, a message a dead instance was sending never sent twice, per-chat order kept."""

from __future__ import annotations

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
    await a.sending([job.id])  # on the wire when the instance dies
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
