"""The topics: one per conversation (``Topic``, stored by the registry), cached in the state by
conversation, thread and number; created in the group and renamed from the conversation's
problem; dropped when a conversation is forgotten; how a case is named in a message (``who``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from ..render import Html, display_name, link, topic_link, topic_name
from ..rows import Topic
from .records import NOT_SYMPTOMS
from .state import DeskState
from .wiring import DeskPorts, Part, Signals

log = logging.getLogger(__name__)


class Topics(Part):
    """The topic cache and each topic's life in the group (the state's ``topics``, ``by_thread``,
    ``by_ref``; a forgotten conversation leaves every queue of the state)."""

    def __init__(self, ports: DeskPorts, st: DeskState, signals: Signals) -> None:
        super().__init__(ports, st, signals)
        self._ensure_lock = asyncio.Lock()

    def cache(self, t: Topic) -> Topic:
        self.st.topics[t.conversation_id] = t
        self.st.by_ref[t.ref] = t.conversation_id
        if t.thread_id is not None:
            self.st.by_thread[t.thread_id] = t.conversation_id
        return t

    async def ensure(self, cid: str) -> Topic:
        t = self.st.topics.get(cid)
        if t is not None:
            return t
        async with self._ensure_lock:
            t = self.st.topics.get(cid)
            if t is not None:
                return t
            t = await self.ports.reg.topic(cid) or await self.ports.reg.create_topic(cid, self.st.start_cursor)
            return self.cache(t)

    def topic_of(self, conversation_id: str) -> Topic | None:
        return self.st.topics.get(conversation_id)

    def drop(self, cid: str) -> None:
        t = self.st.topics.pop(cid, None)
        if t is not None:
            self.st.by_ref.pop(t.ref, None)
            if t.thread_id is not None:
                self.st.by_thread.pop(t.thread_id, None)
        self.st.pending_rows -= len(self.st.pending.pop(cid, ()))
        self.st.card_work.discard(cid)
        self.st.gap.discard(cid)
        self.st.open_now.discard(cid)
        self.st.escalated.discard(cid)
        self.st.media.pop(cid, None)
        self.st.held = {k: v for k, v in self.st.held.items() if k[0] != cid}
        self.st.waiting.pop(cid, None)
        self.st.esc_pending = [r for r in self.st.esc_pending if r.conversation_id != cid]
        for key in [k for k in self.st.flag_times if k[0] == cid]:
            del self.st.flag_times[key]

    # around a deletion (the feature's /forget and our own): nothing of it is posted meanwhile
    def forgetting(self, conversation_id: str, *, by_user: bool = False) -> None:
        t = self.st.topics.get(conversation_id)
        if by_user and t is not None and t.paused_until is not None and self.gateway is not None:
            # the user erased it mid-takeover: the agents learn it (without the user's words)
            gw, note = self.gateway, self.texts("agents.desk.note_user_forgot", ref=str(t.ref))
            self.st.urgent.append(lambda: gw.send(None, note.html))
            self.signals.wake.set()
        self.st.forgotten[conversation_id] = math.inf
        self.drop(conversation_id)

    def forgotten(self, conversation_id: str, upto_id: int) -> None:
        self.st.forgotten[conversation_id] = upto_id
        self.st.erased_at[conversation_id] = time.monotonic()
        self.drop(conversation_id)
        self.st.trash_dirty = True
        self.signals.wake.set()

    def is_watched(self, t: Topic) -> bool:
        return t.paused_until is not None or t.watched_until > self.clock.now()

    def mark_card(self, t: Topic) -> None:
        t.card_dirty = True
        if t.thread_id is not None:
            self.st.card_work.add(t.conversation_id)

    def symptom_of(self, flow: str) -> str:
        f = self.engine.flows.flows.get(flow)
        if f is None or not f.intents or flow in NOT_SYMPTOMS:
            return ""
        return flow

    def symptom_title(self, flow: str) -> str:
        f = self.engine.flows.flows.get(flow)
        if f is None:
            return ""
        try:
            return self.engine.content.raw(f.title)
        except KeyError:
            return flow

    async def ensure_many(self, cids: list[str], symptoms: dict[str, str] | None = None) -> None:
        missing = list(dict.fromkeys(c for c in cids if c not in self.st.topics))
        if not missing:
            return
        async with self._ensure_lock:
            missing = [c for c in missing if c not in self.st.topics]
            if missing:
                for t in await self.ports.reg.create_topics(missing, self.st.start_cursor, symptoms):
                    if t.conversation_id not in self.st.topics:
                        self.cache(t)

    def lost(self, t: Topic) -> None:
        log.info("agents: topic %s of %s is gone; it will be recreated", t.thread_id, t.conversation_id)
        if t.thread_id is not None:
            self.st.by_thread.pop(t.thread_id, None)
        t.thread_id = None
        t.card_message_id = None
        t.card_pinned = False
        t.card_html = ""
        t.card_dirty = True
        self.st.card_work.discard(t.conversation_id)

    def name_for(self, t: Topic) -> str:
        return topic_name(t.user_name, t.ref, self.symptom_title(t.symptom), self.texts)

    async def create(self, t: Topic, urgent: bool) -> None:
        assert self.gateway is not None
        gw = self.gateway
        if not t.user_name:
            state = await self.ports.rstore.load_state(t.conversation_id)
            t.user_name = state.user_name if state else ""
        name = self.name_for(t)
        thread = await self.ports.call(urgent, lambda: gw.create_topic(name))
        t.thread_id = thread
        t.topic_name = name
        t.name_dirty = False
        t.card_message_id = None
        t.card_pinned = False
        t.card_html = ""
        self.st.by_thread[thread] = t.conversation_id
        await self.ports.reg.save(t)
        self.mark_card(t)

    def who(self, t: Topic) -> Html:
        name = f"{display_name(t.user_name, self.texts)} #{t.ref}"
        if t.thread_id is not None and self.chat_id is not None:
            return link(name, topic_link(self.chat_id, t.thread_id))
        return Html.text(f"{name} /open_{t.ref}")
