"""The desk as a support desk: waiting alerts and honest expiry, business hours, the escalation
queue (/queue, Claim / Resolve), satisfaction and the week's figures — end to end through the
real PTB door and the fake Bot API (a forum group, its per-group limit enforced), time moved
with a ManualClock (no sleeps). Step analytics from the conversation scripts.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from bot.agents import reports
from bot.agents.desk import DeskOptions
from bot.agents.hours import BusinessHours
from bot.agents.ports import ManualClock
from bot.core.engine import Engine
from bot.runtime import Knowledge
from tests.support.chat import ChatDriver
from tests.support.postgres import both_stores
from tests.test_agents_telegram import AGENT, GROUP, LIMIT, Agents, running_agents

pytestmark = both_stores  # every test on SQLite and on PostgreSQL (tests/support/postgres.py)

SCRIPTS = Path(__file__).parent / "conversations"
WEEKDAYS_BERLIN = BusinessHours(tuple((d, 9 * 60, 17 * 60) for d in range(5)), "Europe/Berlin")
SATURDAY_NOON = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC).timestamp()


def options(**kw: object) -> DeskOptions:
    base: dict[str, object] = {"pause_seconds": 600, "digest_threshold": 4, "wait_alert_seconds": 120}
    return DeskOptions(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture
async def rig(knowledge: Knowledge, db_target: str | Path) -> AsyncIterator[Agents]:
    async with running_agents(knowledge, db_target) as h:
        yield h


def escalations(agents: Agents) -> int:
    return next(th for th, t in agents.fake.topics[GROUP].items() if t["name"] == "🚩 Escalations")


async def counters(agents: Agents) -> dict[str, int]:
    rows = await agents.runtime.store.database.fetchall("SELECT name, SUM(n) FROM counters GROUP BY name")
    return {str(k): int(v) for k, v in rows}


async def taken_over_and_waiting(agents: Agents, uid: int, name: str) -> int:
    """A user talks to the bot, an agent takes over, the user answers — and nobody replies."""
    await agents.user_says(
        uid,
        "hi my iphone backup keeps failing since the ios update, it says it couldnt be completed",
        first_name=name,
    )
    await agents.settle()
    n = len(agents.fake.sent(uid))
    await agents.take_over(uid, f"Hi {name}, Maria here. Which iPhone is it, and how much iCloud space is free?")
    await agents.fake.wait_for(lambda: len(agents.fake.sent(uid)) >= n + 2, 10, "the relay")
    answer = await agents.user_says(
        uid, "its an iphone 11, i think 2gb free?? also is it normal that photos take forever", first_name=name
    )
    assert answer == []  # the bot is paused: only a person may answer
    await agents.settle()
    return agents.thread_of(uid)


async def ask_queue(agents: Agents) -> str:
    before = len(agents.topic_messages(None))
    agents.agent_says(None, "/queue")
    msgs = await agents.fake.wait_for(
        lambda: agents.topic_messages(None)[before:] or None, 10, "the /queue answer in General"
    )
    return msgs[-1].text


# -- waiting alerts and honest expiry ------------------------------------------------------------


async def test_unanswered_message_raises_the_alert_before_the_pause_ends(
    knowledge: Knowledge, db_target: str | Path
) -> None:
    clock = ManualClock()
    async with running_agents(knowledge, db_target, clock=clock, options=options()) as agents:
        thread = await taken_over_and_waiting(agents, 1101, "Lena")
        await clock.advance(119)
        await agents.settle()
        assert "⏰" not in agents.topic_text(thread)  # not before the set time
        await clock.advance(2)
        await agents.fake.wait_for(lambda: "⏰ waiting 2 min" in agents.topic_text(thread), 10, "the alert")
        await agents.settle()
        assert "⏰ waiting 2 min" in agents.topic_text(escalations(agents))  # and in the Escalations topic
        assert (await agents.runtime.engine.state_of("tg:1101")).paused  # type: ignore[union-attr]
        assert "waiting for an answer" in await ask_queue(agents)
        # the agent answers: the wait is over, its first response is counted (121 s on the desk's clock)
        n = len(agents.fake.sent(1101))
        agents.agent_says(1101, "Yes, the first upload of photos can take a day. Let's free up space first.")
        await agents.fake.wait_for(lambda: len(agents.fake.sent(1101)) > n, 10, "the answer")
        await agents.settle()
        assert "waiting for an answer" not in await ask_queue(agents)
        week = (await reports.weekly(agents.runtime.store.db, 1, time.time()))[-1]
        assert week.takeovers == 1 and week.first_response_s == pytest.approx(121, abs=1)
        assert agents.policy.refused == 0 and agents.max_group_calls_in_window() <= LIMIT


async def test_pause_expiry_tells_the_waiting_customer_and_requeues(
    knowledge: Knowledge, db_target: str | Path
) -> None:
    clock = ManualClock()
    async with running_agents(knowledge, db_target, clock=clock, options=options(wait_alert_seconds=900)) as agents:
        await taken_over_and_waiting(agents, 1102, "Omar")
        await clock.advance(601)  # the pause ends before the alert's time: the expiry raises it
        told = await agents.fake.wait_for(
            lambda: next((m for m in agents.fake.sent(1102) if "nobody from our support team" in m.text), None),
            10,
            "the customer told what happens next",
        )
        assert "as soon as someone from the team is free" in told.text
        assert not any("support person has left" in m.text for m in agents.fake.sent(1102))
        await agents.settle()
        assert not (await agents.runtime.engine.state_of("tg:1102")).paused  # type: ignore[union-attr]
        assert "still unanswered when the pause expired" in agents.topic_text(escalations(agents))
        listing = await ask_queue(agents)
        assert "🟥 waiting for an answer" in listing and "Omar" in listing  # back in the queue, unclaimed


async def test_expiry_outside_business_hours_names_the_next_opening(
    knowledge: Knowledge, db_target: str | Path
) -> None:
    clock = ManualClock(SATURDAY_NOON)
    opts = options(wait_alert_seconds=900, hours=WEEKDAYS_BERLIN)
    async with running_agents(knowledge, db_target, clock=clock, options=opts) as agents:
        await taken_over_and_waiting(agents, 1103, "Pia")
        await clock.advance(601)
        told = await agents.fake.wait_for(
            lambda: next((m for m in agents.fake.sent(1103) if "nobody from our support team" in m.text), None),
            10,
            "the customer told when",
        )
        assert "Monday 09:00 (Europe/Berlin)" in told.text


async def test_outside_business_hours_a_request_for_a_person_is_told_when_and_queued(
    knowledge: Knowledge, db_target: str | Path
) -> None:
    clock = ManualClock(SATURDAY_NOON)
    async with running_agents(knowledge, db_target, clock=clock, options=options(hours=WEEKDAYS_BERLIN)) as agents:
        await agents.user_says(
            1104, "hello?? can I talk to a real person please, the bot doesnt understand my problem", first_name="Rui"
        )
        got = await agents.user_says(
            1104, "my ipad AND iphone both say backup failed, and i already pay for 200gb!!", first_name="Rui"
        )
        assert "team is away" in got[0].text and "Monday 09:00 (Europe/Berlin)" in got[0].text
        await agents.settle()
        assert "asked for a person" in agents.topic_text(escalations(agents))
        listing = await ask_queue(agents)
        assert "🟥 asked for a person" in listing and "Rui" in listing


# -- the queue -----------------------------------------------------------------------------------


async def test_data_at_risk_raises_an_item_claimed_and_resolved_with_buttons(rig: Agents) -> None:
    agents = rig
    await agents.user_says(
        1105,
        "dropped my phone in the pool yesterday and it wont turn on, all my baby photos are on it 😭",
        first_name="Sam",
    )
    await agents.settle()
    thread = agents.thread_of(1105)
    assert "data may be at risk" in agents.topic_text(thread)  # flagged at once...
    assert not any("data at risk" in m.text for m in agents.fake.sent(GROUP) if m.thread_id != thread)
    await agents.user_presses(1105, label="No, or I'm not sure")  # ...an escalation once there is no backup
    await agents.settle()
    assert "🚩 data at risk" in agents.topic_text(thread)
    listed = next(m for m in agents.topic_messages(escalations(agents)) if "data at risk" in m.text)
    ref = agents.desk.topic_of("tg:1105").ref  # type: ignore[union-attr]
    assert f"#{ref}" in listed.text and listed.labels[:2] == [f"✋ Claim #{ref}", f"✅ Resolve #{ref}"]
    assert "🟥 data at risk" in await ask_queue(agents)
    agents.fake.press(GROUP, label="✋ Claim", message_id=listed.message_id, user_id=AGENT)
    listing = agents.fake.messages[GROUP]
    await agents.fake.wait_for(lambda: "✋ User4242" in listing[listed.message_id].text, 10, "claimed")
    assert "✋ User4242" in await ask_queue(agents)
    agents.fake.press(GROUP, label="✅ Resolve", message_id=listed.message_id, user_id=AGENT)
    await agents.fake.wait_for(lambda: "✅ User4242" in listing[listed.message_id].text, 10, "resolved")
    assert agents.fake.messages[GROUP][listed.message_id].keyboard is None  # nothing left to press
    assert "queue is empty" in await ask_queue(agents)
    assert all(q["answered"] for q in agents.fake.callback_queries.values())


# -- satisfaction, figures, erasure --------------------------------------------------------------


async def test_satisfaction_is_stored_counted_shown_and_survives_forget(rig: Agents) -> None:
    agents = rig
    uid = 1106
    await agents.user_command(uid, "start", "backup_stuck")
    yes = next(lb for lb in agents.fake.last_keyboard(uid).labels if lb.startswith("✅"))
    got = await agents.user_presses(uid, label=yes)
    assert "how helpful was this" in got[-1].text and got[-1].labels[:5] == ["1", "2", "3", "4", "5"]
    await agents.user_presses(uid, label="4")
    got = await agents.user_says(uid, "worked!! tho i had to read the 2nd step twice, maybe make it shorter")
    assert "Thank you" in got[0].text
    await agents.settle()
    card = agents.fake.messages[GROUP][agents.desk.topic_of(f"tg:{uid}").card_message_id]  # type: ignore[union-attr]
    assert "★★★★☆ 4/5" in card.text and "read the 2nd step twice" in card.text
    # a takeover and a hand-back: the person's help is rated too
    n = len(agents.fake.sent(uid))
    await agents.take_over(uid, "Hi, Maria here - anything else with the backup?")
    await agents.fake.wait_for(lambda: len(agents.fake.sent(uid)) >= n + 2, 10, "the relay")
    agents.agent_says(uid, "/done")
    thread = agents.thread_of(uid)
    prompt = await agents.fake.wait_for(
        lambda: agents.prompt(thread, "▶️"), 10, "the /done prompt"
    )
    agents.fake.press(GROUP, label=prompt.labels[1], message_id=prompt.message_id, user_id=AGENT)  # main menu
    await agents.fake.wait_for(
        lambda: any("How helpful was our support person" in m.text for m in agents.fake.sent(uid)), 10, "the question"
    )
    await agents.user_presses(uid, label="5")
    await agents.user_presses(uid, label="Skip")
    await agents.settle()
    c = await counters(agents)
    assert c["csat:bot:4"] == 1 and c["csat:agent:5"] == 1 and c["csat:comment"] == 1
    assert c["takeover:Maria"] == 1 and c["handle_n"] == 1 and c["fixed:backup_stuck.wait"] == 1
    # the team lead's figures
    agents.agent_says(None, "/stats")
    stats = await agents.fake.wait_for(
        lambda: next((m for m in agents.topic_messages(None) if "Week by week" in m.text), None), 10, "/stats"
    )
    assert "4.5 (2)" in stats.text  # this week's mean rating, of two
    assert "Maria 1" in stats.text and "backup_stuck.wait 1" in stats.text
    assert "after a fix 4.0 (1) · after an agent 5.0 (1) · comments 1" in stats.text
    db = agents.runtime.store.db
    before = (await reports.weekly(db, 4, time.time()), await reports.desk_figures(db, 0), await counters(agents))
    await agents.user_command(uid, "forget")
    await agents.feature.wait_cleanups()
    await agents.settle()
    left = await agents.runtime.store.database.fetchone(
        "SELECT COUNT(*) FROM agent_queue WHERE conversation_id = ?", (f"tg:{uid}",))
    assert left is not None and left[0] == 0  # the person's queue items are erased...
    after = (await reports.weekly(db, 4, time.time()), await reports.desk_figures(db, 0), await counters(agents))
    assert after[:2] == before[:2]  # ...the figures are not
    assert {k: v for k, v in after[2].items() if k != "event:forgotten"} == before[2]  # (an erasure is counted)


async def test_a_restart_keeps_the_waiting_clock(knowledge: Knowledge, db_target: str | Path) -> None:
    clock = ManualClock()
    async with running_agents(knowledge, db_target, clock=clock, options=options()) as agents:
        await taken_over_and_waiting(agents, 1107, "Tom")
        await clock.advance(60)
    async with running_agents(knowledge, db_target, clock=clock, options=options()) as agents:
        await agents.settle()
        await clock.advance(59)
        await agents.settle()
        assert not any("⏰" in m.text for m in agents.fake.sent(GROUP))
        await clock.advance(2)  # 121 s after the customer's message, across the restart
        await agents.fake.wait_for(
            lambda: any("⏰ waiting 2 min" in m.text for m in agents.fake.sent(GROUP)), 10, "the alert"
        )


# -- step analytics from the conversation scripts ------------------------------------------------


def _script(name: str) -> dict[str, object]:
    for path in sorted(SCRIPTS.glob("*.yaml")):
        for doc in yaml.safe_load(path.read_text(encoding="utf-8")):
            if doc.get("name") == name:
                return doc
    raise LookupError(name)


async def test_step_analytics_counted_from_scripted_conversations(engine: Engine) -> None:
    names = [
        "feedback - fixed, four stars and a comment, then the menu",
        "feedback - a rating without a comment",
        "feedback - no rating at all, prevention tips instead",
        "common - resolved, then bye returns to the main menu",
    ]
    for i, name in enumerate(names):
        chat = ChatDriver(engine, f"script:{i}")
        for turn in _script(name)["conversation"]:  # type: ignore[union-attr]
            if "say" in turn:
                await chat.say(str(turn["say"]))
            elif "press" in turn:
                await chat.press(str(turn["press"]))
            else:
                await chat.command(str(turn["command"]))
    figures = await reports.desk_figures(engine.store.db, 0)  # type: ignore[attr-defined]
    fixed = dict(figures.fixed_after)
    assert fixed["backup_stuck.wait"] == 2  # two scripts said "fixed" right after that step
    assert fixed["network_issue.closer"] == 1
    assert sum(n for s, n in fixed.items() if s.startswith("backup_failed.")) == 1
    per_flow = {f: (r, e) for f, r, e in figures.resolved_per_flow}
    assert per_flow["backup_stuck"] == (2, 2) and per_flow["network_issue"] == (1, 1)
    assert figures.ratings["bot"] == (2, 3.0) and figures.comments == 1  # a 4 and a 2; one comment
