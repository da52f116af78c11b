"""Support agents end to end: the real PTB Application and door, the desk, and the fake Bot
API over HTTP (a forum supergroup with topics, Telegram's per-group limit enforced).

Telegram's 20 messages/minute per group is kept as a *count*; the minute is shortened
(``WINDOW`` seconds) on both sides — the fake's refusal policy and the desk's budget — so
the 50-user test runs in seconds with the same batching logic. Waits are on conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from bot.agents import cli as agents_cli
from bot.agents.desk import AgentDesk, DeskOptions
from bot.agents.feature import Agents as AgentsFeature
from bot.agents.limiter import GroupLimiter
from bot.agents.ports import Clock, ManualClock, SystemClock
from bot.config import Settings
from bot.escalation import Escalation
from bot.features import Features, standard_features
from bot.runtime import Knowledge, Runtime, check, open_runtime
from bot.store import open_store
from bot.testing.fakeapi import FakeBotAPI, RateLimitPolicy, SentMessage, is_group_chat
from bot.tg.features import attach_features
from bot.tg.ratelimit import RateLimits
from bot.tg.service import TelegramService
from tests.support.postgres import both_stores

pytestmark = both_stores  # every test on SQLite and on PostgreSQL (tests/support/postgres.py)

ROOT = Path(__file__).resolve().parents[1]
GROUP = -1009876543210
AGENT = 4242
ADMIN = 99
WINDOW = 0.6  # "one minute" for the group limit in these tests
LIMIT = 20


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    k, problems = check(ROOT / "content", ROOT / "flows", "en", standard_features().all)
    if k is None:
        pytest.skip(f"content does not load: {problems[:3]}")
    return k


@dataclass
class Agents:
    fake: FakeBotAPI
    service: TelegramService
    feature: AgentsFeature
    runtime: Runtime
    policy: RateLimitPolicy

    @property
    def desk(self) -> AgentDesk:
        assert self.feature.desk is not None, "the desk starts with the service"
        return self.feature.desk

    # -- users (private chats) --------------------------------------------------------------------
    async def user_says(self, uid: int, text: str, *, first_name: str | None = None) -> list[SentMessage]:
        before = len(self.fake.sent(uid))
        upd = self.fake.send_text(uid, text, first_name=first_name)
        await self._handled(upd)
        return self.fake.sent(uid)[before:]

    async def user_command(self, uid: int, name: str, arg: str = "") -> list[SentMessage]:
        before = len(self.fake.sent(uid))
        await self._handled(self.fake.command(uid, name, arg))
        return self.fake.sent(uid)[before:]

    async def user_presses(self, uid: int, **kw: Any) -> list[SentMessage]:
        before = len(self.fake.sent(uid))
        await self._handled(self.fake.press(uid, **kw))
        return self.fake.sent(uid)[before:]

    async def _handled(self, update: dict[str, Any]) -> None:
        uid = update["update_id"]
        await self.fake.wait_for(lambda: uid in self._done, 10, f"update {uid}")

    @property
    def _done(self) -> set[int]:
        return self.service.door.__dict__.setdefault("_agents_test_done", set())

    # -- the agents' group ------------------------------------------------------------------------
    def thread_of(self, uid: int) -> int:
        t = self.desk.topic_of(f"tg:{uid}")
        assert t is not None and t.thread_id is not None, f"no topic for {uid}"
        return t.thread_id

    def topic_messages(self, thread: int | None) -> list[SentMessage]:
        return [m for m in self.fake.sent(GROUP) if m.thread_id == thread and not m.deleted]

    def topic_text(self, thread: int | None) -> str:
        return "\n".join(m.text for m in self.topic_messages(thread))

    def agent_says(self, uid: int | None, text: str, *, user_id: int = AGENT) -> dict[str, Any]:
        thread = self.thread_of(uid) if uid is not None else None
        return self.fake.send_text(GROUP, text, user_id=user_id, first_name="Maria", thread_id=thread)

    def prompt(self, thread: int, label_start: str) -> SentMessage | None:
        """The newest message in the topic with a button whose label starts with ``label_start``."""
        return next(
            (m for m in reversed(self.topic_messages(thread)) if any(lb.startswith(label_start) for lb in m.labels)),
            None,
        )

    async def take_over(self, uid: int, text: str, *, user_id: int = AGENT) -> dict[str, Any]:
        """An agent's first reply while the bot is talking: held until the agent taps "send and
        pause the bot" (done here); returns the agent's update."""
        upd = self.agent_says(uid, text, user_id=user_id)
        thread = self.thread_of(uid)
        prompt = await self.fake.wait_for(lambda: self.prompt(thread, "📨 Send"), 10, "the confirmation")
        self.fake.press(GROUP, label=prompt.labels[0], message_id=prompt.message_id, user_id=user_id)
        return upd

    async def settle(self, full: bool = True, timeout: float = 30) -> None:
        await self.desk.settle(timeout, full=full)

    def group_calls(self) -> list[Any]:
        return [c for c in self.fake.calls if c.params.get("chat_id") == GROUP]

    def max_group_calls_in_window(self) -> int:
        times = [c.received_at for c in self.group_calls()]
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - WINDOW:
                j += 1
            best = max(best, i - j + 1)
        return best


@asynccontextmanager
async def running_agents(
    k: Knowledge, db: str | Path, *, clock: Clock | None = None, options: DeskOptions | None = None
) -> AsyncIterator[Agents]:
    """The bot with the agents' feature behind the real Telegram door on a fake Bot API; ``db``:
    a SQLite file or a PostgreSQL URL (``db_target``)."""
    store = await open_store(db)
    fake = FakeBotAPI()
    await fake.start()
    fake.make_forum(GROUP)
    policy = RateLimitPolicy(LIMIT, WINDOW, chats=is_group_chat)
    fake.policies.append(policy)
    settings = replace(
        Settings(),
        telegram_token=fake.token,
        telegram_base_url=fake.base_url,
        telegram_base_file_url=fake.base_file_url,
        agent_chat_id=GROUP,
        admin_ids=(ADMIN,),
        pause_minutes=10,
    )
    opts = options or DeskOptions(pause_seconds=600, digest_threshold=4)
    limiter = GroupLimiter(LIMIT, WINDOW, clock=SystemClock())
    quotes = Escalation(settings, deliver=False)
    features = Features(
        quotes=quotes, agents=AgentsFeature(settings, options=opts, clock=clock, limiter=limiter, quotes=quotes)
    )
    runtime = await open_runtime(store, ROOT / "content", ROOT / "flows", features=features.all, knowledge=k)
    service = TelegramService(
        settings,
        runtime,
        limits=RateLimits(overall=None, private=None, group=(LIMIT, WINDOW)),
        poll_timeout=1.0,
        trust_env=False,
    )
    await attach_features(service, runtime, settings, features)
    h = Agents(fake, service, features.agents, runtime, policy)
    service.door.listeners.append(lambda update_id, chat_id: (h._done.add(update_id), fake._changed()))
    try:
        async with service:
            yield h
    finally:
        await runtime.stop()
        await fake.stop()
        await store.close()


@pytest.fixture
async def agents(knowledge: Knowledge, db_target: str | Path) -> AsyncIterator[Agents]:
    async with running_agents(knowledge, db_target) as h:
        yield h


# -- topics and cards ----------------------------------------------------------------------------


async def test_topic_named_and_card_pinned_then_updated(agents: Agents) -> None:
    sent = await agents.user_says(1001, "my icloud backup failed", first_name="Anna")
    assert sent  # the user is answered as usual
    await agents.settle()
    thread = agents.thread_of(1001)
    topic = agents.fake.topics[GROUP][thread]
    assert topic["name"].startswith("Anna · #") and "Backup failed" in topic["name"]
    card_id = agents.desk.topic_of("tg:1001").card_message_id  # type: ignore[union-attr]
    pins = agents.fake.calls_of("pinChatMessage", chat_id=GROUP)
    assert [c.params["message_id"] for c in pins] == [card_id]
    card = agents.fake.messages[GROUP][card_id]
    assert card.thread_id == thread and "Anna" in card.text and "Backup failed" in card.text
    text = agents.topic_text(thread)
    i_user = text.index("👤 my icloud backup failed")
    assert text.index("🤖", i_user) > i_user
    # press buttons until a yes/no step is answered "no": the card shows it
    for _ in range(6):
        last = agents.fake.last_keyboard(1001)
        labels = last.labels
        no = [lb for lb in labels if lb.startswith("❌")]
        if no:
            await agents.user_presses(1001, label=no[0])
            break
        await agents.user_presses(1001, index=len(labels) - 1 if "green" in " ".join(labels) else 0)
    await agents.settle()
    card = agents.fake.messages[GROUP][card_id]
    assert card.edits >= 1
    if any(c.method == "editMessageText" for c in agents.group_calls()):
        state = await agents.runtime.engine.state_of("tg:1001")
        assert state is not None and (state.ref in card.text or "❌" in card.text)


async def test_escalation_flagged_in_topic_and_listed(agents: Agents) -> None:
    await agents.user_says(1002, "I want to talk to a real person", first_name="Ben")
    await agents.settle()
    thread = agents.thread_of(1002)
    assert "🚩 asked for a person" in agents.topic_text(thread)
    esc = [th for th, t in agents.fake.topics[GROUP].items() if t["name"] == "🚩 Escalations"]
    assert len(esc) == 1
    listing = agents.topic_messages(esc[0])
    assert listing and "Ben" in listing[-1].text
    links = [e for e in listing[-1].entities if e["type"] == "text_link"]
    assert links and links[0]["url"].endswith(f"/{thread}")


# -- mirroring under load, within the group limit ------------------------------------------------


async def test_fifty_users_mirrored_in_order_within_group_limit(agents: Agents) -> None:
    phrases = ["my icloud backup failed", "it says backup could not be completed", "what now", "thanks"]

    async def user(i: int) -> None:
        for n, p in enumerate(phrases):
            await agents.user_says(2000 + i, f"{p} [{i}.{n}]", first_name=f"U{i}")

    await asyncio.gather(*(user(i) for i in range(50)))
    await agents.settle(full=False, timeout=60)  # every line visible (topic or Live feed)
    await agents.settle(full=True, timeout=120)  # and backfilled into every user's own topic
    assert agents.policy.refused == 0, "the fake refused group messages (429)"
    assert agents.max_group_calls_in_window() <= LIMIT
    assert agents.service.application.bot.rate_limiter.waited_429 == 0  # type: ignore[union-attr]
    live = [th for th, t in agents.fake.topics[GROUP].items() if t["name"].startswith("📡")]
    for i in range(50):
        uid = 2000 + i
        text = agents.topic_text(agents.thread_of(uid))
        marks = [f"👤 {p} [{i}.{n}]" for n, p in enumerate(phrases)]
        positions = [text.find(m) for m in marks]
        assert -1 not in positions, (uid, positions)  # nothing lost
        assert positions == sorted(positions), (uid, positions)  # nothing reordered
        assert all(text.count(m) == 1 for m in marks), uid  # nothing twice
        if live:  # in the Live feed too: each line once, in order
            feed = "\n".join(agents.topic_text(th) for th in live)
            seen = [feed.find(m) for m in marks if m in feed]
            assert seen == sorted(seen)
            assert all(feed.count(m) <= 1 for m in marks)


# -- takeover ------------------------------------------------------------------------------------


async def test_agent_reply_relayed_and_bot_silent_while_paused(agents: Agents) -> None:
    await agents.user_says(1003, "my backup is stuck at 80 percent", first_name="Cleo")
    await agents.settle()
    before = len(agents.fake.sent(1003))
    await agents.take_over(1003, "Hi Cleo, Maria here. Which iPhone is it?")
    got = await agents.fake.wait_for(
        lambda: agents.fake.sent(1003)[before:] if len(agents.fake.sent(1003)) >= before + 2 else None, 10, "the relay"
    )
    assert "person from our support team has joined" in got[0].text
    assert got[1].text.startswith("👤 Maria · support team") and "Which iPhone" in got[1].text
    assert got[1].entities and got[1].entities[0]["type"] == "bold"  # marked as from a person
    state = await agents.runtime.engine.state_of("tg:1003")
    assert state is not None and state.paused
    answer = await agents.user_says(1003, "an iPhone 13")
    assert answer == []  # the bot stays silent
    await agents.settle()
    assert "👤 an iPhone 13" in agents.topic_text(agents.thread_of(1003))


async def test_done_hands_back_where_it_was(agents: Agents) -> None:
    await agents.user_says(1004, "my icloud backup failed", first_name="Dan")
    await agents.settle()
    step_before = (await agents.runtime.engine.state_of("tg:1004")).ref  # type: ignore[union-attr]
    n = len(agents.fake.sent(1004))
    await agents.take_over(1004, "Let me look")
    await agents.fake.wait_for(lambda: len(agents.fake.sent(1004)) >= n + 2, 10, "relay")
    agents.agent_says(1004, "/done")
    thread = agents.thread_of(1004)
    prompt = await agents.fake.wait_for(
        lambda: agents.prompt(thread, "▶️"), 10, "the /done prompt"
    )
    assert len(prompt.labels) == 2
    n = len(agents.fake.sent(1004))
    agents.fake.press(GROUP, label=prompt.labels[0], message_id=prompt.message_id, user_id=AGENT)
    await agents.fake.wait_for(lambda: len(agents.fake.sent(1004)) > n, 10, "the hand-back")
    await agents.settle()
    state = await agents.runtime.engine.state_of("tg:1004")
    assert state is not None and not state.paused
    back = agents.fake.sent(1004)[n:]
    assert "handed you back" in back[0].text
    assert "How helpful was our support person" in back[-1].text and back[-1].labels[:5] == ["1", "2", "3", "4", "5"]
    assert all(q["answered"] for q in agents.fake.callback_queries.values())
    assert agents.fake.messages[GROUP][prompt.message_id].keyboard is None  # choice recorded
    await agents.user_presses(1004, label="4")
    got = await agents.user_says(1004, "Maria was quick and explained the storage thing well, thx")
    assert "Thank you" in got[0].text and got[-1].keyboard  # then the step where it was, with buttons
    state = await agents.runtime.engine.state_of("tg:1004")
    assert state is not None and state.ref == step_before
    await agents.settle()
    card = agents.fake.messages[GROUP][agents.desk.topic_of("tg:1004").card_message_id]  # type: ignore[union-attr]
    assert "4/5" in card.text and "explained the storage thing" in card.text  # the rating on the card
    text = agents.topic_text(thread)
    assert "handed back" in text and "👤 /" not in text  # the bot's own hand-back is no user line
    row = await agents.runtime.store.database.fetchone(
        "SELECT COUNT(*) FROM messages WHERE conversation_id = 'tg:1004' AND direction = 'in' AND kind = 'command'")
    assert row is not None and row[0] == 0


async def test_pause_times_out(knowledge: Knowledge, db_target: str | Path) -> None:
    clock = ManualClock()
    async with running_agents(knowledge, db_target, clock=clock) as agents:
        await agents.user_says(1005, "my icloud backup failed", first_name="Eve")
        await agents.settle()
        n = len(agents.fake.sent(1005))
        await agents.take_over(1005, "one moment please")
        await agents.fake.wait_for(lambda: len(agents.fake.sent(1005)) >= n + 2, 10, "relay")
        await agents.settle()
        await clock.advance(601)
        await agents.fake.wait_for(
            lambda: any("support person has left" in m.text for m in agents.fake.sent(1005)), 10, "expiry"
        )
        await agents.settle()
        assert not (await agents.runtime.engine.state_of("tg:1005")).paused  # type: ignore[union-attr]
        assert "pause expired" in agents.topic_text(agents.thread_of(1005))


async def test_deleted_topic_is_recreated(agents: Agents) -> None:
    await agents.user_says(1006, "my icloud backup failed", first_name="Fay")
    await agents.settle()
    old = agents.thread_of(1006)
    agents.fake.topics[GROUP][old]["deleted"] = True  # an agent deleted it
    await agents.user_says(1006, "still there?")
    await agents.settle()
    new = agents.thread_of(1006)
    assert new != old
    assert any(c.status == 400 and "thread not found" in c.error for c in agents.group_calls())
    msgs = agents.topic_messages(new)
    assert msgs[0].message_id == agents.desk.topic_of("tg:1006").card_message_id  # type: ignore[union-attr]
    assert "👤 still there?" in agents.topic_text(new)


async def test_blocked_user_agent_told(agents: Agents) -> None:
    await agents.user_says(1007, "my icloud backup failed", first_name="Gus")
    await agents.settle()
    agents.fake.block(1007)
    await agents.take_over(1007, "are you still there?")
    thread = agents.thread_of(1007)
    await agents.fake.wait_for(lambda: "has blocked the bot" in agents.topic_text(thread), 10, "note")


async def test_agent_photo_and_edit_relayed(agents: Agents) -> None:
    await agents.user_says(1008, "my icloud backup failed", first_name="Hal")
    await agents.settle()
    upd = await agents.take_over(1008, "Try the Mac")
    msg_id = upd["message"]["message_id"]
    await agents.fake.wait_for(lambda: any("Try the Mac" in m.text for m in agents.fake.sent(1008)), 10, "relay")
    edited = {
        "message_id": msg_id,
        "date": 0,
        "edit_date": 1,
        "chat": agents.fake.chat(GROUP),
        "from": agents.fake.user(AGENT, "Maria"),
        "text": "Try the iPhone",
        "message_thread_id": agents.thread_of(1008),
        "is_topic_message": True,
    }
    agents.fake.push({"edited_message": edited})
    await agents.fake.wait_for(lambda: any("Try the iPhone" in m.text for m in agents.fake.sent(1008)), 10, "edit")
    copy = next(m for m in agents.fake.sent(1008) if "Try the iPhone" in m.text)
    assert copy.edits == 1  # the relayed message was edited, not a second message


# -- who may use agents' commands ----------------------------------------------------------------


async def test_non_agent_sending_agent_commands_gets_nothing(agents: Agents) -> None:
    for name, arg in (("stats", ""), ("unmatched", ""), ("find", "backup"), ("transcript", "1"), ("done", "")):
        upd = agents.fake.command(3001, name, arg)
        uid = upd["update_id"]
        await agents.fake.wait_for(
            lambda uid=uid: any(c.method == "getChatMember" for c in agents.fake.calls) or uid in agents._done,
            5,
            "the command to be seen",
        )
    await agents.settle()
    assert agents.fake.sent(3001) == []  # no answer at all
    row = await agents.runtime.store.database.fetchone(
        "SELECT COUNT(*) FROM messages WHERE conversation_id = 'tg:3001'")
    assert row is not None and row[0] == 0  # nor did they reach the engine
    # an admin gets the answer in private
    agents.fake.command(ADMIN, "stats")
    await agents.fake.wait_for(
        lambda: any("Conversations:" in m.text for m in agents.fake.sent(ADMIN)), 10, "the admin's stats"
    )


async def test_agent_tools_in_the_group(agents: Agents) -> None:
    await agents.user_says(1009, "my icloud backup failed", first_name="Ivy")
    await agents.user_says(1009, "zorblat quux frobnicate")
    await agents.settle()
    thread = agents.thread_of(1009)
    agents.agent_says(1009, "/transcript")
    agents.agent_says(1009, "/find zorblat")
    agents.agent_says(1009, "/unmatched")
    agents.agent_says(None, "/stats")
    await agents.fake.wait_for(
        lambda: any(c.method == "sendDocument" and c.ok for c in agents.group_calls()), 10, "the transcript file"
    )
    doc = next(c for c in agents.group_calls() if c.method == "sendDocument")
    assert doc.params["message_thread_id"] == thread and doc.files["document"][0].startswith("transcript-")
    await agents.fake.wait_for(lambda: "Conversations:" in agents.topic_text(None), 10, "stats in General")
    await agents.settle()
    assert agents.topic_text(thread).count("zorblat quux frobnicate") >= 2  # mirrored + /find (+ /unmatched)


# -- privacy -------------------------------------------------------------------------------------


async def test_forget_leaves_nothing_of_the_user(agents: Agents) -> None:
    await agents.user_says(1010, "my icloud backup failed, code-xq71", first_name="Jill")
    await agents.user_says(1010, "I want to talk to a person")
    await agents.settle()
    thread = agents.thread_of(1010)
    await agents.take_over(1010, "Hello Jill")
    await agents.fake.wait_for(lambda: any("Hello Jill" in m.text for m in agents.fake.sent(1010)), 10, "relay")
    got = await agents.user_command(1010, "forget")  # mid-takeover: answered and erased all the same
    assert "deleted this conversation" in got[-1].text and "stay with the lab" in got[-1].text
    await agents.feature.wait_cleanups()
    await agents.settle()
    db = agents.runtime.store.database  # either engine's
    for table in await db.tables():
        for row in await db.fetchall(f'SELECT * FROM "{table}"'):
            flat = " ".join(str(v) for v in row)
            assert "tg:1010" not in flat and "code-xq71" not in flat and "Jill" not in flat, (table, row)
            if table not in ("sqlite_sequence", "agent_meta", "agent_trash", "processed_updates"):
                assert "1010" not in flat.split(), (table, row)
    await agents.fake.wait_for(lambda: agents.fake.topics[GROUP][thread]["deleted"], 10, "topic deleted")
    await agents.fake.wait_for(lambda: "erased their conversation" in agents.topic_text(None), 10, "agents told")
    assert "Jill" not in agents.topic_text(None)

    def still_readable() -> list[str]:
        topics = agents.fake.topics[GROUP]
        return [m.text for m in agents.fake.messages[GROUP].values()
                if m.from_bot and not m.deleted and not topics.get(m.thread_id or 0, {}).get("deleted")]

    # the Escalations line (her name, a link to the topic) went too (deleteMessages)
    await agents.fake.wait_for(lambda: not any("code-xq71" in t for t in still_readable()), 10, "her lines gone")
    assert any(c.method == "deleteMessages" for c in agents.group_calls())
    assert not any("User1010" in t or "tg:1010" in t for t in still_readable())


async def test_an_admin_forgets_a_case_privately_by_number(agents: Agents) -> None:
    await agents.user_says(ADMIN, "hello bot, just me trying you out, adminline-77", first_name="Ada")
    await agents.user_says(1020, "my icloud backup failed, casecode-51", first_name="Karl")
    await agents.settle()
    ref = agents.feature.desk.topic_of("tg:1020").ref
    await agents._handled(agents.fake.command(ADMIN, "forget", f"#{ref}"))
    confirm = await agents.fake.wait_for(
        lambda: next((m for m in agents.fake.sent(ADMIN) if m.keyboard and f"#{ref}" in m.text), None), 10, "confirm"
    )
    assert "Karl" in confirm.text
    await agents._handled(agents.fake.press(ADMIN, label="🗑 Erase", message_id=confirm.message_id, user_id=ADMIN))
    await agents.fake.wait_for(lambda: any("deleted this conversation" in m.text for m in agents.fake.sent(1020)),
                               10, "the user told")
    await agents.settle()
    db = agents.runtime.store.database  # either engine's
    assert (await db.fetchone("SELECT COUNT(*) FROM messages WHERE text LIKE '%casecode-51%'"))[0] == 0
    # the admin's own chat is untouched
    assert (await db.fetchone("SELECT COUNT(*) FROM messages WHERE text LIKE '%adminline-77%'"))[0] == 1


# -- the desk as a support desk: notes, the customer's media, ownership, cards (issue 12) ---------

TOM = 4343


def agent_in_topic(agents: Agents, uid: int, text: str, *, user_id: int, name: str) -> dict[str, Any]:
    return agents.fake.send_text(GROUP, text, user_id=user_id, first_name=name, thread_id=agents.thread_of(uid))


async def press_id(agents: Agents, uid: int, bid: str) -> list[SentMessage]:
    """The user presses the button ``bid`` (the flow's id) of their newest keyboard."""
    msg = agents.fake.last_keyboard(uid)
    data = next((b["callback_data"] for b in msg.buttons if b["callback_data"].endswith(":" + bid)), None)
    assert data is not None, (bid, [b["callback_data"] for b in msg.buttons], msg.text[:200])
    return await agents.user_presses(uid, data=data, message_id=msg.message_id)


def card_text(agents: Agents, uid: int) -> str:
    t = agents.desk.topic_of(f"tg:{uid}")
    assert t is not None and t.card_message_id is not None
    return agents.fake.messages[GROUP][t.card_message_id].text


async def test_notes_stay_in_the_group_and_show_on_the_card(agents: Agents) -> None:
    await agents.user_says(1101, "hi my iphone backup keeps failing since yesterday, no idea why", first_name="Nora")
    await agents.settle()
    before = len(agents.fake.sent(1101))
    agents.agent_says(1101, "// @Ana can you take this one? I think she's the angry customer from yesterday")
    agents.agent_says(1101, "/note she is on iOS 17, asked twice already")
    await agents.fake.wait_for(lambda: "iOS 17" in card_text(agents, 1101), 10, "the notes on the card")
    await agents.settle()
    assert agents.fake.sent(1101)[before:] == []  # nothing reached the customer
    state = await agents.runtime.engine.state_of("tg:1101")
    assert state is not None and not state.paused  # and the bot was not paused
    card = card_text(agents, 1101)
    assert "Notes:" in card and "angry customer from yesterday" in card and "iOS 17" in card
    assert agents.prompt(agents.thread_of(1101), "📨") is None  # a note asks nothing
    assert await agents.user_says(1101, "hello?")  # the bot still answers


async def test_first_reply_is_confirmed_before_it_reaches_the_customer(agents: Agents) -> None:
    await agents.user_says(1102, "backup stuck at 'estimating time remaining' for 3 hours", first_name="Omar")
    await agents.settle()
    before = len(agents.fake.sent(1102))
    agents.agent_says(1102, "Maria here - is your phone plugged in?")
    thread = agents.thread_of(1102)
    prompt = await agents.fake.wait_for(lambda: agents.prompt(thread, "📨 Send"), 10, "the confirmation")
    assert "still talking to Omar" in prompt.text and agents.fake.sent(1102)[before:] == []
    agents.fake.press(GROUP, label="📝", message_id=prompt.message_id, user_id=AGENT)  # keep it as a note
    await agents.fake.wait_for(lambda: "plugged in" in card_text(agents, 1102), 10, "the note on the card")
    await agents.settle()
    assert agents.fake.sent(1102)[before:] == []
    assert "plugged in" in card_text(agents, 1102)  # on the card, as a note
    assert not (await agents.runtime.engine.state_of("tg:1102")).paused  # type: ignore[union-attr]


async def test_users_photo_and_files_are_copied_into_the_topic(agents: Agents) -> None:
    await agents.user_says(1103, "my iCloud backup failed again", first_name="Pia")
    await agents.settle()
    upd = agents.fake.send_media(1103, "photo", caption="here is the error screen")
    await agents._handled(upd)
    await agents.settle()
    thread = agents.thread_of(1103)
    copies = [m for m in agents.topic_messages(thread) if m.kind == "photo"]
    assert len(copies) == 1 and copies[0].text == "👤 here is the error screen"  # the user's caption
    # during a takeover: a voice message and a document, in order, none as a bare "[voice]" line
    await agents.take_over(1103, "Could you send a screenshot of Settings > iCloud?")
    await agents.fake.wait_for(lambda: any("Settings" in m.text for m in agents.fake.sent(1103)), 10, "the relay")
    for kind, caption in (("voice", None), ("document", "the log, sorry it's long")):
        await agents._handled(agents.fake.send_media(1103, kind, caption=caption))
    await agents.settle()
    kinds = [m.kind for m in agents.topic_messages(thread) if m.kind != "text"]
    assert kinds == ["photo", "voice", "document"]
    assert next(m for m in agents.topic_messages(thread) if m.kind == "document").text == "👤 the log, sorry it's long"
    assert "[voice]" not in agents.topic_text(thread)
    copies = agents.fake.calls_of("copyMessage", chat_id=GROUP)
    assert [c.params["from_chat_id"] for c in copies] == [1103] * 3
    assert all(c.params["message_thread_id"] == thread for c in copies)
    assert agents.policy.refused == 0 and agents.max_group_calls_in_window() <= LIMIT


async def test_two_agents_replying_one_owner_one_voice(agents: Agents) -> None:
    await agents.user_says(1104, "I need a real person, my backup ate my photos", first_name="Quinn")
    await agents.settle()
    thread = agents.thread_of(1104)
    # Maria and Tom answer at about the same time
    agent_in_topic(agents, 1104, "Hi Quinn, Maria here. Do not reset the phone.", user_id=AGENT, name="Maria")
    agent_in_topic(agents, 1104, "hey, try resetting all settings first", user_id=TOM, name="Tom")

    def prompts() -> list[SentMessage] | None:
        got = [m for m in agents.topic_messages(thread) if any(lb.startswith("📨 Send") for lb in m.labels)]
        return got if len(got) == 2 else None

    asks = await agents.fake.wait_for(prompts, 10, "two confirmations")
    mine = {AGENT: None, TOM: None}
    for m in asks:
        data = m.buttons[0]["callback_data"]
        mine[int(data.rsplit(":", 1)[1])] = m  # type: ignore[assignment]
    agents.fake.press(GROUP, label="📨", message_id=mine[AGENT].message_id, user_id=AGENT)  # type: ignore[union-attr]
    await agents.fake.wait_for(lambda: any("Do not reset" in m.text for m in agents.fake.sent(1104)), 10, "relay")
    agents.fake.press(GROUP, label="📨", message_id=mine[TOM].message_id, user_id=TOM)  # type: ignore[union-attr]
    warned = await agents.fake.wait_for(lambda: agents.prompt(thread, "📨 Reply anyway"), 10, "the warning")
    assert "Maria owns this case" in warned.text
    await agents.settle()
    from_people = [m.text for m in agents.fake.sent(1104) if "support team" in m.text and "·" in m.text]
    assert len(from_people) == 1 and "Maria" in from_people[0]  # the user heard one voice
    assert not any("resetting all settings" in m.text for m in agents.fake.sent(1104))
    assert "Owner: 🙋 Maria" in card_text(agents, 1104)
    # Tom's next message waits too, until he chooses
    agent_in_topic(agents, 1104, "ok sorry, all yours", user_id=TOM, name="Tom")
    # /release, then the claim button on the card
    agent_in_topic(agents, 1104, "/release", user_id=AGENT, name="Maria")
    await agents.fake.wait_for(lambda: "Owner: nobody" in card_text(agents, 1104), 10, "released")
    assert not any("all yours" in m.text for m in agents.fake.sent(1104))
    card = agents.desk.topic_of("tg:1104").card_message_id  # type: ignore[union-attr]
    agents.fake.press(GROUP, label="🙋", message_id=card, user_id=TOM)
    await agents.fake.wait_for(lambda: agents.desk.topic_of("tg:1104").owner_id == TOM, 10, "Tom claims it")  # type: ignore[union-attr]
    await agents.settle()
    assert "Owner: 🙋" in card_text(agents, 1104) and "Owner: nobody" not in card_text(agents, 1104)


async def test_assign_by_name(agents: Agents) -> None:
    await agents.user_says(1105, "backup says not enough storage but i pay for 200gb??", first_name="Rui")
    await agents.settle()
    hello = agents.fake._user_message(GROUP, TOM, "Tom", text="morning all")  # Tom is known to the desk
    hello["from"]["username"] = "tom_support"
    agents.fake.push({"message": hello})
    await agents.settle()
    agent_in_topic(agents, 1105, "/assign @tom_support", user_id=AGENT, name="Maria")
    await agents.fake.wait_for(lambda: "Owner: 🙋 Tom" in card_text(agents, 1105), 10, "assigned")
    assert "Maria gave this case to Tom" in agents.topic_text(agents.thread_of(1105))
    agent_in_topic(agents, 1105, "/assign @nobody_here", user_id=AGENT, name="Maria")
    thread = agents.thread_of(1105)
    await agents.fake.wait_for(lambda: "I don't know @nobody_here" in agents.topic_text(thread), 10, "the answer")


async def test_quote_card_find_and_transcript_read_right(agents: Agents) -> None:
    uid = 1106
    await agents.user_says(
        uid, "my phone fell in the pool, it wont turn on and the baby photos are on it", first_name="Sam"
    )
    await agents.user_command(uid, "start", "quote")
    await agents.user_says(uid, "iPhone 13 Pro")
    if any(b["callback_data"].endswith(":water") for b in agents.fake.last_keyboard(uid).buttons):
        await press_id(agents, uid, "water")  # unless the first message said it already
    await press_id(agents, uid, "yes")  # knows the passcode
    await press_id(agents, uid, "m_photos")
    await press_id(agents, uid, "m__done")
    await press_id(agents, uid, "none")
    await agents.user_says(uid, "Sam Okafor")
    await agents.user_says(uid, "sam.okafor@example.com")
    await press_id(agents, uid, "skip")
    await press_id(agents, uid, "done")  # no photos
    await press_id(agents, uid, "yes")  # consent
    sent = await press_id(agents, uid, "send")
    ref = next(w.strip("*.,") for m in sent for w in m.text.split() if w.startswith("Q-"))
    await agents.settle()
    card = card_text(agents, uid)
    assert f"Quote {ref}: iPhone 13 Pro · sam.okafor@example.com ·" in card
    assert "typical for" in card  # the price band
    for internal in ("q_ref", "q_sent_contact", "q_sent_where", "q_reply_hours", "maildir"):
        assert internal not in card
    assert "Steps tried" not in card  # the passcode and consent answers are not fix steps
    assert "First words: “my phone fell in the pool" in card
    text = agents.topic_text(agents.thread_of(uid))
    assert "m__done" not in text and "▸ [✅ Done]" in text  # the button's label
    # /find on the reference (only the bot said it) finds the case
    agents.agent_says(None, f"/find {ref}")
    found = await agents.fake.wait_for(
        lambda: next((m for m in agents.topic_messages(None) if "result(s) for" in m.text), None), 10, "/find"
    )
    assert f"#{agents.desk.topic_of(f'tg:{uid}').ref}" in found.text and ref in found.text  # type: ignore[union-attr]


async def test_names_survive_a_restart_and_terminal_tools_take_numbers(
    knowledge: Knowledge, db_target: str | Path
) -> None:
    async with running_agents(knowledge, db_target) as agents:
        await agents.user_says(1107, "backup not working since ios update", first_name="Tara")
        await agents.settle()
        ref = agents.desk.topic_of("tg:1107").ref  # type: ignore[union-attr]
    async with running_agents(knowledge, db_target) as agents:  # the bot restarted
        agents.fake.push({"update_id": 10_000, "poll": {}})  # Telegram's update ids go on (the door dedups)
        agents.agent_says(None, "/find ios update")
        found = await agents.fake.wait_for(
            lambda: next((m for m in agents.topic_messages(None) if "result(s) for" in m.text), None), 10, "/find"
        )
        assert f"Tara #{ref}" in found.text and "User #" not in found.text
    db = str(db_target)
    for name in (f"#{ref}", str(ref), "tg:1107"):
        out = io.StringIO()
        args = argparse.Namespace(action="show", conversation=name, db=db)
        assert await agents_cli._run("transcripts", db, Settings(), args, out) == 0
        assert "backup not working since ios update" in out.getvalue()
    out = io.StringIO()
    assert await agents_cli._run("find", db, Settings(), argparse.Namespace(words=["ios", "update"], limit=5), out) == 0
    assert "tg:1107 (Tara)" in out.getvalue()
