"""Leadership across processes on a real PostgreSQL server: one leader at a time, a new one
within a few seconds after the leader's process is killed, a leader whose connection is cut
stops leading (its work is cancelled), SQLite always leads."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import asyncpg
import pytest

from bot.store.leader import AdvisoryLeader, SoleLeader, lead, leadership_for, lock_id
from tests.support.postgres import PostgresServer, pg_dsn, pg_server  # noqa: F401 - fixtures

FAST = {"retry_every": 0.2, "check_every": 0.2}


async def _until(predicate, timeout: float = 10.0) -> float:  # noqa: ANN001
    """Seconds until ``predicate()`` held (polling a condition, not sleeping for a race)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_sqlite_always_leads() -> None:
    leader = leadership_for(None)
    assert isinstance(leader, SoleLeader) and leader.is_leader
    ran = asyncio.Event()

    async def work() -> None:
        ran.set()

    await asyncio.wait_for(lead(leader, work, "work"), 1.0)
    assert ran.is_set()


async def test_one_leader_and_hand_over_on_close(pg_dsn: str) -> None:  # noqa: F811
    a = AdvisoryLeader(pg_dsn, "desk", **FAST)
    b = AdvisoryLeader(pg_dsn, "desk", **FAST)
    other = AdvisoryLeader(pg_dsn, "polling:42", **FAST)  # another name: its own leader
    try:
        await a.start()
        await b.start()
        await other.start()
        assert a.is_leader and not b.is_leader and other.is_leader
        await a.close()
        await asyncio.wait_for(b.wait_leader(), 5.0)
        assert b.is_leader and not a.is_leader
    finally:
        for x in (a, b, other):
            await x.close()


HOLDER = """
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1])
    assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", int(sys.argv[2]))
    print("leading", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


async def test_a_killed_leader_is_replaced_within_seconds(pg_dsn: str) -> None:  # noqa: F811
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, pg_dsn, str(lock_id("desk"))],
                            stdout=subprocess.PIPE, text=True)
    follower = AdvisoryLeader(pg_dsn, "desk", retry_every=0.5)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "leading"
        await follower.start()
        assert not follower.is_leader
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        waited = await _until(lambda: follower.is_leader, timeout=10.0)
        assert waited < 3.0  # retry_every 0.5 s: the server frees the lock as the socket closes
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        await follower.close()


async def test_a_leader_whose_connection_is_cut_stops_its_work_and_competes_again(pg_dsn: str) -> None:  # noqa: F811
    a = AdvisoryLeader(pg_dsn, "desk", **FAST)
    b = AdvisoryLeader(pg_dsn, "desk", **FAST)
    runs: list[str] = []
    cancelled: list[str] = []

    def worker(name: str):  # noqa: ANN202
        async def work() -> None:
            runs.append(name)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(name)
                raise
        return work

    await a.start()
    await b.start()
    tasks = [asyncio.ensure_future(lead(a, worker("a"), "a")), asyncio.ensure_future(lead(b, worker("b"), "b"))]
    try:
        await _until(lambda: runs == ["a"])
        admin = await asyncpg.connect(pg_dsn)
        try:  # the leader's session ends under it (a failover, a network cut, an admin)
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                "backup-bot leader desk",
            )
        finally:
            await admin.close()
        # both sessions were terminated (same application name): a new leader, one at a time
        await _until(lambda: cancelled[:1] == ["a"] and len(runs) == 2)
        assert sum(x.is_leader for x in (a, b)) == 1
        assert len(runs) - len(cancelled) == 1  # never two workers at once
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await a.close()
        await b.close()


async def test_database_down_at_start_is_a_follower_until_it_is_back(pg_server: PostgresServer) -> None:  # noqa: F811
    dsn = f"postgresql://postgres@127.0.0.1:{_closed_port()}/none"
    leader = AdvisoryLeader(dsn, "desk", retry_every=0.1, timeout=1.0)
    try:
        await leader.start()  # no exception: it keeps trying
        assert not leader.is_leader
    finally:
        await leader.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("url", ["postgresql://x@h/db", "postgres://x@h/db"])
def test_postgres_urls_get_the_advisory_lock(url: str) -> None:
    assert isinstance(leadership_for(url), AdvisoryLeader)
    assert isinstance(leadership_for("var/bot.db"), SoleLeader)


# -- polling: only the leader polls; the follower takes over when the leader goes -------------------

async def _runtime(path, knowledge, leadership):  # noqa: ANN001, ANN202
    from bot.config import Settings
    from bot.features import standard_features
    from bot.runtime import open_runtime
    from tests.conftest import ROOT

    features = standard_features(Settings(), desk=False, deliver=False)
    return await open_runtime(path, ROOT / "content", ROOT / "flows", features=features.all,
                              knowledge=knowledge, leadership=leadership)


async def test_only_the_leader_polls_and_the_follower_takes_over(pg_dsn: str, tmp_path, knowledge) -> None:  # noqa: ANN001, F811
    from tests.support.fake_botapi import FakeBotAPI, running_bot

    fake = FakeBotAPI()
    await fake.start()
    first = await _runtime(tmp_path / "a.db", knowledge, AdvisoryLeader(pg_dsn, "bot:1", **FAST))
    second = await _runtime(tmp_path / "b.db", knowledge, AdvisoryLeader(pg_dsn, "bot:1", **FAST))
    try:
        await first.start()
        await second.start()
        async with running_bot(first, fake=fake) as a, running_bot(second, fake=fake) as b:
            assert a.service.polling and not b.service.polling
            assert (await a.service.health())["ok"] and (await b.service.health())["ok"]  # a follower is fine
            answer = await a.say(501, "hi, my iphone backup keeps failing every night")
            assert answer
            await a.service.stop()  # the leader goes (its lock is released with its runtime)
            await first.close()
            await _until(lambda: b.service.polling, timeout=10.0)
            answer = await b.say(502, "hello?? icloud says backup failed, what do i do")
            assert answer
        assert fake.polls_at_once == 1  # never two pollers at once (Telegram would answer 409)
    finally:
        await first.close()
        await second.close()
        await fake.stop()


# -- the agents' desk: the leader writes to the group, a follower records; the limit holds --------

async def _agents_runtime(path, knowledge, leadership, gw):  # noqa: ANN001, ANN202
    from bot.agents import Agents
    from bot.agents.desk import DeskOptions
    from bot.config import Settings
    from bot.escalation import Escalation
    from bot.runtime import Ports, open_runtime
    from tests.conftest import ROOT

    settings = Settings(agent_chat_id=-100777)
    quotes = Escalation(settings, deliver=False)
    options = DeskOptions(group_limit=gw.limit, group_window=gw.window, record_every=0.01)
    agents = Agents(settings, options=options, quotes=quotes)
    runtime = await open_runtime(path, ROOT / "content", ROOT / "flows", features=[quotes, agents],
                                 knowledge=knowledge, leadership=leadership)
    await runtime.start(Ports(agents_group=gw))
    return runtime, agents


async def test_only_the_leader_writes_to_the_agents_group_and_a_follower_takes_over(
    pg_dsn: str, tmp_path, knowledge  # noqa: ANN001, F811
) -> None:
    from bot.agents.memory import MemoryGateway
    from bot.core.messages import EventKind, Inbound

    gw = MemoryGateway(limit=20, window=2.0)  # the group refuses a call past 20 in any 2 s
    db = tmp_path / "shared.db"
    a_rt, a = await _agents_runtime(db, knowledge, AdvisoryLeader(pg_dsn, "bot:7", **FAST), gw)
    b_rt, b = await _agents_runtime(db, knowledge, AdvisoryLeader(pg_dsn, "bot:7", **FAST), gw)

    def group_text() -> str:
        return "\n".join(m.text for m in gw.group.values())

    async def say(rt, uid: int, text: str) -> None:  # noqa: ANN001
        await rt.engine.handle(Inbound(f"tg:{uid}", EventKind.TEXT, text=text, user_name="Kofi"))

    try:
        assert a.enabled and b.desk is not None and not b.enabled  # b's desk only records
        # a user served by the follower: the leader mirrors the line and flags the escalation
        await say(b_rt, 31, "I want to talk to a human please")
        await _until(lambda: "talk to a human" in group_text(), timeout=15)
        await _until(lambda: "🚩 Escalations" in gw.topics.values()  # listed by the leader
                     and "asked for a person" in group_text(), timeout=20)
        await a_rt.close()  # the leader goes away
        await _until(lambda: b.enabled, timeout=10)
        await say(b_rt, 32, "hi im still waiting, iCloud says not enough storage for backup??")
        await _until(lambda: "not enough storage" in group_text(), timeout=20)
        assert gw.refused == 0  # the group's limit held, hand-over included
        lines = [m.text for m in gw.group.values() if "talk to a human" in m.text]
        assert len(lines) <= 2  # the topic and at most the feed: no line posted again by the new leader
    finally:
        await a_rt.close()
        await b_rt.close()


async def test_a_new_leader_continues_with_what_is_left_of_the_groups_minute(
    pg_dsn: str, tmp_path, knowledge  # noqa: ANN001, F811
) -> None:
    """The group's budget (20 calls a minute) is stored as the leader spends it: after a
    hand-over the new leader writes at once when the minute has room (it no longer waits a
    whole minute to be safe), counting the old leader's calls of that minute against it."""
    from bot.agents.limiter import GroupLimiter
    from bot.agents.memory import MemoryGateway
    from bot.core.messages import EventKind, Inbound

    gw = MemoryGateway(limit=20, window=60.0)  # Telegram's: the group refuses a call past 20 a minute

    def group_text() -> str:
        return "\n".join(m.text for m in gw.group.values())

    async def agents_runtime(leader: AdvisoryLeader):  # noqa: ANN202 - one process each: its own limiter
        from bot.agents import Agents
        from bot.agents.desk import DeskOptions
        from bot.config import Settings
        from bot.escalation import Escalation
        from bot.runtime import Ports, open_runtime
        from tests.conftest import ROOT

        settings = Settings(agent_chat_id=-100777)
        quotes = Escalation(settings, deliver=False)
        options = DeskOptions(group_limit=20, group_window=60.0, record_every=0.01)
        agents = Agents(settings, options=options, quotes=quotes, limiter=GroupLimiter(20, 60.0, spread=False))
        runtime = await open_runtime(pg_dsn, ROOT / "content", ROOT / "flows", features=[quotes, agents],
                                     knowledge=knowledge, leadership=leader)
        await runtime.start(Ports(agents_group=gw))
        return runtime, agents

    a_rt, a = await agents_runtime(AdvisoryLeader(pg_dsn, "bot:8", **FAST))
    b_rt, b = await agents_runtime(AdvisoryLeader(pg_dsn, "bot:8", **FAST))
    try:
        assert a.enabled and not b.enabled
        await a_rt.engine.handle(Inbound("tg:41", EventKind.TEXT, text="my icloud backup failed twice", user_name="Ada"))
        await _until(lambda: "backup failed twice" in group_text(), timeout=15)
        spent = len(gw.calls)
        assert 0 < spent < 15  # the old leader used part of the minute
        await a_rt.close()
        await _until(lambda: b.enabled, timeout=10)
        await b_rt.engine.handle(Inbound("tg:42", EventKind.TEXT, text="backup stuck at 20% since monday",
                                         user_name="Ben"))
        await _until(lambda: "stuck at 20%" in group_text(), timeout=15)  # at once, not after a minute
        assert gw.refused == 0
        # the new leader counts the old one's calls: the minute's room is what both left
        assert b.desk is not None and b.desk.limiter.used() >= spent
    finally:
        await a_rt.close()
        await b_rt.close()
