"""Agents teach the bot from the group: /unmatched shows each waiting message with its
candidate intents and "out of scope" as buttons; one tap stores a learned example, which the
running bot uses at once (bot.learning.LearnedSync)."""

from __future__ import annotations

import copy

from bot.agents.desk import AgentCallback
from bot.learning import LearnedSync
from bot.store.learned import LearnedStore
from tests.support.postgres import both_stores
from tests.test_agents_desk import AGENT, GROUP, Rig, agent_knowledge, rig  # noqa: F401 - fixtures

pytestmark = both_stores  # every test on SQLite and on PostgreSQL (tests/support/postgres.py)

TEXT = "the apple cloud thingy ate my kids pictures when i got the new handset"


async def test_unmatched_offers_buttons_and_a_tap_teaches_the_bot(rig: Rig) -> None:  # noqa: F811
    await rig.say(31, "my icloud backup failed")
    await rig.say(31, TEXT)
    await rig.settle()
    stored = await rig.store.database.fetchall("SELECT id, candidates_json FROM unmatched WHERE text = ?", (TEXT,))
    assert stored, "the matcher was unsure: the message waits for a label"
    rig.agent_command(31, "unmatched")
    await rig.settle()
    offers = [m for m in rig.gw.in_topic(rig.topic(31).thread_id) if m.buttons and TEXT in m.text]
    assert len(offers) == 1
    buttons = offers[0].buttons
    assert buttons[-1] == ("Out of scope", f"lbl:{stored[0][0]}:x")
    assert all(len(data.encode()) <= 64 for _, data in buttons)
    label, data = buttons[0]  # the best candidate
    rig.desk.submit(AgentCallback("cb9", GROUP, offers[0].message_id, rig.topic(31).thread_id, AGENT, "Maria", data))
    await rig.settle()
    rows = await LearnedStore(rig.store).since(0)
    assert [(r.text, r.source) for r in rows] == [(TEXT, "agent:Maria")]
    assert rig.gw.callbacks[-1] == ("cb9", f"Taught: {label}")
    assert "taught by Maria" in rig.gw.group[offers[0].message_id].text
    # the bot knows it now (the runtime's sync polls; here it is called once — on a copy of the
    # bot's matcher: the knowledge is shared by the module's tests, which must not learn it)
    matcher = copy.deepcopy(rig.engine.matcher)
    await LearnedSync(LearnedStore(rig.store), matcher).refresh()
    r = matcher.match(TEXT)
    assert r.decision == "accept" and r.intent == rows[0].intent
    # a labelled message is not offered again; a stale press gets an answer, not an error
    rig.agent_command(31, "unmatched")
    await rig.settle()
    # (the labelled message lost its buttons when it was marked taught; no new offer for it)
    assert [m for m in rig.gw.in_topic(rig.topic(31).thread_id) if m.buttons and TEXT in m.text] == []
    rig.desk.submit(AgentCallback("cb10", GROUP, offers[0].message_id, rig.topic(31).thread_id, AGENT, "Maria",
                                  "lbl:999999:0"))
    await rig.settle()
    assert rig.gw.callbacks[-1] == ("cb10", "That message is no longer there.")


async def test_out_of_scope_label(rig: Rig) -> None:  # noqa: F811
    await rig.say(32, "my icloud backup failed")
    await rig.say(32, "qwxz blorp fnord")
    await rig.settle()
    rig.agent_command(32, "unmatched")
    await rig.settle()
    offer = next(m for m in rig.gw.in_topic(rig.topic(32).thread_id) if m.buttons and "qwxz" in m.text)
    rig.desk.submit(AgentCallback("cb1", GROUP, offer.message_id, rig.topic(32).thread_id, AGENT, "Maria",
                                  offer.buttons[-1][1]))
    await rig.settle()
    assert [(r.text, r.intent) for r in await LearnedStore(rig.store).since(0)] == [("qwxz blorp fnord", "none")]
