"""The recorder: turns in (the engine's listener only queues them), NOTE lines and topic
registrations out. Escalation events become ``escalation:<event>`` lines in the transcript
(and queue items), other flags ``flag:<event>`` lines; new conversations are registered
together, changed topics saved together — as few writes as possible (the database is the
users' too). ``note`` is how every part writes a line into a conversation's transcript.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3

from bot.core.engine import TurnRecord
from bot.core.ports import Direction, Entry
from bot.store.database import StoreError

from ..render import Html, flag_label
from ..rows import Topic
from .queue import Queue
from .records import ESCALATIONS, unhtml
from .state import DeskState
from .topics import Topics
from .wiring import DeskPorts, Part, Signals

log = logging.getLogger(__name__)


class Recorder(Part):
    """The recorder task (``run``) and the transcript's NOTE lines (``flag``, ``note``)."""

    def __init__(self, ports: DeskPorts, st: DeskState, signals: Signals, topics: Topics, queue: Queue) -> None:
        super().__init__(ports, st, signals)
        self.topics = topics
        self.queue = queue
        self.inbox: asyncio.Queue[TurnRecord] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            batch = [await self.inbox.get()]
            self.st.busy = True
            # gather what else arrives in the next moment: one pass (and one write) for many
            # turns instead of a wake-up per turn; nothing waits on this but the mirror
            await asyncio.sleep(self.options.record_every)
            while not self.inbox.empty():
                batch.append(self.inbox.get_nowait())
            self.st.busy = True
            try:
                await self.record_batch(batch)
            except Exception:  # the listener's boundary: the next batch must still be recorded
                self.ports.errors += 1
                cids = sorted({r.conversation_id for r in batch})
                log.exception("agents: recording %d turn(s) failed (conversations %s)", len(batch), ", ".join(cids))
            finally:
                self.st.busy = False
            self.signals.new_rows()
            self.signals.tick()

    async def record_batch(self, batch: list[TurnRecord]) -> None:
        """What the mirror needs from a batch of turns, with as few writes as possible (the
        database is the users' too): new conversations registered together, changed topics
        saved together; escalation events become NOTE lines."""
        records = [
            r for r in batch if "forgotten" not in r.events and self.st.forgotten.get(r.conversation_id) != math.inf
        ]
        if self.ports.enabled:
            symptoms = {r.conversation_id: self.topics.symptom_of(r.state.flow) for r in records}
            await self.topics.ensure_many([r.conversation_id for r in records], symptoms)
        for rec in records:
            topic = self.st.topics.get(rec.conversation_id) if self.ports.enabled else None
            if topic is None:
                continue
            if rec.state.user_name and rec.state.user_name != topic.user_name:
                topic.user_name = rec.state.user_name
            symptom = self.topics.symptom_of(rec.state.flow)
            if symptom and symptom != topic.symptom:
                topic.symptom = symptom  # saved with the topic's next save (no write per turn)
                if topic.thread_id is not None:
                    topic.name_dirty = True
            self.topics.mark_card(topic)
        for rec in records:
            events = list(rec.events)
            # "Talk to a person" is the human_agent flow: flagged even if the flow raises nothing
            if rec.state.flow == "human_agent" and "human_requested" not in events:
                events.append("human_requested")
            # data at risk: the topic alone (a drowned phone, deleted photos...) flags the case;
            # an answer that confirms it (no backup, a broken iPhone) makes it an escalation
            if "data_at_risk" in events and not rec.state.values.get("data_at_risk"):
                events[events.index("data_at_risk")] = "risky_topic"
            for ev in events:
                try:
                    await self.flag(rec.conversation_id, self.st.topics.get(rec.conversation_id), ev)
                except (sqlite3.Error, StoreError):
                    self.ports.errors += 1
                    log.exception("agents: flagging %s for %s failed", ev, rec.conversation_id)
            if "paused_message" in events and self.ports.enabled:  # a customer waits for the agent
                await self.queue.customer_waiting(rec.conversation_id)

    async def flag(self, cid: str, topic: Topic | None, event: str) -> None:
        if event in ("paused_message", "forgotten", ""):
            return
        now = self.clock.now()
        await self.queue.open(cid, event)  # a new item once the last one was resolved, even if not listed again
        last = self.st.flag_times.get((cid, event))
        if last is not None and now - last < self.options.repeat_seconds:
            return
        self.st.flag_times[(cid, event)] = now
        kind = f"escalation:{event}" if event in ESCALATIONS else f"flag:{event}"
        await self.store.add_entries(cid, [Entry(Direction.NOTE, flag_label(event, self.texts), kind=kind)])
        self.signals.new_rows(escalation=event in ESCALATIONS)
        if topic is not None:
            topic.add_flag(event)
            if event == "quote_sent":
                topic.quote_state = topic.quote_state or "sent"
            elif event == "quote_failed":
                topic.quote_state = "failed"
            if event in ESCALATIONS:
                topic.escalated_until = now + self.options.watch_seconds
                self.st.escalated.add(cid)
            await self.ports.reg.save(topic)
            self.topics.mark_card(topic)

    async def note(self, cid: str, text: Html | str) -> None:
        plain = text if isinstance(text, str) else unhtml(text)
        await self.store.add_entries(cid, [Entry(Direction.NOTE, plain, kind="note")])
        self.signals.new_rows()
