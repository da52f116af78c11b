"""The agents' desk against an in-memory gateway: mirroring, cards, escalations, takeover,
hand-back, pause expiry, relays, privacy, the agents' tools. (Through real HTTP and PTB:
tests/test_agents_telegram.py.)

Every test runs on a SQLite file and on a fresh PostgreSQL database (``both_stores``,
tests/support/postgres.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.agents.desk import AgentCallback, AgentCommand, AgentDesk, AgentMessage, DeskOptions, UserMedia
from bot.agents.feature import Agents
from bot.agents.limiter import GroupLimiter
from bot.agents.memory import MemoryGateway
from bot.agents.ports import Clock, ManualClock, SystemClock
from bot.config import Settings
from bot.core.engine import Engine
from bot.core.messages import Attachment, EventKind, Inbound, Reply
from bot.escalation import Escalation
from bot.features import standard_features
from bot.runtime import Knowledge, Ports, Runtime, check, open_runtime
from bot.store import SQLiteStore
from tests.support.postgres import both_stores

pytestmark = both_stores  # every test on SQLite and on PostgreSQL (tests/support/postgres.py)

ROOT = Path(__file__).resolve().parents[1]
GROUP = -1001234567890
AGENT = 777


@pytest.fixture(scope="module")
def agent_knowledge() -> Knowledge:
    knowledge, problems = check(ROOT / "content", ROOT / "flows", "en", standard_features().all)
    if knowledge is None:
        pytest.skip(f"content does not load: {problems[:3]}")
    return knowledge


async def open_agents(
    knowledge: Knowledge,
    db: Path | str,
    gw: MemoryGateway,
    *,
    options: DeskOptions,
    clock: Clock,
    limiter: GroupLimiter,
    admin_ids: tuple[int, ...] = (),
) -> tuple[Runtime, Agents]:
    """The bot with the agents' feature (and the quotes', no worker), its desk started on ``gw``."""
    settings = Settings(agent_chat_id=GROUP, admin_ids=admin_ids)
    quotes = Escalation(settings, deliver=False)
    agents = Agents(settings, options=options, clock=clock, limiter=limiter, quotes=quotes)
    features = [quotes, agents]
    runtime = await open_runtime(db, ROOT / "content", ROOT / "flows", features=features, knowledge=knowledge)
    await runtime.start(Ports(agents_group=gw))
    return runtime, agents


class Rig:
    def __init__(
        self, engine: Engine, store: SQLiteStore, agents: Agents, gw: MemoryGateway, clock: ManualClock
    ) -> None:
        self.engine, self.store, self.agents, self.gw, self.clock = engine, store, agents, gw, clock

    @property
    def desk(self) -> AgentDesk:
        assert self.agents.desk is not None
        return self.agents.desk

    async def say(self, uid: int, text: str, name: str = "Anna") -> tuple[Reply, ...]:
        return await self.engine.handle(Inbound(f"tg:{uid}", EventKind.TEXT, text=text, user_name=name))

    async def press(self, uid: int, replies: tuple[Reply, ...], local: str) -> tuple[Reply, ...]:
        for r in replies:
            for b in r.buttons:
                if b.id.partition(":")[2] == local:
                    return await self.engine.handle(Inbound(f"tg:{uid}", EventKind.BUTTON, payload=b.id))
        raise AssertionError(f"no button {local}: {[b.id for r in replies for b in r.buttons]}")

    async def command(self, uid: int, name: str, arg: str = "") -> tuple[Reply, ...]:
        return await self.engine.handle(Inbound(f"tg:{uid}", EventKind.COMMAND, text=name, arg=arg))

    def topic(self, uid: int):  # noqa: ANN201
        t = self.desk.topic_of(f"tg:{uid}")
        assert t is not None
        return t

    def prompt(self, uid: int):  # noqa: ANN201
        return next(m for m in reversed(self.gw.in_topic(self.topic(uid).thread_id)) if m.buttons)

    async def settle(self, full: bool = True) -> None:
        await self.desk.settle(10, full=full)

    def agent_says(self, uid: int, text: str, *, message_id: int, media: str = "", edited: bool = False) -> None:
        self.desk.submit(
            AgentMessage(
                GROUP, self.topic(uid).thread_id, message_id, AGENT, "Maria", text, text, media=media, edited=edited
            )
        )

    async def take_over(self, uid: int, text: str, *, message_id: int, media: str = "") -> None:
        """An agent's first reply while the bot is talking: held in the group until the agent
        taps "send and pause the bot" (done here)."""
        self.agent_says(uid, text, message_id=message_id, media=media)
        await self.settle()
        prompt = self.prompt(uid)
        assert prompt.buttons[0][1].startswith("ag:s:"), prompt.buttons
        assert self.gw.users.get(uid, []) == [] or not any(text in m.text for m in self.gw.users[uid])
        self.desk.submit(
            AgentCallback(f"cb{message_id}", GROUP, prompt.message_id, self.topic(uid).thread_id, AGENT, "Maria",
                          prompt.buttons[0][1])
        )
        await self.settle()

    def agent_command(
        self, uid: int | None, name: str, arg: str = "", *, private: bool = False, user_id: int = AGENT
    ) -> None:
        thread = self.topic(uid).thread_id if uid is not None else None
        chat = user_id if private else GROUP
        self.desk.submit(
            AgentCommand(chat, None if private else thread, 1, user_id, "Maria", name, arg, private=private)
        )


@pytest.fixture
async def rig(agent_knowledge: Knowledge, db_target: str | Path) -> AsyncIterator[Rig]:
    clock = ManualClock()
    gw = MemoryGateway()
    limiter = GroupLimiter(10_000, 1.0, clock=SystemClock(), spread=False)
    runtime, agents = await open_agents(
        agent_knowledge,
        db_target,
        gw,
        admin_ids=(42,),
        options=DeskOptions(pause_seconds=600, digest_threshold=4),
        clock=clock,
        limiter=limiter,
    )
    try:
        yield Rig(runtime.engine, runtime.store, agents, gw, clock)
    finally:
        await runtime.close()


# -- mirroring, naming, cards --------------------------------------------------------------------


async def test_topic_named_card_pinned_and_lines_in_order(rig: Rig) -> None:
    replies = await rig.say(1, "my icloud backup failed", name="Anna")
    await rig.press(1, replies, "green")
    await rig.settle()
    t = rig.topic(1)
    assert t.thread_id is not None
    name = rig.gw.topics[t.thread_id]
    assert name.startswith("Anna · #") and "Backup failed" in name
    card = rig.gw.group[t.card_message_id]
    assert t.card_message_id in rig.gw.pinned
    assert "Anna" in card.text and "tg:1" in card.text and "Backup failed" in card.text
    lines = rig.gw.topic_text(t.thread_id)
    i_user = lines.index("👤 my icloud backup failed")
    i_bot = lines.index("🤖", i_user)
    i_press = lines.index("👤 ▸ [All green]")
    assert i_user < i_bot < i_press


async def test_card_shows_steps_tried_and_storage(rig: Rig) -> None:
    await rig.say(2, "icloud storage is full and backup wont run", name="Ben")
    await rig.say(2, "50 gb")
    await rig.say(2, "120 gb")
    await rig.settle()
    card = rig.gw.group[rig.topic(2).card_message_id].text
    assert "iCloud plan 50 GB" in card and "backup needs 120 GB" in card
    assert "iCloud storage is full" in card


async def test_card_lists_yes_no_answers(rig: Rig) -> None:
    r = await rig.say(3, "my icloud backup failed")
    r = await rig.press(3, r, "problem")
    await rig.settle()
    state = await rig.engine.state_of("tg:3")
    assert state is not None
    step = rig.engine.flows.step(state.ref)
    if {b.id for b in step.buttons} >= {"yes", "no"}:
        await rig.press(3, r, "no")
        await rig.settle()
        card = rig.gw.group[rig.topic(3).card_message_id]
        assert "❌" in card.text and card.edits >= 1


# -- escalations ---------------------------------------------------------------------------------


async def test_person_requested_is_flagged_and_listed(rig: Rig) -> None:
    await rig.say(4, "I want to talk to a human please")
    await rig.settle()
    t = rig.topic(4)
    assert "human_requested" in t.flag_list
    assert "🚩 asked for a person" in rig.gw.topic_text(t.thread_id)
    esc = [th for th, n in rig.gw.topics.items() if n == "🚩 Escalations"]
    assert len(esc) == 1
    listing = rig.gw.in_topic(esc[0])
    assert listing and "asked for a person" in listing[-1].text and f"#{t.ref}" in listing[-1].text
    assert f"/{t.thread_id}" in listing[-1].html  # a link to the user's topic
    kinds = await rig.store.database.fetchall(
        "SELECT kind FROM messages WHERE conversation_id = 'tg:4' AND direction = 'note'")
    assert "escalation:human_requested" in [r[0] for r in kinds]
    # the same request again within the hour is not listed twice
    await rig.say(4, "hello? a human please")
    await rig.settle()
    assert len(rig.gw.in_topic(esc[0])) == 1


# -- takeover ------------------------------------------------------------------------------------


async def test_agent_message_pauses_bot_and_is_relayed(rig: Rig) -> None:
    await rig.say(5, "my backup is stuck at 80%", name="Cleo")
    await rig.settle()
    await rig.take_over(5, "Hi Cleo, I'm Maria. Which iPhone is it?", message_id=9001)
    texts = rig.gw.user_texts(5)
    assert "A person from our support team has joined" in texts[0]
    assert texts[1].startswith("👤 Maria · support team") and "Which iPhone" in texts[1]
    state = await rig.engine.state_of("tg:5")
    assert state is not None and state.paused
    replies = await rig.say(5, "an iPhone 12")
    assert replies == ()  # the bot is silent while a person has taken over
    await rig.settle()
    topic_text = rig.gw.topic_text(rig.topic(5).thread_id)
    assert "👤 an iPhone 12" in topic_text
    assert "Maria took over" in topic_text
    assert "Which iPhone" not in topic_text  # the agent's own message is not mirrored back
    # a second agent message: no second "joined" notice
    rig.agent_says(5, "Thanks!", message_id=9002)
    await rig.settle()
    assert sum("has joined" in x for x in rig.gw.user_texts(5)) == 1
    # a repeated update is not relayed twice
    rig.agent_says(5, "Thanks!", message_id=9002)
    await rig.settle()
    assert sum(x.endswith("Thanks!") for x in rig.gw.user_texts(5)) == 1


async def test_done_resume_where_it_was(rig: Rig) -> None:
    r = await rig.say(6, "my icloud backup failed")
    await rig.settle()
    before = await rig.engine.state_of("tg:6")
    await rig.take_over(6, "Let me check", message_id=9101)
    rig.agent_command(6, "done")
    await rig.settle()
    prompt = rig.prompt(6)
    assert [d for _, d in prompt.buttons] == [f"ag:r:{rig.topic(6).ref}", f"ag:m:{rig.topic(6).ref}"]
    rig.desk.submit(
        AgentCallback("cb1", GROUP, prompt.message_id, rig.topic(6).thread_id, AGENT, "Maria", prompt.buttons[0][1])
    )
    await rig.settle()
    state = await rig.engine.state_of("tg:6")
    assert state is not None and not state.paused and before is not None
    sent = rig.gw.replies[6]
    assert [r.key for r in sent] == ["agents.handback_resume", "feedback.ask_agent"]  # one tap 1-5 first
    assert "continues where it was" in rig.gw.topic_text(rig.topic(6).thread_id)
    assert "Continue where it was" in rig.gw.group[prompt.message_id].text  # the choice is shown
    # rated (no comment), the conversation goes on where it was, with the step's buttons
    r = await rig.press(6, sent, "r5")
    r = await rig.press(6, r, "skip")
    state = await rig.engine.state_of("tg:6")
    assert state is not None and state.ref == before.ref and r[-1].buttons
    assert r[0].key == "feedback.thanks"


async def test_done_main_menu(rig: Rig) -> None:
    await rig.say(7, "my icloud backup failed")
    await rig.settle()
    await rig.take_over(7, "hello", message_id=9201)
    rig.agent_command(7, "done")
    await rig.settle()
    prompt = rig.prompt(7)
    rig.desk.submit(AgentCallback("cb2", GROUP, prompt.message_id, None, AGENT, "Maria", prompt.buttons[1][1]))
    await rig.settle()
    state = await rig.engine.state_of("tg:7")
    assert state is not None and state.ref == "feedback.start" and not state.paused
    assert rig.gw.replies[7][0].key == "agents.handback_menu"
    r = await rig.press(7, rig.gw.replies[7], "skip")  # no rating: the main menu
    state = await rig.engine.state_of("tg:7")
    assert state is not None and state.ref == "main_menu.start" and r


async def test_pause_expires_with_a_note(rig: Rig) -> None:
    await rig.say(8, "my icloud backup failed")
    await rig.settle()
    await rig.take_over(8, "one moment", message_id=9301)
    await rig.clock.advance(599)
    assert (await rig.engine.state_of("tg:8")).paused  # type: ignore[union-attr]
    await rig.clock.advance(2)
    await rig.desk.wait_until(lambda: 8 in rig.gw.replies, 5, "the hand-back after expiry")
    await rig.settle()
    assert not (await rig.engine.state_of("tg:8")).paused  # type: ignore[union-attr]
    assert rig.gw.replies[8][0].key == "agents.pause_expired"
    assert "pause expired" in rig.gw.topic_text(rig.topic(8).thread_id)


async def test_agent_activity_extends_the_pause(rig: Rig) -> None:
    await rig.say(9, "my icloud backup failed")
    await rig.settle()
    await rig.take_over(9, "one", message_id=9401)
    await rig.clock.advance(500)
    rig.agent_says(9, "two", message_id=9402)
    await rig.settle()
    await rig.clock.advance(500)
    assert (await rig.engine.state_of("tg:9")).paused  # type: ignore[union-attr]


async def test_deleted_topic_is_recreated_with_card(rig: Rig) -> None:
    await rig.say(10, "my icloud backup failed")
    await rig.settle()
    old = rig.topic(10).thread_id
    assert old is not None
    rig.gw.delete_topic_now(old)
    await rig.say(10, "hello?")
    await rig.settle()
    new = rig.topic(10).thread_id
    assert new is not None and new != old
    msgs = rig.gw.in_topic(new)
    assert msgs[0].message_id == rig.topic(10).card_message_id  # the card first
    assert "👤 hello?" in rig.gw.topic_text(new)


async def test_blocked_user_agent_is_told(rig: Rig) -> None:
    await rig.say(11, "my icloud backup failed")
    await rig.settle()
    rig.gw.blocked.add(11)
    await rig.take_over(11, "are you there?", message_id=9501)
    assert "has blocked the bot" in rig.gw.topic_text(rig.topic(11).thread_id)
    state = await rig.engine.state_of("tg:11")
    assert state is not None and not state.active


async def test_edited_agent_message_edits_the_copy_or_corrects(rig: Rig) -> None:
    await rig.say(12, "my icloud backup failed")
    await rig.settle()
    await rig.take_over(12, "Try restarting your Mac", message_id=9601)
    rig.agent_says(12, "Try restarting your iPhone", message_id=9601, edited=True)
    await rig.settle()
    copy = rig.gw.users[12][-1]
    assert copy.text.endswith("Try restarting your iPhone") and copy.edits == 1
    # the user's copy is gone: a correction is sent instead
    rig.gw.users[12].remove(copy)
    rig.agent_says(12, "Try restarting both", message_id=9601, edited=True)
    await rig.settle()
    assert rig.gw.user_texts(12)[-1].startswith("✏️ Correction:")
    assert "sent as a correction" in rig.gw.topic_text(rig.topic(12).thread_id)


async def test_photo_from_agent_is_copied_with_caption(rig: Rig) -> None:
    await rig.say(13, "my icloud backup failed")
    await rig.settle()
    await rig.take_over(13, "This screen", message_id=9701, media="photo")
    copy = rig.gw.users[13][-1]
    assert copy.kind == "copy" and "Maria" in copy.text and "This screen" in copy.text


# -- load: batching into the Live feed -----------------------------------------------------------


async def test_many_users_batched_in_order_within_limit(agent_knowledge: Knowledge, db_target: str | Path) -> None:
    import asyncio

    from bot.agents.ports import ScaledClock

    fast = ScaledClock(200.0)  # 60 s window = 0.3 s
    gw = MemoryGateway(clock=fast, limit=20, window=60.0)
    runtime, agents = await open_agents(
        agent_knowledge,
        db_target,
        gw,
        clock=fast,
        limiter=GroupLimiter(20, 60.0, clock=fast),
        options=DeskOptions(digest_threshold=4),
    )
    engine, store, desk = runtime.engine, runtime.store, agents.desk
    assert desk is not None
    try:

        async def user(i: int) -> None:
            for text in ("my icloud backup failed", "hmm", "my backup is stuck", "thanks"):
                await engine.handle(Inbound(f"tg:{100 + i}", EventKind.TEXT, text=text, user_name=f"U{i}"))

        await asyncio.gather(*(user(i) for i in range(30)))
        await desk.settle(30)
        assert gw.refused == 0 and gw.max_in_window() <= 20
        live = [th for th, n in gw.topics.items() if n.startswith("📡")]
        assert live, "busy times go to the Live feed"
        await desk.settle(120, full=True)  # then every topic is backfilled
        assert gw.refused == 0 and gw.max_in_window() <= 20
        for i in range(30):
            cid = f"tg:{100 + i}"
            t = desk.topic_of(cid)
            assert t is not None and t.thread_id is not None
            said = [r[0] for r in await store.database.fetchall(
                "SELECT text FROM messages WHERE conversation_id = ? AND direction = 'in' ORDER BY id", (cid,))]
            text = gw.topic_text(t.thread_id)
            positions = [text.index(f"👤 {s}") for s in said]
            assert positions == sorted(positions), (cid, positions)
            for s in said:  # nothing twice in the topic
                assert text.count(f"👤 {s}\n") + text.endswith(f"👤 {s}") <= said.count(s) + 1
    finally:
        await runtime.close()


# -- privacy -------------------------------------------------------------------------------------


async def _rows_mentioning(store: SQLiteStore, needle: str) -> list[tuple[str, str]]:
    found = []
    for table in await store.database.tables():  # either engine's
        for row in await store.database.fetchall(f'SELECT * FROM "{table}"'):
            if any(needle in str(v) for v in row):
                found.append((table, repr(tuple(row))[:120]))
    return found


async def test_user_forget_leaves_nothing(rig: Rig) -> None:
    await rig.say(14, "my icloud backup failed, marker-zq93", name="Zed")
    await rig.say(14, "I want to talk to a human")
    await rig.settle()
    thread = rig.topic(14).thread_id
    await rig.take_over(14, "hi Zed", message_id=9801)
    rig.agent_command(14, "done")
    await rig.settle()
    prompt = rig.prompt(14)
    rig.desk.submit(AgentCallback("cb3", GROUP, prompt.message_id, thread, AGENT, "Maria", prompt.buttons[0][1]))
    await rig.settle()
    replies = await rig.command(14, "forget")
    assert replies[0].key == "agents.forgotten"
    await rig.agents.wait_cleanups()
    await rig.settle()
    assert await _rows_mentioning(rig.store, "tg:14") == []
    assert await _rows_mentioning(rig.store, "marker-zq93") == []
    assert await _rows_mentioning(rig.store, "Zed") == []
    assert thread not in rig.gw.topics  # its topic is deleted too
    # writing again starts afresh
    await rig.say(14, "hello")
    await rig.settle()
    assert rig.topic(14).thread_id not in (None, thread)


async def test_privacy_explains(rig: Rig) -> None:
    await rig.say(16, "my icloud backup failed")
    replies = await rig.command(16, "privacy")
    assert replies[0].key == "agents.privacy" and "/forget" in replies[0].text and "90 days" in replies[0].text


async def test_retention_purge(rig: Rig) -> None:
    import time

    from bot.agents.privacy import purge_expired

    await rig.say(17, "my icloud backup failed old-marker")
    await rig.say(18, "my backup is stuck new-marker")
    await rig.settle()  # the desk has recorded both (its topic rows are written after the turn)
    await rig.store.database.execute("UPDATE messages SET ts = ts - 100 * 86400 WHERE conversation_id = 'tg:17'")
    await rig.store.database.execute(
        "UPDATE conversations SET updated_at = updated_at - 100 * 86400 WHERE id = 'tg:17'")
    assert await purge_expired(rig.store.db, 90, now=time.time()) == 1
    assert await _rows_mentioning(rig.store, "old-marker") == []
    assert await _rows_mentioning(rig.store, "tg:17") == []
    assert await _rows_mentioning(rig.store, "new-marker") != []


# -- agents' tools -------------------------------------------------------------------------------


async def test_tools_in_topic_and_private(rig: Rig) -> None:
    await rig.say(19, "my icloud backup failed")
    await rig.say(19, "qwxz blorp fnord")
    await rig.say(19, "qwxz blorp fnord again")
    await rig.settle()
    rig.agent_command(19, "transcript")
    rig.agent_command(19, "stats")
    rig.agent_command(19, "unmatched")
    rig.agent_command(19, "find", "blorp")
    rig.agent_command(19, "find", "")
    await rig.settle()
    msgs = rig.gw.in_topic(rig.topic(19).thread_id)
    doc = [m for m in msgs if m.kind.startswith("document:transcript-")]
    assert doc and "Transcript of Anna" in doc[0].text
    joined = "\n".join(m.text for m in msgs)
    assert "Today" in joined and "Last 7 days" in joined and "Conversations:" in joined
    assert "qwxz blorp fnord" in joined  # /unmatched and /find
    assert "Usage: /find" in joined
    # an admin in a private chat
    rig.agent_command(None, "stats", private=True, user_id=42)
    await rig.settle()
    assert rig.gw.private[42] and "Conversations:" in rig.gw.private[42][0]


async def test_non_agent_private_command_gets_nothing(rig: Rig) -> None:
    rig.agent_command(None, "stats", private=True, user_id=5555)
    rig.agent_command(None, "transcript", "1", private=True, user_id=5555)
    await rig.settle()
    assert 5555 not in rig.gw.private and 5555 not in rig.gw.users


async def test_restart_continues_without_repeats(agent_knowledge: Knowledge, db_target: str | Path) -> None:
    gw = MemoryGateway()
    opts = DeskOptions(digest_threshold=4)
    runtime, agents = await open_agents(
        agent_knowledge,
        db_target,
        gw,
        options=opts,
        clock=ManualClock(),
        limiter=GroupLimiter(10_000, 1.0, spread=False),
    )
    engine = runtime.engine
    desk = agents.desk
    assert desk is not None
    await engine.handle(Inbound("tg:50", EventKind.TEXT, text="my icloud backup failed", user_name="R"))
    await desk.settle(10, full=True)
    await runtime.stop()
    await engine.handle(Inbound("tg:50", EventKind.TEXT, text="while it was down", user_name="R"))
    await runtime.start(Ports(agents_group=gw))  # a new desk, from what the first one stored
    desk = agents.desk
    assert desk is not None
    await desk.settle(10, full=True)
    t = desk.topic_of("tg:50")
    assert t is not None
    text = gw.topic_text(t.thread_id)
    assert text.count("👤 my icloud backup failed") == 1 and text.count("👤 while it was down") == 1
    assert len([n for n in gw.topics.values() if n.startswith("R ·")]) == 1
    await runtime.close()


async def test_busy_times_offer_open_and_open_brings_the_topic(
    agent_knowledge: Knowledge, db_target: str | Path
) -> None:
    import asyncio

    from bot.agents.ports import ScaledClock

    fast = ScaledClock(300.0)
    gw = MemoryGateway(clock=fast, limit=20, window=60.0)
    runtime, agents = await open_agents(
        agent_knowledge,
        db_target,
        gw,
        clock=ManualClock(),
        limiter=GroupLimiter(20, 60.0, clock=fast),
        options=DeskOptions(digest_threshold=2),
    )
    engine, desk = runtime.engine, agents.desk
    assert desk is not None
    try:

        async def user(i: int) -> None:
            await engine.handle(
                Inbound(f"tg:{300 + i}", EventKind.TEXT, text="my icloud backup failed", user_name=f"B{i}")
            )

        await asyncio.gather(*(user(i) for i in range(8)))
        await engine.handle(Inbound("tg:399", EventKind.TEXT, text="I want to talk to a person", user_name="Pat"))
        await asyncio.gather(*(user(i) for i in range(8)))
        await desk.settle(30)
        t = desk.topic_of("tg:399")
        assert t is not None
        esc = next(th for th, n in gw.topics.items() if n == "🚩 Escalations")
        listing = gw.topic_text(esc)
        assert f"Pat #{t.ref}" in listing
        if t.thread_id is None:  # listed during the rush: /open_N instead of a link
            assert f"/open_{t.ref}" in listing
        desk.submit(AgentCommand(GROUP, None, 5, AGENT, "Maria", f"open_{t.ref}", ""))
        await desk.wait_until(
            lambda: (
                t.thread_id is not None
                and t.card_message_id is not None
                and t.topic_cursor >= t.seen_cursor
                and desk.topic_of("tg:399") is not None
            ),
            30,
            "the opened topic",
        )
        await desk.settle(30)
        assert "👤 I want to talk to a person" in gw.topic_text(t.thread_id)
        assert f"Opening the topic of #{t.ref}" in gw.topic_text(None)
        assert gw.refused == 0
        # the quote feature's alerts land in the Escalations topic
        await desk.alert("Quote request Q-1 could not be delivered")
        await desk.settle(30)
        assert "⚠️ Quote request Q-1 could not be delivered" in gw.topic_text(esc)
    finally:
        await runtime.close()


async def test_users_media_is_copied_into_the_topic_or_shown_as_its_line(rig: Rig) -> None:
    await rig.say(21, "my icloud backup failed", name="Uma")
    await rig.settle()
    thread = rig.topic(21).thread_id

    async def sends(kind: str, message_id: int, caption: str = "") -> None:
        rig.desk.submit(UserMedia("tg:21", 21, message_id, kind, time.time()))  # what the Telegram handler does
        media = Inbound("tg:21", EventKind.MEDIA, text=caption, attachments=(Attachment(kind, f"f{message_id}", 10),))
        await rig.engine.handle(media)

    await sends("photo", 501, "this is the error i get every night")
    rig.gw.gone.add((21, 502))  # the user deleted this one before the desk got to it
    await sends("document", 502)
    await rig.settle()
    copies = [m for m in rig.gw.in_topic(thread) if m.kind.startswith("copy:")]
    assert [(m.kind, m.text) for m in copies] == [("copy:21:501", "👤 this is the error i get every night")]
    text = rig.gw.topic_text(thread)
    assert "👤 [document]" in text  # not copied: its line instead, nothing lost
    assert "[photo]" not in text  # the copy stands for its line
    assert (await rig.store.database.fetchone("SELECT COUNT(*) FROM agent_media"))[0] == 0  # nothing left waiting
